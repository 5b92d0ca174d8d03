"""Put a new backbone pair (ONNX + spec) in place so that the engine never sees a broken one.

The engine loads a backbone through its spec, which names the ONNX file and its
sha256. An export writes and verifies both in a hidden staging folder beside the
output (same file system, so moves are atomic renames), then commits them:

1. if the current spec names the ONNX about to be replaced, hard-link that ONNX to a
   hidden name beside it and atomically repoint the current spec at the link (same
   bytes, same hash);
2. move the new ONNX to its final name (the current spec no longer names it);
3. move the new spec to its final name (it names the new ONNX, hash included);
4. remove the link.

After every step the spec names an ONNX whose sha256 matches, so a kill -9 at any
moment leaves a usable backbone; SIGINT/SIGTERM are held back during these renames.
Hidden files and folders left by a killed export (`.<onnx name>.export-<pid>-...`) are
removed by the next export, except a link that the current spec still names.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.io import scratch

PREVIOUS = "previous"


def spec_path_for(onnx_path: Path) -> Path:
    return Path(onnx_path).with_suffix(".json")


def staging_prefix(out: Path) -> str:
    return f".{Path(out).name}.export-"


def named_onnx(spec_path: Path) -> Path | None:
    """The ONNX file the spec at `spec_path` names, or None when there is no readable spec."""
    try:
        name = json.loads(Path(spec_path).read_text())["onnx"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(spec_path).parent / name if isinstance(name, str) and name else None


def write_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver them to the usual handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    old = {s: signal.getsignal(s) for s in signums}
    for s in signums:
        signal.signal(s, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in received:
            signal.raise_signal(s)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out` for the new pair; removed however the block ends."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep(out)
    stage = scratch.make_dir(staging_prefix(out), out.parent)
    try:
        yield stage
    finally:
        scratch.remove(stage)


def sweep(out: Path) -> list[Path]:
    """Remove staging folders of exports that were killed, except one the current spec names."""
    out = Path(out).absolute()
    return scratch.sweep(out.parent, staging_prefix(out), keep=named_onnx(spec_path_for(out)))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _keep_previous(out: Path, spec_path: Path, stage: Path) -> Path:
    """Step 1: the current spec stops naming `out`, and names a hidden link to the same bytes instead."""
    previous = out.parent / f"{stage.name}.{PREVIOUS}{out.suffix}"
    try:
        os.link(out, previous)
    except OSError:  # a file system without hard links
        shutil.copy2(out, previous)
    spec = json.loads(spec_path.read_text())
    spec["onnx"] = previous.name
    repointed = stage / f"{PREVIOUS}.json"
    write_json(repointed, spec)
    os.replace(repointed, spec_path)
    return previous


def commit(new_onnx: Path, new_spec: Path, out: Path, stage: Path) -> None:
    """Move the verified pair from `stage` to `out` and its spec (see the module docstring)."""
    out = Path(out).absolute()
    spec_path = spec_path_for(out)
    with deferred_signals():
        current = named_onnx(spec_path)
        if current is not None and _same_file(current, out):
            current = _keep_previous(out, spec_path, stage)
        _move(new_onnx, out)
        _move(new_spec, spec_path)
    if current is not None and current.name.startswith(staging_prefix(out)):
        scratch.remove(current)  # the previous backbone's link (this run's, or one a killed run left)
    sweep(out)


def _move(src: Path, dst: Path) -> None:
    """An atomic rename (both paths are in the same folder, so on the same file system)."""
    os.replace(src, dst)
