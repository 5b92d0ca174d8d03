"""`python -m engine`: a Ctrl-C at any moment is "cancelled", exit 6 (README), never a traceback."""

import os
import sys

import engine

ONE_SHOT = ("edit", "bridge")  # commands after which this process has nothing left to do


def quick_exit(code: int) -> None:
    """End a finished one-shot command without the interpreter's module teardown: with torch loaded, that takes
    ~0.5 s and does nothing a finished command needs (its outputs are written and closed). atexit handlers still
    run and the standard streams (Python's and C's) are flushed; a closed output pipe is exit 6, as during the
    command (README, exit codes). With a non-daemon thread still running, the interpreter ends as usual."""
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BrokenPipeError:
            code = code or 6
        except (OSError, ValueError):  # closed: nothing more can reach it
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)  # what native libraries printed
    except (OSError, AttributeError):
        pass
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
