"""Cheap checks of input and output paths, made before anything expensive runs
(standard library only): an edit that would fail at the very end must fail first.

Also the size limits of any input image (a file's header, a raw bridge buffer, an
array), checked before a single pixel is decoded, and `open_regular`, which opens an
input without ever blocking on a FIFO or a device.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from engine.errors import EXIT_INPUT, EXIT_USAGE, FATError

OUTPUT_TYPES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
# The pictures `--debug-dir` receives (engine/frontends/cli.py write_debug): they may not replace an input either.
DEBUG_FILES = ("reference-overlay.png", "guide-overlay.png", "crops.png", "before-after.png")
# An edit holds several float copies of the photo (12 bytes a pixel each): 100 megapixels is ~1.2 GB a copy.
MAX_PIXELS = 100_000_000
# JPEG's own limit; a longer side is a strip or a decompression bomb, not a photo with a face.
MAX_SIDE = 65_535
MAX_FILE_BYTES = 1 << 30  # an image file is read whole; 100 megapixels of uncompressed 16-bit RGBA is 800 MB
TEMP_NAME_EXTRA = 24  # atomic_write's temp name: "." + name + ".XXXXXXXX.part" + suffix


def check_image_size(width: int, height: int, what: str) -> None:
    """Refuse an image by its announced size, before anything is decoded or allocated."""
    if width < 1 or height < 1:
        raise FATError(f"{what}: the image is empty ({width}x{height} pixels).", EXIT_INPUT)
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise FATError(f"{what}: the image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); the "
                       f"limit is {MAX_PIXELS / 1e6:g} megapixels and {MAX_SIDE} pixels a side. Scale it down first.",
                       EXIT_INPUT)


def open_regular(path: Path, what: str = "input") -> BinaryIO:
    """Open a regular file for reading without ever blocking.

    A FIFO would wait forever for a writer, a device could stream forever: os.stat
    (which never blocks) refuses them first, and the open itself is O_NONBLOCK and
    re-checked with fstat, so a file swapped in between cannot block either.
    """
    path = Path(path)
    try:
        _require_regular(os.stat(path), path, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FATError(f"{path}: no such file ({what}).", EXIT_INPUT) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        raise FATError(f"{path}: cannot open it ({what}): {getattr(e, 'strerror', None) or e}.", EXIT_INPUT) from None
    try:
        _require_regular(os.fstat(fd), path, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _require_regular(st: os.stat_result, path: Path, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FATError(f"{path}: not a regular file ({what}); give a file, not a folder, pipe or device.",
                       EXIT_INPUT)


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


def check_output_path(out: Path, inputs: Sequence[Path | None], sidecar: bool = True) -> None:
    """The output (and its .json sidecar) may not replace an input, and its folder must take a new file."""
    out = Path(out)
    check_output_type(out)
    check_new_files([out, out.with_suffix(".json")] if sidecar else [out], inputs, "choose another -o path")


def check_output_folder(folder: Path, names: Sequence[str], inputs: Sequence[Path | None], what: str,
                        results: Sequence[Path] = ()) -> None:
    """A folder that will receive `names` (created if missing): a folder, writable, replacing no input
    and none of the edit's `results` (written before it)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FATError(f"{what} {folder}: is a file, not a folder; give a folder.", EXIT_USAGE)
    check_new_files([folder / n for n in names], inputs, f"choose another {what}", results)


def check_new_files(written: Sequence[Path], inputs: Sequence[Path | None], fix: str,
                    results: Sequence[Path] = ()) -> None:
    """Each path will be (re)placed by atomic_write: not an input nor a result, not a folder, in a writable
    folder, with a name the file system takes."""
    kept = [(Path(p), "the input") for p in inputs if p is not None] + [(Path(p), "the result") for p in results]
    for w in written:
        try:
            target = w.resolve()
            clash = next((f"{role} {p}" for p, role in kept if p.resolve() == target), None)
        except (OSError, ValueError, RuntimeError) as e:  # a NUL in the name, a symlink loop
            raise FATError(f"{w}: not a usable output path ({e}); {fix}.", EXIT_USAGE) from None
        if clash is not None:
            raise FATError(f"{w}: writing it would overwrite {clash}; {fix}.", EXIT_USAGE)
        if w.is_dir():
            raise FATError(f"{w}: is a folder, not a file; {fix}.", EXIT_USAGE)
        _check_writable_folder(w, fix)


def _check_writable_folder(out: Path, fix: str) -> None:
    parent = out.parent
    while not parent.exists() and parent != parent.parent:  # atomic_write creates missing folders
        parent = parent.parent
    if not parent.is_dir():
        raise FATError(f"{out}: {parent} is not a folder; {fix}.", EXIT_USAGE)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FATError(f"{out}: cannot write into {parent}; check its permissions or {fix}.", EXIT_USAGE)
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(out.name)) + len(os.fsencode(out.suffix)) + TEMP_NAME_EXTRA > name_max:
        raise FATError(f"{out}: the file name is too long for the file system; {fix}.", EXIT_USAGE)
