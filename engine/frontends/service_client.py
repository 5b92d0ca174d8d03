"""The warm engine service's client and its shared facts (standard library only: GIMP's Python imports this
file from the project folder, as it does engine/options.py and protocol.py).

The service (`python -m engine serve`, engine/frontends/service.py) listens on a Unix socket in a private
per-user folder; this module knows where that is, checks the folder is really private, starts the service when
none answers (`ensure_service`) and runs one request through it (`run_request`).

The protocol: JSON lines over the socket. The client sends one line,
    {"version": 1, "token": "...", "request": "/abs/path/request.json"}   (or "ping": true instead of "request",
    or "command": a `python -m engine edit` argv with "cwd", "env" and "code": see `run_command`)
and reads events until a final one. First comes {"event": "accepted", "waiting": N} (N edits ahead of this one:
the service runs one edit at a time, the others wait in turn), or "refused" (wrong token or version, the service
is stopping: use another way in), or "pong" for a ping; then the bridge's own events,
{"event": "stage"|"progress"|"done"|"error", ...}, "done" or "error" being the last. Closing the socket cancels
the edit. The token is a per-service random string in a 0600 file next to the socket: the
server also checks the peer's uid (SO_PEERCRED), the token is defence in depth.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.project import PROJECT

VERSION = 1
APP = "face-attribute-transfer"
SOCKET_NAME = "engine.sock"
MAX_LINE = 1 << 16  # an event or a request line is a few hundred bytes
MAX_LOG = 1 << 20  # the service log is started afresh past this
FINAL = ("done", "error", "exit")
# what a command run in the service must share with its client, or the client runs it itself: the variables that
# change where the engine finds models, banks and caches (the service's own socket and idle time are its own)
SHARED_ENV_PREFIXES = ("FAT_", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "HOME", "TMPDIR",
                       "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
OWN_ENV = ("FAT_SERVICE_SOCKET", "FAT_SERVICE_IDLE", "FAT_NO_SERVICE")


class ServiceError(Exception):
    """The service could not be used. `reached` False: it was never asked to edit (not running, refused,
    another version), so the caller may fall back to the one-shot bridge; True: it failed during an edit."""

    def __init__(self, message: str, reached: bool = False) -> None:
        super().__init__(message)
        self.reached = reached


def runtime_folder() -> Path:
    """$XDG_RUNTIME_DIR/face-attribute-transfer, else /tmp/face-attribute-transfer-UID."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / APP
    return Path("/tmp") / f"{APP}-{os.getuid()}"


def socket_path() -> Path:
    """The socket: FAT_SERVICE_SOCKET if set, else engine.sock in the runtime folder."""
    custom = os.environ.get("FAT_SERVICE_SOCKET")
    return Path(custom) if custom else runtime_folder() / SOCKET_NAME


def socket_path_problem(sock: Path) -> str | None:
    """Why a socket cannot live at this path (sun_path holds 108 bytes on Linux, 104 on macOS), or None."""
    if len(os.fsencode(str(sock))) >= 104:
        return (f"the socket path {sock} is too long for a Unix socket; give a shorter FAT_SERVICE_SOCKET or "
                "--socket (or a shorter XDG_RUNTIME_DIR).")
    return None


def companion(sock: Path, suffix: str) -> Path:
    """The token (.token), lock (.lock) and log (.log) files beside a socket."""
    return Path(sock).with_suffix(suffix)


