"""A model's weights memory-mapped from a torch-format copy in the user cache.

Parsing VGG-Face's 580 MB ONNX protobuf and viewing its initializers takes 1-3 s in every new process;
`torch.load(mmap=True)` of the same tensors takes milliseconds (the pages come from the OS cache as they are
used, and several processes share them). The ONNX file stays the one artifact: the copy is derived from it,
named by its sha256 (and the initializer prefix, a variant such as "bf16" for derived casts, and this module's
FORMAT), written atomically on first use
with a record of its own file stamp, and only the KEEP most recently used copies are kept. A copy whose stamp
changed since (edited, replaced, truncated), that belongs to another user or that does not load is rebuilt;
when the cache cannot be written (read-only, full, over quota) the next process reads the ONNX file again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from engine.io.files import atomic_write, file_stamp, user_cache

KEEP = 5  # copies kept (each as large as its model, a bf16 one half that): VGG-Face fp32, bf16 and its
# transposed fully connected weights, dlib-resnet, one more
FORMAT = 1  # bump when what a copy holds changes
COPY_NAME = re.compile(r"^[0-9a-f]{64}(-.*)?\.pt$")  # also the first releases' SHA256.pt, kept otherwise forever


def cache_folder() -> Path:
    return user_cache() / "weights"


def cached_state(sha256: str, prefix: str, read: Callable[[], dict[str, torch.Tensor]],
                 variant: str = "") -> dict[str, torch.Tensor]:
    """`read()`'s tensors (the initializers under `prefix` of the ONNX file with this sha256; `variant` names a
    derived form of them, e.g. "bf16"): from its cached copy when there is a sound one, else read and copied into
    the cache for the next process."""
    name = "-".join(p for p in (prefix.strip(".") or "all", variant) if p)
    copy = cache_folder() / f"{sha256}-{name}-v{FORMAT}.pt"
    state = _load(copy)
    if state is not None:
        return state
    state = read()
    _store(copy, state)
    return state


def _stamp_file(copy: Path) -> Path:
    return copy.with_suffix(".stamp")


def _load(copy: Path) -> dict[str, torch.Tensor] | None:
    try:
        st = os.stat(copy, follow_symlinks=False)
        sound = (st.st_uid == os.getuid() and copy.is_file() and not copy.is_symlink()
                 and json.loads(_stamp_file(copy).read_text()) == file_stamp(copy))
    except (OSError, ValueError):
        return None
    if sound:
        try:
            state = torch.load(copy, mmap=True, weights_only=True, map_location="cpu")
        except Exception:  # a damaged copy that kept its stamp: rebuilt below
            state = None
        if isinstance(state, dict):
            with contextlib.suppress(OSError):
                os.utime(_stamp_file(copy))  # most recently used: kept longest (the copy's own stamp stays)
            return state
    with contextlib.suppress(OSError):  # stale, foreign or damaged: replaced by _store
        copy.unlink()
    return None


def _store(copy: Path, state: dict[str, torch.Tensor]) -> None:
    size = sum(t.numel() * t.element_size() for t in state.values())
    try:
        copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if shutil.disk_usage(copy.parent).free < 2 * size + (1 << 30):  # leave the disk room to breathe
            return
        atomic_write(copy, lambda tmp: torch.save(state, tmp))
        _stamp_file(copy).write_text(json.dumps(file_stamp(copy)))
        _forget_old(copy.parent)
    except (OSError, RuntimeError):  # torch.save reports a full disk as a RuntimeError
        with contextlib.suppress(OSError):
            copy.unlink()


def _last_used(copy: Path) -> float:
    try:
        return _stamp_file(copy).stat().st_mtime
    except OSError:
        return 0.0


def _forget_old(folder: Path) -> None:
    copies = sorted((p for p in folder.iterdir() if COPY_NAME.match(p.name)), key=_last_used, reverse=True)
    for old in copies[KEEP:]:
        old.unlink(missing_ok=True)
        _stamp_file(old).unlink(missing_ok=True)
