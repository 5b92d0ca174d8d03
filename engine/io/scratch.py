"""Temporary folders named after the process that owns them (an export run, the GIMP plug-in's
request folders), removed on every path, and swept by the next run when a kill -9 (or GIMP's
Cancel) left them behind. Standard library only: GIMP's Python imports it from the project.

A folder is `<prefix><pid>-<random>`; one whose process is gone is stale. Folders of a
live process (a concurrent export) are never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_ELSEWHERE_S = 24 * 3600  # where process ids cannot be checked, folders older than this are stale


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (POSIX only; see stale())."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str, prefix: str) -> int | None:
    head = name[len(prefix):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def stale(entry: Path, prefix: str) -> bool:
    pid = _owner(entry.name, prefix)
    if pid is None:
        return False
    if os.name == "posix":
        return pid != os.getpid() and not alive(pid)
    try:
        return time.time() - entry.stat().st_mtime > STALE_ELSEWHERE_S
    except OSError:
        return False


def remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def sweep(folder: Path, prefix: str, keep: Path | None = None) -> list[Path]:
    """Remove the stale `prefix*` entries in `folder` (but not one holding `keep`); returns them."""
    removed = []
    try:
        entries = [e for e in Path(folder).iterdir() if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if keep is not None and (entry == keep or entry in keep.parents):
            continue
        if stale(entry, prefix):
            remove(entry)
            removed.append(entry)
    return removed


def make_dir(prefix: str, folder: Path | None = None) -> Path:
    """A new private folder `<prefix><pid>-<random>` in `folder` (default: the system temp folder)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=folder))


@contextmanager
def scratch_dir(prefix: str, folder: Path | None = None) -> Iterator[Path]:
    """make_dir() that is removed when the block ends, however it ends (error, Ctrl-C, SIGTERM)."""
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    sweep(folder, prefix)
    path = make_dir(prefix, folder)
    try:
        yield path
    finally:
        remove(path)
