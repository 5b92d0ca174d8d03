"""Cheap checks of input and output paths, made before anything expensive runs
(standard library only): an edit that would fail at the very end must fail first."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import EXIT_INPUT, EXIT_USAGE, FATError

OUTPUT_TYPES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def check_readable(path: Path, what: str = "input") -> None:
    path = Path(path)
    if not path.exists():
        raise FATError(f"{path}: no such file ({what}).", EXIT_INPUT)
    if not path.is_file():
        raise FATError(f"{path}: not a regular file ({what}); give an image file.", EXIT_INPUT)
    if not os.access(path, os.R_OK):
        raise FATError(f"{path}: not readable ({what}); check its permissions.", EXIT_INPUT)


def check_output_type(out: Path) -> None:
    if Path(out).suffix.lower() not in OUTPUT_TYPES:
        raise FATError(f"{out}: unsupported output type {Path(out).suffix!r}; use .png, .jpg, .tif or .webp.",
                       EXIT_USAGE)


def check_output_path(out: Path, inputs: list[Path | None], sidecar: bool = True) -> None:
    """The output (and its .json sidecar) may not replace an input, and its folder must take a new file."""
    out = Path(out)
    check_output_type(out)
    written = [out, out.with_suffix(".json")] if sidecar else [out]
    for p in inputs:
        for w in written:
            if p is not None and w.resolve() == Path(p).resolve():
                raise FATError(f"{w}: writing it would overwrite the input {p}; choose another -o path.",
                               EXIT_USAGE)
    if out.is_dir():
        raise FATError(f"{out}: is a folder; give a file name for the result.", EXIT_USAGE)
    parent = out.parent
    while not parent.exists() and parent != parent.parent:  # atomic_write creates missing folders
        parent = parent.parent
    if not parent.is_dir():
        raise FATError(f"{out}: {parent} is not a folder; choose another -o path.", EXIT_USAGE)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FATError(f"{out}: cannot write into {parent}; check its permissions or choose another -o path.",
                       EXIT_USAGE)
