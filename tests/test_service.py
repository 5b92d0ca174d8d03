"""The warm engine service (`python -m engine serve`): real processes, real sockets, the real dlib backbone.

Each test gets its own short runtime folder (XDG_RUNTIME_DIR), so its service is its own, and stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import EXIT_CANCELLED, EXIT_INPUT, FATError
from engine.frontends import bridge
from engine.frontends import service_client as client
from engine.frontends.protocol import make_request, parse_request, raw_image

PROJECT = Path(__file__).resolve().parents[1]


def _stop(sock: Path) -> None:
    try:
        pid = int(client.ping(sock, timeout=2)["pid"])
    except client.ServiceError:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def runtime(monkeypatch, models_dir):
    """A private runtime folder short enough for a socket path; the service found there is stopped afterwards."""
    base = Path(tempfile.mkdtemp(prefix="fat-rt-", dir="/tmp"))
    os.chmod(base, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("FAT_SERVICE_SOCKET", raising=False)
    monkeypatch.delenv("FAT_SERVICE_IDLE", raising=False)
    monkeypatch.delenv("FAT_NO_SERVICE", raising=False)
    yield base
    _stop(client.socket_path())
    shutil.rmtree(base, ignore_errors=True)


def _log(sock: Path) -> str:
    path = client.companion(sock, ".log")
    return path.read_text() if path.exists() else ""


def _wait_for(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; the log: {_log(client.socket_path())}"
        time.sleep(0.1)


def _request(folder: Path, pair, iterations: int = 2, name: str = "request.json", **options) -> Path:
    """A request as the plug-in writes it: RGBA8 raw files and the engine's own protocol module."""
    folder.mkdir(parents=True, exist_ok=True)
    raws = []
    for key, path in zip(("reference", "guide"), pair, strict=True):
        a = np.asarray(Image.open(path).convert("RGBA"))
        (folder / f"{key}.raw").write_bytes(a.tobytes())
        raws.append(raw_image(str(folder / f"{key}.raw"), a.shape[1], a.shape[0], "RGBA8"))
    opts = {"region": "mouth", "iterations": iterations, "backbone": "dlib-resnet", **options}
    req = make_request(raws[0], raws[1], str(folder / f"{Path(name).stem}.out.raw"), opts)
    (folder / name).write_text(json.dumps(req))
    return folder / name


