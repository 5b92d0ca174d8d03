"""`python -m engine`: a Ctrl-C at any moment is "cancelled", exit 6 (README), never a traceback."""

import os
import sys

import engine

ONE_SHOT = ("edit", "bridge")  # commands after which this process has nothing left to do


def quick_exit(code: int) -> None:
    """End a finished one-shot command without the interpreter's module teardown: with torch loaded, that takes
    ~0.5 s and does nothing a finished command needs (its outputs are written and closed). atexit handlers still
    run and the standard streams are flushed."""
    import atexit
    import contextlib

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach it
            stream.flush()
    os._exit(code)


engine.own_process = True
try:
    from engine.frontends.cli import main

    code = main()
except KeyboardInterrupt:  # before main's own handler is in place
    print("error: cancelled.", file=sys.stderr)
    code = 6
if code == 6:  # an interrupted torch import can leave the interpreter unable to exit with its own status
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(6)
if sys.argv[1:2] and sys.argv[1] in ONE_SHOT and isinstance(code, int):
    quick_exit(code)
sys.exit(code)
