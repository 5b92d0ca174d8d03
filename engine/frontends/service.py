"""`python -m engine serve [--idle SECONDS] [--socket PATH] [--stop]`: the warm engine for the GIMP plug-in.

A one-shot bridge pays the imports (torch, dlib, ONNX), the model load and the detector load on every try; this
service pays them once and keeps the loaded backbones, so a second try starts optimising at once. It runs each
request through the bridge's own `handle` (engine/frontends/bridge.py), with a cache of loaded models.

- Where: a Unix socket in a private per-user folder (engine/frontends/service_client.py: $XDG_RUNTIME_DIR/
  face-attribute-transfer, else /tmp/face-attribute-transfer-UID; a real folder of this user's, mode 0700,
  or nothing starts), beside its token (.token, 0600), lock (.lock) and log (.log, when the client started it).
- Who: every connection's peer uid is checked (SO_PEERCRED) and another user's is closed and logged; the first
  line must carry the token (defence in depth).
- Also `python -m engine edit` run from a shell (engine/frontends/cli.py hands its argv over when a service
  answers): run here by the same CLI code, in the client's folder, its output streamed back, provided the service's
  engine code and the environment it depends on are the client's (else refused, and the client runs it itself).
- One edit at a time: later requests wait in turn (their clients hear {"event": "accepted", "waiting": N} and a
  "Waiting for another edit to finish" stage), at most MAX_WAITING of them; beyond that, a "busy" error.
- A client that disconnects mid-edit (the plug-in cancelled or killed) cancels its edit; the service goes on.
- One service per socket (a lock file: a second one exits at once with 0 and the clients use the first); it exits
  after --idle seconds without a request (FAT_SERVICE_IDLE, default 600; 0 = never), on SIGTERM/SIGINT/SIGHUP,
  removing its socket and token.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import io
import os
import queue
import secrets
import signal
import socket
import stat
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EXIT_USAGE, FATError, deferred_interrupts, describe_failure
from engine.frontends import service_client as client

DEFAULT_IDLE = 600.0
MAX_WAITING = 4
ADMIT_TIMEOUT = 5.0  # seconds a new connection has to send its first line
SEND_TIMEOUT = 60.0  # a client that reads nothing for this long is taken for gone
MODELS_KEPT = 2  # loaded backbones kept warm (VGG-Face alone holds ~0.5 GB, ~1 GB once its bf16 layers are packed)


def log(message: str) -> None:
    """To the service's own stderr (its log file), also while a command's output is being sent to its client."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} engine service [{os.getpid()}]: {message}", file=sys.__stderr__,
          flush=True)


class ClientStream(io.TextIOBase):
    """sys.stdout / sys.stderr of a command run for a client: what the command's thread writes goes to the client
    as "output" events; other threads (accepting, watching connections) still write to the service's own."""

    encoding = "utf-8"  # the events are UTF-8 JSON; a progress bar may draw with block characters

    def __init__(self, job: Job, name: str, tty: bool) -> None:
        self.job, self.name, self.tty = job, name, tty
        self.owner = threading.get_ident()
        self.own = sys.__stdout__ if name == "stdout" else sys.__stderr__

    def write(self, text: str) -> int:
        if threading.get_ident() != self.owner:
            return self.own.write(text) if self.own is not None else len(text)
        if text:
            self.job.emit({"event": "output", "stream": self.name, "text": text})
        return len(text)

    def isatty(self) -> bool:  # a progress bar draws itself as it would on the client's terminal
        return self.tty

    def writable(self) -> bool:
        return True


class ModelCache:
    """Loaded backbones by (spec file, device), most recent last; an entry whose spec or ONNX file changed on disk
    (a re-export) is loaded again. The cold path is the bridge's own `load_model`."""

    def __init__(self, size: int = MODELS_KEPT) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, str], tuple[tuple, object]] = OrderedDict()

    @staticmethod
    def _stamp(*paths: Path) -> tuple:
        stamps = []
        for p in paths:
            st = os.stat(p)
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def __call__(self, options, stage):
        from engine.frontends.bridge import load_model
        from engine.models.backbone import resolve_path
        from engine.models.runtime import resolve_device

        spec = resolve_path(options.backbone).resolve()
        key = (str(spec), str(resolve_device(options.device)))
        cached = self.entries.get(key)
        if cached is not None:
            try:
                if cached[0] == self._stamp(spec, cached[1].onnx_path):
                    self.entries.move_to_end(key)
                    return cached[1]
            except OSError:
                pass
            del self.entries[key]
        bb = load_model(options, stage)
        self.entries[key] = (self._stamp(spec, bb.onnx_path), bb)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return bb