class Recorder:
    """Events as they come, with the time of each since the request was sent."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[tuple[float, dict]] = []

    def __call__(self, event: dict) -> None:
        self.events.append((time.perf_counter() - self.t0, event))

    def first(self, kind: str) -> float:
        return next(t for t, e in self.events if e["event"] == kind)

    def stages(self) -> list[str]:
        return [e["text"] for _, e in self.events if e["event"] == "stage"]


def _start(runtime) -> tuple[dict, float]:
    t0 = time.perf_counter()
    pong = client.ensure_service(sys.executable, str(PROJECT), timeout=120)
    return pong, time.perf_counter() - t0


def test_the_service_matches_the_bridge_and_a_second_try_is_warm(runtime, small_pair, tmp_path):
    one_shot = _request(tmp_path / "bridge", small_pair)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "engine", "bridge", str(one_shot)], cwd=PROJECT, capture_output=True,
                         text=True, timeout=300)
    bridge_s = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    bridge_events = [json.loads(line) for line in run.stdout.splitlines()]
    assert [e["text"] for e in bridge_events if e["event"] == "stage"] == [
        "Loading the model", "Finding faces", "Optimising", "Pasting back"]

    pong, start_s = _start(runtime)
    first = Recorder()
    served = _request(tmp_path / "service", small_pair)
    final = client.run_request(str(served), first)
    assert final["event"] == "done", final
    assert (tmp_path / "service" / "request.out.raw").read_bytes() == \
        (tmp_path / "bridge" / "request.out.raw").read_bytes()
    assert final["descriptor_distance"] == bridge_events[-1]["descriptor_distance"]
    assert first.stages() == ["Loading the model", "Finding faces", "Optimising", "Pasting back"]

    second = Recorder()
    assert client.run_request(str(_request(tmp_path / "again", small_pair)), second)["event"] == "done"
    print(f"\nservice start {start_s:.2f} s; one-shot bridge {bridge_s:.2f} s in all; time to the first progress "
          f"event: first edit {first.first('progress'):.2f} s, second edit {second.first('progress'):.2f} s")
    assert "Loading the model" not in second.stages()  # the backbone stayed loaded
    assert second.first("progress") < first.first("progress")
    after = client.ping()
    assert after["pid"] == pong["pid"] and after["served"] == 2  # one process served both


def test_the_service_exits_after_its_idle_time_and_removes_its_socket(runtime):
    sock = client.socket_path()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--idle", "2"], cwd=PROJECT,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _answers(sock), 120, "the service")
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        assert oct(client.companion(sock, ".token").stat().st_mode & 0o777) == "0o600"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert not sock.exists() and not client.companion(sock, ".token").exists()
    assert "idle for 2 s: exiting" in proc.stderr.read()


def _answers(sock: Path) -> bool:
    try:
        client.ping(sock, timeout=2)
        return True
    except client.ServiceError:
        return False


def test_a_second_service_exits_and_the_first_keeps_serving(runtime):
    pong, _ = _start(runtime)
    second = subprocess.run([sys.executable, "-m", "engine", "serve"], cwd=PROJECT, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0 and "another engine service already serves" in second.stderr
    assert client.ping()["pid"] == pong["pid"]
    assert client.ensure_service(sys.executable, str(PROJECT))["pid"] == pong["pid"]  # used, not restarted


def test_a_wrong_token_is_refused(runtime, small_pair, tmp_path):
    _start(runtime)
    request = _request(tmp_path, small_pair)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(client.socket_path()))
        client.send_line(s, {"version": client.VERSION, "token": "0" * 64, "request": str(request)})
        assert client.LineReader(s).read() == {"event": "refused", "message": "wrong token"}
    assert "refused a connection: wrong token" in _log(client.socket_path())
    assert not (tmp_path / "request.out.raw").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_is_refused_even_with_the_token(runtime):
    """Even with the folder opened up and the token known, another uid's connection is closed unanswered."""
    _start(runtime)
    sock = client.socket_path()
    token = client.read_token(sock)
    for folder in (runtime, sock.parent):
        os.chmod(folder, 0o711)
    os.chmod(sock, 0o666)
    try:
        pid = os.fork()
        if pid == 0:  # the child: become nobody, connect, send the right token
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(20)
                    s.connect(str(sock))
                    try:
                        client.send_line(s, {"version": client.VERSION, "token": token, "ping": True})
                        reply = s.recv(4096)
                    except OSError:
                        reply = b""
                    code = 0 if reply == b"" else 2
            except BaseException as e:
                print(f"child: {e!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        for folder in (runtime, sock.parent):
            os.chmod(folder, 0o700)
    assert os.waitstatus_to_exitcode(status) == 0  # connected, and closed without a word
    assert "refused a connection from uid 65534" in _log(sock)
    assert client.ping()["event"] == "pong"


def test_a_client_that_goes_away_cancels_its_edit_and_the_next_is_served(runtime, small_pair, tmp_path):
    _start(runtime)
    long = _request(tmp_path / "long", small_pair, iterations=400)
    seen = Recorder()
    final = client.run_request(str(long), seen, cancel=lambda: any(e["event"] == "progress" for _, e in seen.events))
    assert final["exit_code"] == EXIT_CANCELLED  # the client's own answer; the socket is closed
    sock = client.socket_path()
    _wait_for(lambda: f"finished {long}" in _log(sock), 60, "the cancelled edit to end")
    log = _log(sock)
    assert f"the client of {long} went away: cancelling its edit" in log
    assert f"finished {long}: exit {EXIT_CANCELLED}" in log
    assert not (tmp_path / "long" / "request.out.raw").exists()
    assert client.run_request(str(_request(tmp_path / "next", small_pair)), lambda e: None)["event"] == "done"


def test_a_request_while_busy_waits_its_turn(runtime, small_pair, tmp_path):
    _start(runtime)
    import threading

    first = Recorder()
    worker = threading.Thread(target=client.run_request,
                              args=(str(_request(tmp_path / "a", small_pair, iterations=6)), first))
    worker.start()
    _wait_for(lambda: any(e["event"] == "stage" for _, e in first.events), 60, "the first edit to start")
    second = Recorder()
    assert client.run_request(str(_request(tmp_path / "b", small_pair)), second)["event"] == "done"
    worker.join(120)
    assert second.events[0][1] == {"event": "accepted", "waiting": 1}
    assert second.stages()[0] == "Waiting for another edit to finish"
    assert first.events[-1][1]["event"] == "done"


def test_the_folder_must_be_private(runtime, tmp_path):
    folder = runtime / client.APP
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with pytest.raises(client.ServiceError, match="open to other users"):
        client.private_folder(folder)
    run = subprocess.run([sys.executable, "-m", "engine", "serve", "--idle", "1"], cwd=PROJECT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "chmod 700" in run.stderr and not (folder / client.SOCKET_NAME).exists()
    os.rmdir(folder)
    (runtime / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(runtime / "elsewhere")
    with pytest.raises(client.ServiceError, match="not a folder"):
        client.private_folder(folder)
    if os.geteuid() == 0:
        other = tmp_path / "theirs"
        other.mkdir(mode=0o700)
        os.chown(other, 65534, 65534)
        with pytest.raises(client.ServiceError, match="belongs to uid 65534"):
            client.private_folder(other)


def test_the_client_falls_back_when_no_service_can_be_reached(runtime):
    with pytest.raises(client.ServiceError) as caught:
        client.run_request("/nonexistent/request.json", lambda e: None)
    assert not caught.value.reached  # never asked to edit: the plug-in may run the engine once instead


# The request format's attribute mode (no guide photo)

def _raw(tmp_path: Path, name: str = "ref.raw") -> dict:
    (tmp_path / name).write_bytes(bytes(8 * 6 * 4))
    return raw_image(str(tmp_path / name), 8, 6, "RGBA8")


def test_a_request_without_a_guide_needs_an_attribute(tmp_path):
    with pytest.raises(FATError, match="'guide' is missing"):
        make_request(_raw(tmp_path), None, str(tmp_path / "out.raw"), {"region": "mouth"})
    req = make_request(_raw(tmp_path), None, str(tmp_path / "out.raw"), {"attribute": "smiling"})
    assert "guide" not in req
    assert parse_request(req, tmp_path / "request.json").guide is None
    with pytest.raises(FATError, match="'guide' is missing") as caught:
        parse_request({**req, "options": {}}, tmp_path / "request.json")
    assert caught.value.exit_code == EXIT_INPUT


def test_an_attribute_request_reaches_the_attribute_edit(tmp_path, models_dir, monkeypatch):
    """No guide: the bridge's handler runs an attribute-bank edit (here: a missing bank, a clean error)."""
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    req = make_request(_raw(tmp_path), None, str(tmp_path / "out.raw"),
                       {"attribute": "smiling", "backbone": "dlib-resnet", "bank": str(tmp_path / "no-bank.npz")})
    (tmp_path / "request.json").write_text(json.dumps(req))
    events = []
    code = bridge.handle(tmp_path / "request.json", events.append)
    assert events[-1]["event"] == "error" and events[-1]["exit_code"] == code != 70, events[-1]
    assert "no-bank" in events[-1]["message"]


def test_a_socket_path_too_long_is_refused_before_any_work(runtime, monkeypatch):
    long = runtime / ("x" * 60) / ("y" * 40) / "engine.sock"
    monkeypatch.setenv("FAT_SERVICE_SOCKET", str(long))
    with pytest.raises(client.ServiceError, match="too long"):
        client.ensure_service(sys.executable, str(PROJECT))  # nothing started
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "engine", "serve"], cwd=PROJECT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "too long" in run.stderr
    assert time.perf_counter() - t0 < 30 and not long.parent.exists()


def _cli(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(PROJECT)}  # runs from any folder
    return subprocess.run([sys.executable, "-m", "engine", "edit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_shell_edit_goes_through_a_running_service_with_the_same_result(runtime, small_pair, tmp_path):
    """`python -m engine edit` hands its argv to the warm service: same file, same messages, same exit codes;
    relative paths are the shell's folder's (not the service's); --no-service edits in the new process."""
    shell = tmp_path / "shell"
    shell.mkdir()
    for path in small_pair:
        shutil.copy(path, shell / path.name)
    ref, guide = (p.name for p in small_pair)
    pong, _ = _start(runtime)
    sock = client.socket_path()
    args = [ref, "--guide", guide, "--iterations", "6", "--backbone", "dlib-resnet"]
    served = _cli(*args, "-o", "served.png", cwd=shell)
    assert served.returncode == 0, served.stderr
    assert "wrote served.png" in served.stdout and (shell / "served.png").exists()
    assert f"editing python -m engine edit {ref}" in _log(sock)
    here = _cli(*args, "-o", "here.png", "--no-service", cwd=shell)
    assert here.returncode == 0, here.stderr
    assert (shell / "served.png").read_bytes() == (shell / "here.png").read_bytes()
    sides = [json.loads((shell / f"{n}.json").read_text()) for n in ("served", "here")]
    for side in sides:
        del side["timings_s"]
    assert sides[0] == sides[1]  # settings (the reference path as typed), losses, identity distance
    assert client.ping()["served"] == 1  # --no-service did not reach it

    missing = _cli(*args, "-o", "x.png", "--guide", "no/such/guide.jpg", cwd=shell)  # an error, told as here
    assert missing.returncode == EXIT_INPUT and "no/such/guide.jpg" in missing.stderr
    assert client.ping()["served"] == 2 and client.ping()["pid"] == pong["pid"]
    usage = _cli(*args, "-o", "y.png", "--strength", "7", cwd=shell)  # refused before any socket
    assert usage.returncode == 2 and client.ping()["served"] == 2


def test_keep_warm_starts_the_service_for_the_next_commands(runtime, small_pair, tmp_path):
    ref, guide = small_pair
    with pytest.raises(client.ServiceError):
        client.ping()
    args = [str(ref), "--guide", str(guide), "--iterations", "2"]
    first = _cli(*args, "-o", str(tmp_path / "a.png"), "--keep-warm")
    assert first.returncode == 0, first.stderr
    pong = client.ping()  # it started one, edited there, and left it running
    assert pong["served"] == 1 and (tmp_path / "a.png").exists()
    second = _cli(*args, "-o", str(tmp_path / "b.png"))  # a plain command finds it
    assert second.returncode == 0, second.stderr
    assert client.ping()["served"] == 2 and client.ping()["pid"] == pong["pid"]
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_service_that_does_not_take_the_command_leaves_the_edit_to_the_shell(runtime, small_pair, tmp_path):
    """An older service (no commands), a busy one: anything but "accepted" -> the shell edits by itself."""
    import threading

    folder = client.private_folder(client.runtime_folder(), create=True)
    sock_path = folder / client.SOCKET_NAME
    token = client.companion(sock_path, ".token")
    token.write_text("t")
    token.chmod(0o600)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen()
    heard = []

    def old_service() -> None:
        for _ in range(2):  # the ping-less first line of each client, answered as a version-1 service did
            conn, _ = listener.accept()
            heard.append(client.LineReader(conn).read())
            client.send_line(conn, {"event": "error", "exit_code": EXIT_INPUT,
                                    "message": "bad request from the plug-in: 'request' must be an absolute path."})
            conn.close()

    threading.Thread(target=old_service, daemon=True).start()
    ref, guide = small_pair
    try:
        for name in ("a.png", "b.png"):
            done = _cli(str(ref), "--guide", str(guide), "--iterations", "2", "-o", str(tmp_path / name))
            assert done.returncode == 0, done.stderr
            assert (tmp_path / name).exists()
    finally:
        listener.close()
    assert [h["command"][0] for h in heard] == ["edit", "edit"]


def _served_long_edit(ref: Path, guide: Path, out: Path, iterations: int, sock: Path,
                      settle: float) -> subprocess.Popen:
    """A shell edit long enough to interrupt, once the service has taken it and run `settle` seconds of it (every
    evaluation: no stage ends early on a stalled loss; fp32: the small test network's bf16 edit, whose targets share
    its rounding, converges in well under a second, before the interruption)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine", "edit", str(ref), "--guide", str(guide), "--iterations",
                             str(iterations), "--set", "stall=0", "--precision", "fp32", "-o", str(out)], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: "editing python -m engine edit" in _log(sock), 60, "the edit to reach the service")
    time.sleep(settle)
    return proc


def test_a_service_stopped_mid_edit_leaves_the_edit_to_the_shell(runtime, small_pair, tmp_path):
    ref, guide = small_pair
    pong, _ = _start(runtime)
    sock = client.socket_path()
    out = tmp_path / "stopped.png"
    proc = _served_long_edit(ref, guide, out, 200, sock, settle=1.0)
    os.kill(int(pong["pid"]), signal.SIGTERM)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "the engine service was stopped" in err and "Editing here instead" in err
    assert out.exists() and f"wrote {out}" in stdout
    _wait_for(lambda: not sock.exists(), 30, "the service to go")


def test_a_service_with_another_environment_or_code_is_not_used_by_the_shell(runtime, small_pair, tmp_path,
                                                                            models_dir):
    ref, guide = small_pair
    _start(runtime)
    other = tmp_path / "models"
    shutil.copytree(models_dir, other)  # the same models elsewhere: another FAT_MODELS_DIR, so another setting
    env = {**os.environ, "FAT_MODELS_DIR": str(other)}
    done = _cli(str(ref), "--guide", str(guide), "--iterations", "2", "-o", str(tmp_path / "a.png"), env=env)
    assert done.returncode == 0, done.stderr
    assert "refused a command: the client's environment" in _log(client.socket_path())
    assert client.ping()["served"] == 0

    # a command stamped with other engine code (the service started before an update) is refused the same way
    refused = []
    with pytest.raises(client.ServiceError):
        client._run({"command": ["edit", str(ref)], "cwd": str(tmp_path), "env": client.shared_env(),
                     "code": "0" * 64, "tty": False}, refused.append, None, None)
    assert "refused a command: this service runs other engine code" in _log(client.socket_path())


def test_ctrl_c_in_the_shell_cancels_its_edit_in_the_service(runtime, small_pair, tmp_path):
    ref, guide = small_pair
    _start(runtime)
    sock = client.socket_path()
    out = tmp_path / "long.png"
    proc = _served_long_edit(ref, guide, out, 400, sock, settle=1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_CANCELLED and "cancelled" in err
    _wait_for(lambda: "finished python -m engine edit" in _log(sock), 60, "the cancelled edit to end")
    assert "went away: cancelling its edit" in _log(sock)
    assert not out.exists()
    again = _cli(str(ref), "--guide", str(guide), "--iterations", "2", "-o", str(tmp_path / "next.png"))
    assert again.returncode == 0 and client.ping()["served"] == 2


def test_a_client_that_hangs_up_after_the_final_event_has_not_gone_away():
    """The plug-in closes its end as soon as it reads "done": that is the normal end, not a client gone away (the
    service logged "went away: cancelling its edit" after 2 of 4 successful GIMP edits). Hanging up before the final
    event still cancels."""
    import threading

    from engine.frontends.service import Job
    from engine.objective.optimise import CancelToken

    for final in (True, False):
        ours, theirs = socket.socketpair()
        job = Job(ours, None, CancelToken())
        watcher = threading.Thread(target=job.watch)
        watcher.start()
        job.emit({"event": "progress", "step": 1})
        if final:
            job.emit({"event": "done", "output": "x.png"})
        theirs.close()
        watcher.join(timeout=10)
        assert not watcher.is_alive()
        assert job.cancel.cancelled == (not final)
        job.close()


def test_a_client_that_hangs_up_while_the_final_event_is_being_sent_has_not_gone_away(monkeypatch):
    """The race the GIMP trial's log showed: the plug-in reads "done" and hangs up before the service's send has
    returned; `watch` sees the end of stream then, and must already count the job as answered."""
    import threading

    from engine.frontends import service
    from engine.frontends.service import Job
    from engine.objective.optimise import CancelToken

    ours, theirs = socket.socketpair()
    job = Job(ours, None, CancelToken())
    watcher = threading.Thread(target=job.watch)
    send = service.client.send_line

    def send_then_hang_up(conn, event):
        send(conn, event)
        if event.get("event") == "done":  # the client read it and hung up before this send returned
            theirs.close()
            watcher.join(timeout=10)

    monkeypatch.setattr(service.client, "send_line", send_then_hang_up)
    watcher.start()
    job.emit({"event": "done", "output": "x.png"})
    assert not watcher.is_alive() and not job.cancel.cancelled
    job.close()
