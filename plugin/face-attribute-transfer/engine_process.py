# The engine for the GIMP plug-in: the warm engine service when it can be reached
# (engine/frontends/service_client.py: started on first use, kept for its idle time),
# else a one-shot `python -m engine bridge` subprocess that dies with the plug-in
# (GIMP kills a plug-in whose progress is cancelled; PR_SET_PDEATHSIG then stops the
# engine too; a killed plug-in closes its service connection, which cancels the edit).
# FAT_NO_SERVICE=1 always takes the subprocess. Both stream the same JSON-lines events.
# No GIMP imports here, so this part is tested outside GIMP as well.

import collections
import json
import os
import signal
import subprocess
import sys
import threading

SERVICE_START_TIMEOUT = 120  # seconds: imports and model load on a busy machine


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
                            preexec_fn=die_with_parent if os.name == "posix" else None)  # Windows has no preexec


def run_engine_process(python, project, request_path, on_progress, on_stage=None):
    """Run one bridge request: through the warm engine service, else (it cannot be reached, or FAT_NO_SERVICE=1)
    through `python -m engine bridge REQUEST`. Returns (ok, message, done_event). A running service is used even
    where `python` cannot be run (a Flatpak GIMP reaching a service started on the host)."""
    on_stage = _once_in_a_row(on_stage or (lambda text: None))
    if os.environ.get("FAT_NO_SERVICE") != "1":
        outcome = run_through_service(python, project, request_path, on_progress, on_stage)
        if outcome is not None:
            return outcome
    if not os.path.exists(python):
        return False, (f"The face-attribute-transfer engine was not found at {python}. Run `python3 install.py` in the "
                       "project folder, which also installs this plug-in."), None
    return run_bridge_process(python, project, request_path, on_progress, on_stage)


def _once_in_a_row(on_stage):
    """A stage said again (the service could not start, so the subprocess starts) is shown once."""
    last = []

    def report(text):
        if last != [text]:
            last[:] = [text]
            on_stage(text)

    return report


def _service_client(project):
    """engine/frontends/service_client.py from the project (standard library only, like options.py)."""
    if project not in sys.path:
        sys.path.insert(0, project)
    from engine.frontends import service_client

    return service_client


def _outcome(done, error):
    if done is not None:
        return True, "backbone {}, identity distance {:.3f}".format(done.get("backbone"),
                                                                    done.get("descriptor_distance") or 0), done
    return False, error, None


def run_through_service(python, project, request_path, on_progress, on_stage):
    """(ok, message, done) from the service; None when it cannot be reached (the caller falls back)."""
    try:
        client = _service_client(project)
    except ImportError as e:
        print(f"face-attribute-transfer: no engine service ({e}); running the engine once", file=sys.stderr)
        return None
    events = EventSink(on_progress, on_stage)
    try:
        try:
            client.ping()
        except client.ServiceError:
            if not os.path.exists(python):
                return None
            on_stage("Starting the engine")
            client.ensure_service(python, project, SERVICE_START_TIMEOUT)
        client.run_request(request_path, events)
    except client.ServiceError as e:
        if e.reached:
            return False, str(e)[:1].upper() + str(e)[1:], None  # "The engine service stopped during the edit: ..."
        print(f"face-attribute-transfer: {e}; running the engine once instead", file=sys.stderr)
        return None
    except OSError as e:
        print(f"face-attribute-transfer: engine service: {e}; running the engine once instead", file=sys.stderr)
        return None
    return _outcome(events.done, events.error or "The engine ended without a result.")


class EventSink:
    """The engine's events (service or subprocess, the same JSON objects) -> the plug-in's callbacks."""

    def __init__(self, on_progress, on_stage):
        self.on_progress, self.on_stage = on_progress, on_stage
        self.done, self.error = None, None

    def __call__(self, event):
        kind = event.get("event")
        if kind == "progress":
            self.on_progress(int(event["step"]), max(1, int(event.get("total") or 1)))
        elif kind == "stage":
            self.on_stage(str(event.get("text", "")))
        elif kind == "error":
            self.error = event.get("message")
        elif kind == "done":
            self.done = event


def run_bridge_process(python, project, request_path, on_progress, on_stage):
    """`python -m engine bridge REQUEST` in a subprocess that dies with the plug-in."""
    on_stage("Starting the engine")
    proc = start([python, "-m", "engine", "bridge", request_path], project)
    stderr_tail = collections.deque(maxlen=20)  # drained as it comes: a full pipe would block the engine
    drain = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True)
    drain.start()
    events = EventSink(on_progress, on_stage)
    try:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events(event)
        proc.wait()
    except BaseException:
        proc.kill()
        raise
    if events.done is not None and proc.returncode == 0:
        return _outcome(events.done, None)
    drain.join(timeout=5)
    stderr = [line.strip() for line in stderr_tail if line.strip()]
    return False, events.error or "The engine failed (exit {}): {}".format(proc.returncode, " ".join(stderr[-3:])), None
