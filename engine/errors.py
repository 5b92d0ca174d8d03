"""The project's one exception type and its documented exit codes.

Every error a user can cause (bad file, no face, wrong option) is raised as
FATError with a message that says what was wrong and what to do; the CLIs turn
it into that message on stderr and the exit code below, never a traceback.
"""

from __future__ import annotations

# Exit codes (documented in README.md).
EXIT_OK = 0
EXIT_USAGE = 2  # bad command-line usage / option values
EXIT_INPUT = 3  # unreadable, corrupt or wrong-shaped input file
EXIT_NO_FACE = 4  # no usable face found / ambiguous face choice
EXIT_BACKBONE = 5  # backbone model missing or failing verification
EXIT_CANCELLED = 6  # cancelled by the user
EXIT_INTERNAL = 70  # a bug: please report


class FATError(Exception):
    """A user-facing error with an exit code (face-attribute-transfer error)."""

    def __init__(self, message: str, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