@dataclass
class Job:
    """One admitted request (a bridge request file, or a CLI command): its connection, its cancel token (set
    when the client goes away)."""

    conn: socket.socket
    request: Path | None
    cancel: object
    command: dict | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)  # its final event is sent
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def label(self) -> str:
        return str(self.request) if self.command is None else "python -m engine " + " ".join(self.command["argv"])

    def emit(self, event: dict) -> None:
        """Send an event; a client that cannot take it is gone, and its edit is cancelled. The final event counts as
        answered before it is sent: the plug-in hangs up as soon as it reads it, which `watch` may see before this
        thread returns from the send (a finished edit was logged as 'went away')."""
        if event.get("event") in client.FINAL:
            self.answered.set()
        try:
            with self.send_lock:
                client.send_line(self.conn, event)
        except OSError:
            self.cancel.cancel()

    def watch(self) -> None:
        """Runs in its own thread: the client sends nothing after its request, so an end of stream (or a reset)
        means it went away: cancel the edit (api.edit checks the token every optimisation step). Once the final event
        is sent, the client closing is the normal end (the plug-in hangs up as soon as it reads it)."""
        while not self.finished.is_set():
            try:
                data = self.conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                break
        if not self.finished.is_set() and not self.answered.is_set():
            log(f"the client of {self.label} went away: cancelling its edit")
            self.cancel.cancel()

    def close(self) -> None:
        self.finished.set()
        for step in (lambda: self.conn.shutdown(socket.SHUT_RDWR), self.conn.close):
            with contextlib.suppress(OSError):
                step()


