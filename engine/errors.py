"""The project's one exception type, its documented exit codes, and the catch-all
that turns a bug into one line and exit 70 instead of a traceback.

Every error a user can cause (bad file, no face, wrong option) is raised as
FATError with a message that says what was wrong and what to do; the CLIs turn
it into that message on stderr and the exit code below, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Exit codes (documented in README.md).
EXIT_USAGE = 2  # bad command-line usage / option values
EXIT_INPUT = 3  # unreadable, corrupt or wrong-shaped input file
EXIT_NO_FACE = 4  # no usable face found / ambiguous face choice
EXIT_BACKBONE = 5  # backbone model missing or failing verification
EXIT_CANCELLED = 6  # cancelled by the user
EXIT_SOME_FAILED = 7  # a batch ran, but some of its images failed (listed in its report)
EXIT_INTERNAL = 70  # a bug: please report


class FATError(Exception):
    """A user-facing error with an exit code (face-attribute-transfer error)."""

    def __init__(self, message: str, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def log_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "face-attribute-transfer" / "logs"


def internal_error_message(exc: BaseException, verbose: bool = False) -> str:
    """One line for an unexpected exception; the traceback goes to stderr with --verbose, else to a log file."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = ""
    if verbose:
        print(text, file=sys.stderr, end="")
    else:
        try:
            folder = log_dir()
            folder.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=time.strftime("internal-error-%Y%m%d-%H%M%S-"), suffix=".log",
                                        dir=folder)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            where = f"; details in {path}"
        except OSError:
            where = "; rerun with --verbose for details"
    first = str(exc).splitlines()[0] if str(exc) else ""
    ask = "the traceback above" if verbose else "that file"
    return (f"internal error ({type(exc).__name__}{': ' + first if first else ''}){where}. "
            f"This is a bug: please report it with {ask}.")


def interrupted(exc: BaseException | None) -> bool:
    """A Ctrl-C, or an error raised while handling one (an extension module's import failing mid-way)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back while C extensions import (torch, onnxruntime): interrupted there they can abort the
    process or fail with unrelated errors; the KeyboardInterrupt is raised once the block is done."""
    fired = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: fired.append(True))
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if fired:
        raise KeyboardInterrupt


def describe_failure(exc: BaseException, verbose: bool = False, audience: str = "cli") -> tuple[int, str]:
    """(exit code, one-line message) for anything a front door catches; `audience` ("cli" or "gimp") says
    whose words the message should use."""
    if isinstance(exc, FATError):
        return exc.exit_code, str(exc)
    if interrupted(exc):
        return EXIT_CANCELLED, "cancelled."
    if isinstance(exc, MemoryError):
        return EXIT_INTERNAL, "out of memory; use a smaller image or fewer iterations."
    return EXIT_INTERNAL, internal_error_message(exc, verbose)
