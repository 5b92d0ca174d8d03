"""`python -m engine`: a Ctrl-C at any moment is "cancelled", exit 6 (README), never a traceback."""

import os
import sys

import engine

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
sys.exit(code)