class Service:
    """The accept thread admits connections (uid, token, version) and queues requests; the main thread runs
    them one at a time and stops after `idle` seconds without one."""

    def __init__(self, listener: socket.socket, token: str, idle: float) -> None:
        self.listener, self.token, self.idle = listener, token, idle
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()
        self.closing = False
        self.busy = False
        self.served = 0
        self.started = time.time()
        self.models = ModelCache()
        self.code = client.code_stamp()  # the engine code this process imported (a command needs the same)

    def serve(self) -> None:
        threading.Thread(target=self.accept_loop, name="accept", daemon=True).start()
        while True:
            try:
                job = self.jobs.get(timeout=self.idle if self.idle > 0 else None)
            except queue.Empty:
                with self.lock:
                    if self.jobs.empty():
                        self.closing = True
                        log(f"idle for {self.idle:g} s: exiting")
                        return
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        from engine.frontends.bridge import handle

        if job.cancel.cancelled:
            log(f"skipped {job.label}: its client went away while waiting")
            job.close()
            return
        with self.lock:
            self.busy = True
        t0 = time.perf_counter()
        log(f"editing {job.label}")
        code = None

        def emit(event: dict) -> None:
            if event.get("event") in client.FINAL:  # counted before the client can hear the end (and ping)
                with self.lock:
                    self.served += 1
            job.emit(event)

        try:
            if job.command is not None:
                code = self.run_command(job.command, job, emit)
            else:
                code = handle(job.request, emit, self.models, job.cancel)
        except SystemExit:
            job.emit({"event": "error", "exit_code": 6, "message": "the engine service was stopped."})
            raise
        finally:
            job.close()
            with self.lock:
                self.busy = False
            gone = " (the client went away)" if job.cancel.cancelled else ""
            log(f"finished {job.label}: exit {code} in {time.perf_counter() - t0:.1f} s{gone}")

    def run_command(self, command: dict, job: Job, emit) -> int:
        """`python -m engine ARGV` for a client: the CLI's own code, in the client's folder and umask, with this
        service's loaded models and the client's cancel; its output streamed to the client, then an "exit" event.
        A SystemExit from a stop signal is not caught here: the service ends (run() tells the client)."""
        from engine.frontends.cli import Session, parser_exit
        from engine.frontends.cli import main as cli_main

        here, umask = os.getcwd(), os.umask(command["umask"])
        try:
            os.chdir(command["cwd"])
            with contextlib.redirect_stdout(ClientStream(job, "stdout", command["tty"])), \
                    contextlib.redirect_stderr(ClientStream(job, "stderr", command["tty"])):
                code = parser_exit(command["argv"])
                if code is None:
                    code = cli_main(command["argv"], Session(lambda o: self.models(o, lambda _t: None), job.cancel))
        except OSError as e:
            code = EXIT_USAGE
            job.emit({"event": "output", "stream": "stderr", "text": f"error: the engine service cannot work in "
                                                                      f"{command['cwd']}: {e.strerror}.\n"})
        finally:
            os.chdir(here)
            os.umask(umask)
        emit({"event": "exit", "exit_code": code})
        return code

    def accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed: the service is stopping
            threading.Thread(target=self.admit, args=(conn,), name="admit", daemon=True).start()

    def admit(self, conn: socket.socket) -> None:
        try:
            if self._admit(conn):
                return
        except (OSError, ValueError, RecursionError) as e:  # a reset, a timeout, a first line that is not JSON
            log(f"dropped a connection: {type(e).__name__}: {str(e)[:200]}")
        conn.close()

    def _admit(self, conn: socket.socket) -> bool:
        """True when the connection became a queued job (which then owns it)."""
        uid = client.peer_uid(conn)
        if uid is not None and uid != os.getuid():
            log(f"refused a connection from uid {uid} (this service is uid {os.getuid()}'s)")
            return False
        conn.settimeout(ADMIT_TIMEOUT)
        first = client.LineReader(conn).read() or {}
        refusal = self._refusal(first)
        if refusal:
            log(f"refused a connection: {refusal}")
            client.send_line(conn, {"event": "refused", "message": refusal})
            return False
        if first.get("ping"):
            client.send_line(conn, {"event": "pong", "pid": os.getpid(), "version": client.VERSION,
                                    "served": self.served, "busy": self.busy,
                                    "up_s": round(time.time() - self.started, 1)})
            return False
        if "command" in first:
            command = self._command(first, client.peer_pid(conn))
            if isinstance(command, str):
                log(f"refused a command: {command}")
                client.send_line(conn, {"event": "refused", "message": command})
                return False
            return self._queue(conn, None, command)
        request = first.get("request")
        if not isinstance(request, str) or not os.path.isabs(request) or "\0" in request:
            client.send_line(conn, {"event": "error", "exit_code": 3,
                                    "message": "bad request from the plug-in: 'request' must be an absolute path."})
            return False
        return self._queue(conn, Path(request))

    def _command(self, first: dict, pid: int | None) -> dict | str:
        """A client's CLI command checked: {"argv", "cwd", "tty", "umask"}, or why it is refused (the client then
        runs it itself): not an edit, another engine code or environment, or a client in a sandbox. A command
        names any file of the user's, so a sandboxed plug-in (Flatpak, another mount namespace), which may send
        bridge requests through the shared folder, may not send commands."""
        if not same_mount_namespace(pid):
            return "commands are taken only from clients outside a sandbox (the same mount namespace)"
        argv, cwd, umask = first.get("command"), first.get("cwd"), first.get("umask")
        if (not isinstance(argv, list) or not all(isinstance(a, str) for a in argv)
                or [a for a in argv if not a.startswith("-")][:1] != ["edit"]):
            return "only `python -m engine edit` commands are served"
        if not isinstance(cwd, str) or not os.path.isabs(cwd) or "\0" in cwd:
            return "'cwd' must be an absolute path"
        if first.get("code") != self.code:
            return "this service runs other engine code (started before an update, or from another folder)"
        if first.get("env") != client.shared_env():
            return "the client's environment (FAT_*, XDG_*_HOME, HOME, TMPDIR, thread and GPU settings) differs"
        if not isinstance(umask, int) or not 0 <= umask <= 0o777:
            return "'umask' must be a file mode mask"
        return {"argv": argv, "cwd": cwd, "tty": bool(first.get("tty")), "umask": umask}

    def _refusal(self, first: dict) -> str | None:
        token = first.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
            return "wrong token"
        if first.get("version") != client.VERSION:
            return f"protocol version {first.get('version')!r}; this service speaks {client.VERSION}"
        return None

    def _queue(self, conn: socket.socket, request: Path | None, command: dict | None = None) -> bool:
        from engine.objective.optimise import CancelToken

        job = Job(conn, request, CancelToken(), command)
        conn.settimeout(SEND_TIMEOUT)
        with self.lock:
            if self.closing:
                client.send_line(conn, {"event": "refused", "message": "the engine service is stopping"})
                return False
            waiting = self.jobs.qsize() + int(self.busy)
            if waiting > MAX_WAITING:
                client.send_line(conn, {"event": "error", "exit_code": EXIT_USAGE,
                                        "message": f"the engine is busy with {waiting} edits; try again later."})
                return False
            job.emit({"event": "accepted", "waiting": waiting})
            if waiting:
                job.emit({"event": "stage", "text": "Waiting for another edit to finish"})
            self.jobs.put(job)
        threading.Thread(target=job.watch, name="watch", daemon=True).start()
        return True


