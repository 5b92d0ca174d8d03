# The engine subprocess for the GIMP plug-in: start it, stream its JSON-lines
# progress, and make sure it dies with the plug-in (GIMP kills a plug-in whose
# progress is cancelled; PR_SET_PDEATHSIG then stops the engine too).
# No GIMP imports here, so this part is tested outside GIMP as well.

import collections
import json
import os
import signal
import subprocess
import threading


def die_with_parent():
    """In the child, before exec: get SIGTERM when the parent (the plug-in) dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start(command, cwd):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=die_with_parent)


def run_engine_process(python, project, request_path, on_progress):
    """Run `python -m engine bridge REQUEST`; returns (ok, message, done_event)."""
    if not os.path.exists(python):
        return False, (f"The face-attribute-transfer engine was not found at {python}. Run `python3 install.py` in the "
                       "project folder, which also installs this plug-in."), None
    proc = start([python, "-m", "engine", "bridge", request_path], project)
    stderr_tail = collections.deque(maxlen=20)  # drained as it comes: a full pipe would block the engine
    drain = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True)
    drain.start()
    last_error, done = None, None
    try:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "progress":
                on_progress(int(event["step"]), max(1, int(event.get("total") or 1)))
            elif kind == "error":
                last_error = event.get("message")
            elif kind == "done":
                done = event
        proc.wait()
    except BaseException:
        proc.kill()
        raise
    if done is not None and proc.returncode == 0:
        return True, "backbone {}, identity distance {:.3f}".format(done.get("backbone"),
                                                                    done.get("descriptor_distance", 0)), done
    drain.join(timeout=5)
    stderr = [line.strip() for line in stderr_tail if line.strip()]
    return False, last_error or "The engine failed (exit {}): {}".format(proc.returncode, " ".join(stderr[-3:])), None
