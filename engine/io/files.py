"""Small I/O helpers used at the edges: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.io.scratch import alive


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def user_cache() -> Path:
    """This project's folder in the user's cache (XDG_CACHE_HOME, else ~/.cache): logs, verified hashes, weights."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "face-attribute-transfer"


def file_stamp(path: Path) -> list[int]:
    """What changes whenever a file is written or replaced: device, inode, size, modification and change times
    (no user can set a ctime back)."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


RACY_NS = 2_000_000_000  # a file modified this recently may change again within the same clock tick


def verified_sha256(path: Path) -> str:
    """sha256_file for a large file that rarely changes (a 580 MB model: 0.5 s), remembered against its
    file_stamp in a JSON file in user_cache(): a changed file is hashed again (git's index makes the same bet).
    Like git, a file modified in the last 2 s is not remembered (a second write in the same clock tick could
    leave its stamp as it was), nor one that changed while it was read."""
    path = Path(path).resolve()
    memory_file = user_cache() / "verified-sha256.json"
    try:
        if os.stat(memory_file, follow_symlinks=False).st_uid != os.getuid():
            raise PermissionError  # planted by another user of a shared cache folder: not ours to believe
        memory = json.loads(memory_file.read_text())
        if not isinstance(memory, dict):
            memory = {}
    except (OSError, ValueError):
        memory = {}
    stamp = file_stamp(path)
    known = memory.get(str(path))
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = sha256_file(path)
    if file_stamp(path) != stamp or time.time_ns() - stamp[3] < RACY_NS:
        return digest
    memory[str(path)] = {"stamp": stamp, "sha256": digest}
    memory = {k: v for k, v in memory.items() if os.path.exists(k)}  # forget files that are gone
    with contextlib.suppress(OSError):  # a read-only or full cache: hashed every time
        atomic_write_json(memory_file, memory)
    return digest


def remove_stale_parts(path: Path) -> None:
    """Hidden temp files that a killed writer (kill -9) left beside `path`: their process is gone."""
    for part in Path(path).parent.glob(f".{Path(path).name}.*.part*"):
        pid = part.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            part.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temp file beside `path`, then rename it into place.

    A crash or error never leaves a half-written output, and an existing file
    at `path` is replaced only once the new one is complete. The temp file's name
    carries the writer's pid, so one left by a kill -9 is removed by the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n"))