def same_mount_namespace(pid: int | None) -> bool:
    """Whether the process `pid` sees the same files as this one (Linux: /proc/PID/ns/mnt). Where the system has
    no such thing (macOS) there are no Flatpak sandboxes: True. Unknown pid or unreadable namespace on Linux:
    False."""
    own = Path("/proc/self/ns/mnt")
    if not own.exists():
        return True
    if pid is None:
        return False
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(own)
    except OSError:
        return False


def take_lock(path: Path) -> int | None:
    """The service's lock (flock, released by the kernel when the process ends); None if another holds it. The
    file is never removed: removing it would let two services lock two different files."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def write_token(path: Path) -> str:
    """A fresh random token in a new 0600 file, moved into place (a link planted there is replaced, not followed)."""
    token = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(tmp, path)
    return token


def listen(path: Path) -> socket.socket:
    """The listening socket, 0600 from its creation; a socket file left by a dead service is replaced (the lock
    says none is alive), anything else there is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FATError(f"{path} exists and is not a socket; remove it or give another --socket.", EXIT_USAGE)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def idle_seconds(flag: float | None) -> float:
    if flag is not None:
        value = flag
    else:
        text = os.environ.get("FAT_SERVICE_IDLE", "")
        try:
            value = float(text) if text else DEFAULT_IDLE
        except ValueError:
            raise FATError(f"FAT_SERVICE_IDLE={text!r} is not a number of seconds.", EXIT_USAGE) from None
    if not value >= 0:
        raise FATError(f"the idle time must be 0 (never stop) or more seconds, not {value}.", EXIT_USAGE)
    return value


def _stop_on_signals() -> None:
    def stop(signum, _frame):
        log(f"{signal.Signals(signum).name}: stopping")
        raise SystemExit(0)

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def serve(sock_path: Path, idle: float) -> int:
    """Run the service until it has been idle for `idle` seconds (0: until stopped)."""
    if not hasattr(socket, "AF_UNIX"):
        raise FATError("the engine service needs Unix sockets, which this system's Python lacks; the plug-in runs "
                       "the engine once per edit instead.", EXIT_USAGE)
    problem = client.socket_path_problem(sock_path)
    if problem:
        raise FATError(problem, EXIT_USAGE)
    try:
        client.private_folder(sock_path.parent, create=True)
    except client.ServiceError as e:
        raise FATError(str(e), EXIT_USAGE) from None
    lock = take_lock(client.companion(sock_path, ".lock"))
    if lock is None:
        log(f"another engine service already serves {sock_path}; exiting")
        return 0
    listener = None
    token_path = client.companion(sock_path, ".token")
    try:
        _stop_on_signals()
        t0 = time.perf_counter()
        with deferred_interrupts():
            import engine.api  # noqa: F401  (torch, dlib, ONNX Runtime: once, here)
        token = write_token(token_path)
        listener = listen(sock_path)
        log(f"ready in {time.perf_counter() - t0:.1f} s on {sock_path}; "
            + (f"exits after {idle:g} s idle" if idle > 0 else "runs until stopped"))
        Service(listener, token, idle).serve()
        return 0
    finally:
        if listener is not None:
            listener.close()
            _remove(sock_path)
        _remove(token_path)
        os.close(lock)


def stop(sock_path: Path) -> int:
    """Ask the running service to stop (SIGTERM to the pid it reports; it finishes by removing its socket)."""
    try:
        pong = client.ping(sock_path)
    except client.ServiceError as e:
        print(f"no engine service to stop: {e}", file=sys.stderr)
        return 0
    os.kill(int(pong["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + 30
    while os.path.exists(sock_path) and time.monotonic() < deadline:  # it removes its socket last
        time.sleep(0.1)
    print(f"stopped the engine service (pid {pong['pid']})", file=sys.stderr)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    from engine.frontends.cli import Parser

    p = Parser(prog="python -m engine serve",
               description="The warm engine for the GIMP plug-in: loads once, serves edits over a private socket.")
    p.add_argument("--idle", type=float, default=None,
                   help=f"exit after this many seconds without a request (0: never; default $FAT_SERVICE_IDLE or "
                        f"{DEFAULT_IDLE:g})")
    p.add_argument("--socket", type=Path, default=None,
                   help=f"socket path (default $FAT_SERVICE_SOCKET or {client.socket_path()})")
    p.add_argument("--stop", action="store_true", help="stop the running service and exit")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        sock_path = args.socket or client.socket_path()
        if args.stop:
            return stop(sock_path)
        return serve(sock_path, idle_seconds(args.idle))
    except (Exception, KeyboardInterrupt) as e:
        code, message = describe_failure(e, verbose="--verbose" in argv)
        log(f"error: {message}")
        return code
