"""A model's weights memory-mapped from a torch-format copy in the user cache.

Parsing VGG-Face's 580 MB ONNX protobuf and viewing its initializers takes 1-3 s in every new process;
`torch.load(mmap=True)` of the same tensors takes milliseconds (the pages come from the OS cache as they are
used, and several processes share them). The ONNX file stays the one artifact: the copy is derived from it,
named by its sha256, written atomically on first use, and only the KEEP most recently used copies are kept.
Anything wrong with the cache (read-only, full, a damaged copy) falls back to reading the ONNX file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from engine.io.files import atomic_write, user_cache

KEEP = 3  # copies kept (each as large as its model)


def cache_folder() -> Path:
    return user_cache() / "weights"


def cached_state(sha256: str, read: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """`read()`'s tensors, from the cached copy for the file with this sha256 when there is one, else read and
    copied into the cache for the next process."""
    copy = cache_folder() / f"{sha256}.pt"
    if copy.is_file():
        try:
            state = torch.load(copy, mmap=True, weights_only=True, map_location="cpu")
            os.utime(copy)  # most recently used: kept longest
            return state
        except Exception:  # a damaged or foreign copy: replaced below
            copy.unlink(missing_ok=True)
    state = read()
    try:
        atomic_write(copy, lambda tmp: torch.save(state, tmp))
        _forget_old(copy.parent)
    except OSError:  # a read-only or full cache: the next process reads the ONNX file again
        pass
    return state


def _forget_old(folder: Path) -> None:
    copies = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in copies[KEEP:]:
        old.unlink(missing_ok=True)