def private_folder(folder: Path, create: bool = False) -> Path:
    """`folder` if it is a real folder (no link) of this user's, mode 0700: else another user could replace the
    socket or read the token, so nothing is used."""
    folder = Path(folder)
    if create:
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise ServiceError(f"cannot create the engine service folder {folder}: {e.strerror}.") from None
    try:
        st = os.lstat(folder)
    except OSError as e:
        raise ServiceError(f"the engine service folder {folder} is not usable: {e.strerror}.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ServiceError(f"{folder} is not a folder (a link or a file); the engine service will not use it.")
    if st.st_uid != os.getuid():
        raise ServiceError(f"{folder} belongs to uid {st.st_uid}, not to you; the engine service will not use it.")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ServiceError(f"{folder} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); the engine "
                           f"service needs it private: chmod 700 {folder}")
    return folder


def request_parent() -> str | None:
    """Where a sandboxed (Flatpak) plug-in should make its request folders: the service folder, which the sandbox
    shares with the host, so that a service running on the host can read them. None outside a sandbox (the
    system's temp folder is fine there, and the runtime folder is a small RAM disk)."""
    if not os.path.exists("/.flatpak-info"):
        return None
    try:
        return str(private_folder(socket_path().parent, create=True))
    except ServiceError:
        return None


def read_token(sock: Path) -> str:
    """The service's token: a regular 0600 file of this user's (opened without following a link)."""
    path = companion(sock, ".token")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise ServiceError(f"no engine service token at {path} ({e.strerror}).") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
            raise ServiceError(f"the engine service token {path} is not a private file of yours; not used.")
        return f.read(256).decode("ascii", "replace").strip()


def _linux_peer(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) at the other end of a Unix socket (Linux SO_PEERCRED); None elsewhere."""
    import struct

    if not hasattr(socket, "SO_PEERCRED"):
        return None
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))


def peer_pid(sock: socket.socket) -> int | None:
    """The pid at the other end of a Unix socket (Linux); None elsewhere."""
    peer = _linux_peer(sock)
    return None if peer is None else peer[0]


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux SO_PEERCRED, BSD/macOS LOCAL_PEERCRED);
    None where the system cannot tell."""
    import struct

    peer = _linux_peer(sock)
    if peer is not None:
        return peer[1]
    if hasattr(socket, "LOCAL_PEERCRED"):  # struct xucred: u_int version, uid_t uid, short ngroups, ...
        data = sock.getsockopt(0, socket.LOCAL_PEERCRED, struct.calcsize("2I") + 2 + 16 * 4)
        return struct.unpack_from("2I", data)[1]
    return None


def send_line(sock: socket.socket, message: dict) -> None:
    sock.sendall(json.dumps(message).encode("utf-8") + b"\n")


class LineReader:
    """JSON lines from a socket; a timeout leaves what was read so far for the next call."""

    def __init__(self, sock: socket.socket, limit: int = MAX_LINE) -> None:
        self.sock, self.limit, self.buffer = sock, limit, b""

    def read(self) -> dict | None:
        """The next message; None at the end of the stream. Raises socket.timeout (TimeoutError) when the socket
        has a timeout and nothing came, ValueError for a line that is not a JSON object."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > self.limit:
                raise ValueError("a line over the size limit")
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line.decode("utf-8"))
        if not isinstance(message, dict):
            raise ValueError("a line that is not a JSON object")
        return message


def connect(sock_path: Path | None = None, timeout: float = 5.0) -> tuple[socket.socket, str]:
    """A connection to a service of this user's, and the token to send; ServiceError when there is none."""
    sock_path = Path(sock_path or socket_path())
    if not hasattr(socket, "AF_UNIX"):
        raise ServiceError("this Python has no Unix sockets; the engine service is not available here.")
    private_folder(sock_path.parent)
    token = read_token(sock_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(sock_path))
        uid = peer_uid(sock)
    except OSError as e:
        sock.close()
        raise ServiceError(f"no engine service answers at {sock_path} ({e.strerror or e}).") from None
    if uid is not None and uid != os.getuid():
        sock.close()
        raise ServiceError(f"the socket {sock_path} is served by uid {uid}, not by you; not used.")
    return sock, token


def _first_reply(sock: socket.socket, message: dict) -> tuple[LineReader, dict | None]:
    send_line(sock, {"version": VERSION, **message})
    reader = LineReader(sock)
    return reader, reader.read()


def ping(sock_path: Path | None = None, timeout: float = 5.0) -> dict:
    """The running service's {"event": "pong", "pid", "version", ...}; ServiceError when none answers."""
    sock, token = connect(sock_path, timeout)
    try:
        _, reply = _first_reply(sock, {"token": token, "ping": True})
    except (OSError, ValueError) as e:
        raise ServiceError(f"the engine service did not answer a ping ({e}).") from None
    finally:
        sock.close()
    if not reply or reply.get("event") != "pong":
        raise ServiceError(f"the engine service refused: {(reply or {}).get('message', 'no answer')}")
    return reply


def start_service(python: str, project: str, sock_path: Path | None = None) -> subprocess.Popen:
    """`python -m engine serve` detached from the caller (its own session; output to the log file beside the
    socket), so that it outlives a GIMP plug-in run."""
    sock_path = Path(sock_path or socket_path())
    problem = socket_path_problem(sock_path)
    if problem:
        raise ServiceError(problem)
    private_folder(sock_path.parent, create=True)
    log = companion(sock_path, ".log")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(log, flags, 0o600)
    try:
        if os.fstat(fd).st_size > MAX_LOG:
            os.ftruncate(fd, 0)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        return subprocess.Popen([python, "-m", "engine", "serve", "--socket", str(sock_path)], cwd=project,
                                env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                close_fds=True)
    finally:
        os.close(fd)


def log_tail(sock_path: Path | None = None, lines: int = 3) -> str:
    try:
        text = companion(Path(sock_path or socket_path()), ".log").read_text(errors="replace")
    except OSError:
        return ""
    return " ".join(line.strip() for line in text.splitlines()[-lines:])


def ensure_service(python: str, project: str, timeout: float = 120.0, sock_path: Path | None = None) -> dict:
    """The running service's pong, starting one if none answers. A second service started at the same time exits
    at once (one per user: a lock file), and this waits for the first."""
    try:
        return ping(sock_path)
    except ServiceError:
        pass
    proc = start_service(python, project, sock_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return ping(sock_path)
        except ServiceError:
            pass
        code = proc.poll()
        if code not in (None, 0):
            raise ServiceError(f"the engine service did not start (exit {code}): {log_tail(sock_path)}")
        time.sleep(0.1)
    raise ServiceError(f"the engine service did not answer within {timeout:.0f} s: {log_tail(sock_path)}")


def shared_env(environ: dict | None = None) -> dict[str, str]:
    """The environment a command's result depends on (SHARED_ENV_PREFIXES)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(SHARED_ENV_PREFIXES) and k not in OWN_ENV}


def code_stamp(project: Path | None = None) -> str:
    """Which engine this is: the Python environment (sys.prefix: the venv, so the same torch), the project folder
    and every engine/*.py file's size and modification time. A service started before the code changed, or from
    another environment, serves no command (its client runs it itself)."""
    import hashlib

    project = Path(project or PROJECT)
    h = hashlib.sha256(f"{sys.prefix}|{project}".encode())
    for path in sorted((project / "engine").rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(project)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def run_command(argv: list[str], on_event: Callable[[dict], None], cancel: Callable[[], bool] | None = None,
                sock_path: Path | None = None) -> dict:
    """Run `python -m engine ARGV` in the service, as if here: the same folder (relative paths), output streamed
    back as {"event": "output", "stream": "stdout"|"stderr", "text": ...}, ending with {"event": "exit",
    "exit_code": N}. Refused (ServiceError, not reached: run it here) when the service's engine code or the
    environment it depends on differs from this process's."""
    umask = os.umask(0o022)
    os.umask(umask)  # read back: the files the service writes for this command get the shell's permissions
    message = {"command": list(argv), "cwd": os.getcwd(), "env": shared_env(), "code": code_stamp(),
               "tty": sys.stderr.isatty(), "umask": umask}
    return _run(message, on_event, cancel, sock_path, must_accept=True)


def run_request(request_path: str, on_event: Callable[[dict], None], cancel: Callable[[], bool] | None = None,
                sock_path: Path | None = None) -> dict:
    """Run one bridge request (engine/frontends/protocol.py) through the service: every event goes to `on_event`;
    returns the final one ("done" or "error"). `cancel()` returning True closes the connection, which cancels the
    edit in the service. ServiceError: not reached (fall back) or lost during the edit (`reached`)."""
    return _run({"request": os.path.abspath(request_path)}, on_event, cancel, sock_path)


def _run(message: dict, on_event: Callable[[dict], None], cancel: Callable[[], bool] | None,
         sock_path: Path | None, must_accept: bool = False) -> dict:
    """`must_accept`: anything but "accepted" as the first answer (an older service that knows no commands,
    a busy one) means not reached, so the caller does the work itself."""
    sock, token = connect(sock_path)
    try:
        try:
            reader, event = _first_reply(sock, {"token": token, **message})
        except (OSError, ValueError) as e:
            raise ServiceError(f"the engine service did not take the request ({e}).") from None
        if event is None or event.get("event") == "refused" or must_accept and event.get("event") != "accepted":
            raise ServiceError(f"the engine service refused: {(event or {}).get('message', 'no answer')}")
        sock.settimeout(0.25)
        while True:
            if event is None:
                raise ServiceError(f"the engine service stopped during the edit: {log_tail(sock_path)}", True)
            on_event(event)
            if event.get("event") in FINAL:
                return event
            event = _next_event(reader, cancel)
    finally:
        sock.close()


def _next_event(reader: LineReader, cancel: Callable[[], bool] | None) -> dict | None:
    while True:
        if cancel is not None and cancel():
            return {"event": "error", "exit_code": 6, "message": "cancelled."}
        try:
            return reader.read()
        except TimeoutError:  # socket.timeout
            continue
        except (OSError, ValueError) as e:
            raise ServiceError(f"the connection to the engine service broke ({e}).", True) from None


if __name__ == "__main__":  # a quick check from a shell: python engine/frontends/service_client.py
    try:
        print(ping())
    except ServiceError as e:
        sys.exit(str(e))
