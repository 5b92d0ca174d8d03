"""The project's one exception type, its documented exit codes, and the catch-all
that turns a bug into one line and exit 70 instead of a traceback.

Every error a user can cause (bad file, no face, wrong option) is raised as
FATError with a message that says what was wrong and what to do; the CLIs turn
it into that message on stderr and the exit code below, never a traceback.

A message names an edit option through `option_ref` (one source per message):
the command line reads `--detector cnn`, a GIMP user reads `Detector: CNN` (the
dialog's own label and choice label, both from the options schema).
"""

from __future__ import annotations

import os
import re
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


AUDIENCES = ("cli", "gimp", "recipe", "api")
_REF = re.compile("\x1e([a-z_]+)(?:=([^\x1f]*))?\x1f")


def option_ref(name: str, value: object = None) -> str:
    """An edit option (and value) inside a message, worded per audience when the message is shown."""
    return f"\x1e{name}{'' if value is None else '=' + str(value)}\x1f"


# the edit's two images as each audience knows them (image_ref): a GIMP user never meets the word "reference"
IMAGE_WORDS = {"reference": {"cli": "reference photo", "gimp": "selected layer", "recipe": "photo", "api": "reference"},
               "guide": {"cli": "guide photo", "gimp": "guide layer or file", "recipe": "guide photo",
                         "api": "guide"}}


# arguments that are not edit options, as each audience gives them (arg_ref)
ARG_WORDS = {"guide": {"cli": "--guide", "gimp": "Guide", "recipe": "guide", "api": "guide="},
             "mask": {"cli": "--mask", "gimp": "a selection", "recipe": "mask", "api": "mask="}}


def arg_ref(name: str) -> str:
    """A guide or mask argument inside a message, worded per audience when the message is shown."""
    if name not in ARG_WORDS:
        raise ValueError(f"arg_ref: {name!r} is not one of {', '.join(ARG_WORDS)}")
    return f"\x1earg_{name}\x1f"


def image_ref(role: str) -> str:
    """The reference or the guide inside a message, worded per audience when the message is shown."""
    if role not in IMAGE_WORDS:
        raise ValueError(f"image_ref: {role!r} is not one of {', '.join(IMAGE_WORDS)}")
    return f"\x1eimage_{role}\x1f"


def _option_words(name: str, value: str | None, audience: str) -> str:
    """`--flag value` for the command line; `Label: Choice label` for GIMP when the dialog shows the option;
    `name = 'value'` for a batch recipe; `name=value` for the Python API's keywords. An `image_` name is an image_ref
    (no option's name starts so)."""
    from engine.options import schema  # late: engine.options imports this module

    if name.startswith("image_") and name[6:] in IMAGE_WORDS:
        return IMAGE_WORDS[name[6:]][audience]
    if name.startswith("arg_") and name[4:] in ARG_WORDS:
        return ARG_WORDS[name[4:]][audience]
    record = next((o for o in schema() if o["name"] == name), None)
    if record is None:
        raise ValueError(f"option_ref: no option {name!r} in the schema")
    if audience == "gimp" and record["label"]:  # the dialog's words (attribute: Guide = attribute, then Attribute)
        label = re.sub(r"\s*\(.*\)$", "", record["label"].replace("_", ""))  # "Device (CPU or GPU)": Device: CPU
        return label if value is None else f"{label}: {record['labels'].get(value, value)}"
    if audience == "recipe":  # a batch recipe's key (engine/batch/recipe.py): the option's own name
        return name if value is None else f"{name} = {value!r}"
    if audience == "api":  # engine.edit's keyword
        return name if value is None else f"{name}={value}"
    flag = record["flag"] or "--" + name.replace("_", "-")
    return flag if value is None else f"{flag} {value}"


def render(text: str, audience: str = "cli") -> str:
    """A message with its option references worded for `audience` (one of AUDIENCES)."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience {audience!r}: one of {', '.join(AUDIENCES)}")
    return _REF.sub(lambda m: _option_words(m.group(1), m.group(2), audience), text)


class FATError(Exception):
    """A user-facing error with an exit code (face-attribute-transfer error). `message` may hold option
    references (`option_ref`); str() words them for the command line, `for_audience` for another."""

    def __init__(self, message: str, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.audience = "cli"  # how str() words it: engine.edit sets "api" (keywords, not flags)

    def for_audience(self, audience: str) -> str:
        return render(self.message, audience)

    def __str__(self) -> str:
        return render(self.message, self.audience)


def log_dir() -> Path:
    from engine.io.files import user_cache

    return user_cache() / "logs"


def internal_error_message(exc: BaseException, verbose: bool = False, audience: str = "cli") -> str:
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
            where = "; rerun with --verbose for details" if audience == "cli" else "; no log file could be written"
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
    """(exit code, one-line message) for anything a front door catches; `audience` ("cli", "gimp" or "recipe")
    says whose words the message should use."""
    if isinstance(exc, FATError):
        return exc.exit_code, exc.for_audience(audience)
    if interrupted(exc):
        return EXIT_CANCELLED, "cancelled."
    if isinstance(exc, MemoryError):
        return EXIT_INTERNAL, "out of memory; use a smaller image or fewer iterations."
    if isinstance(exc, BrokenPipeError):  # `... --json-progress | head`: the reader went away, as a Ctrl-C would
        return EXIT_CANCELLED, "the output pipe was closed (its reader stopped); stopped."
    return EXIT_INTERNAL, internal_error_message(exc, verbose, audience)
