"""The GIMP bridge's request format, in one place (standard library only).

The plug-in builds requests with `make_request` (it imports this file from the
project folder: GIMP's Python has no numpy or torch, but this needs neither), the
bridge reads them with `parse_request`, and the tests use both. Pixels travel as raw
files (RGBA 8 or 16 bits, or an 8-bit gray selection) in layer coordinates; the
edit options are the names of engine/options.py.

The request is trusted no further than its own folder (the plug-in's private temp folder):
- relative paths are relative to the request file's folder;
- `output` must be a file directly in that folder, must not be the request itself nor any
  input raw file, and must not exist yet unless it is a regular file (not a link, folder or pipe);
- raw inputs are read only if they are regular files of exactly width x height x channels x
  bytes-per-value bytes (engine/frontends/bridge.py read_raw), within engine/io/paths.py's size limits;
- `guide` may be left out only for an attribute-bank edit (options.attribute set).
Anything else is refused as a bad request (exit 3) before any work.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EXIT_INPUT, FATError
from engine.io.paths import MAX_SIDE, check_image_size

VERSION = 1
RAW_FORMATS = {"RGBA8": (4, 1), "RGBA16": (4, 2), "Y8": (1, 1)}  # format -> (channels, bytes per value)
KEYS = ("version", "reference", "guide", "mask", "output", "options")


@dataclass(frozen=True)
class RawImage:
    path: Path
    width: int
    height: int
    format: str

    @property
    def channels(self) -> int:
        return RAW_FORMATS[self.format][0]

    @property
    def nbytes(self) -> int:
        channels, size = RAW_FORMATS[self.format]
        return self.width * self.height * channels * size


@dataclass(frozen=True)
class Request:
    reference: RawImage
    guide: RawImage | None  # None: an attribute-bank edit (options["attribute"]), no guide photo
    mask: RawImage | None  # the GIMP selection over the layer: picks the face; with region 'selection' the region
    output: Path
    options: dict


def raw_image(path: str, width: int, height: int, fmt: str) -> dict:
    return {"raw": str(path), "width": int(width), "height": int(height), "format": fmt}


def make_request(reference: dict, guide: dict | None, output: str, options: dict, mask: dict | None = None) -> dict:
    """A request; `guide` None makes an attribute-bank edit, which needs options["attribute"]."""
    _check_guide(guide is not None, options)
    request = {"version": VERSION, "reference": reference, "output": str(output), "options": options}
    if guide is not None:
        request["guide"] = guide
    if mask is not None:
        request["mask"] = mask
    return request


def _fail(message: str) -> FATError:
    return FATError(f"bad request from the plug-in: {message}", EXIT_INPUT)


def _path(value: object, key: str, folder: Path | None) -> Path:
    try:
        if not isinstance(value, str) or not value or "\0" in value:
            raise ValueError
        os.fsencode(value)  # a lone surrogate from JSON names no file
    except ValueError:
        raise _fail(f"{key} must be a file path, not {value!r:.40}.") from None
    path = Path(value)
    return folder / path if folder is not None and not path.is_absolute() else path


def _raw(data: object, key: str, folder: Path | None) -> RawImage:
    if not isinstance(data, dict):
        raise _fail(f"{key!r} must be an object with raw, width, height and format.")
    path, width, height, fmt = (data.get(k) for k in ("raw", "width", "height", "format"))
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_SIDE:
            raise _fail(f"{key}.{name} must be a whole number between 1 and {MAX_SIDE}, not {v!r:.40}.")
    if not isinstance(fmt, str) or fmt not in RAW_FORMATS:
        raise _fail(f"{key}.format {fmt!r:.40} is not one of {', '.join(RAW_FORMATS)}.")
    raw = RawImage(_path(path, f"{key}.raw", folder), width, height, fmt)
    check_image_size(width, height, f"{raw.path} ({key})")
    return raw


def _check_output(output: Path, inputs: list[Path], folder: Path) -> None:
    """The result goes into the request's own folder, as a new file or over a regular file there that is no input."""
    try:
        if output.parent.resolve() != folder.resolve() or output.name in ("", ".", ".."):
            raise _fail(f"'output' {output} must be a file in the request's own folder {folder}.")
        if any(output.resolve() == p.resolve() for p in inputs):
            raise _fail(f"'output' {output} is one of the request's input files; it would be overwritten.")
        st = os.lstat(output)
    except FileNotFoundError:
        return
    except (OSError, ValueError, RuntimeError) as e:
        raise _fail(f"'output' {output} is not a usable path ({e}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(f"'output' {output} exists and is not a regular file (a link, folder or pipe).")


def _check_guide(has_guide: bool, options: object) -> None:
    """No guide image only for an attribute-bank edit (both at once is refused by the edit itself)."""
    attribute = options.get("attribute") if isinstance(options, dict) else None
    if not has_guide and attribute is None:
        raise _fail("'guide' is missing: give a guide image, or an attribute in the options "
                    "(options.attribute, an attribute-bank edit).")


def _version(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value != VERSION:
        raise _fail(f"version {value!r:.40}; this engine speaks version {VERSION} (reinstall the plug-in "
                    "with `python3 install.py`).")


def parse_request(data: object, request_path: Path | None = None) -> Request:
    """Structure and types of a request (the pixels and the options are checked where they are read).
    With `request_path`, relative paths are taken from its folder and the output must stay in that folder."""
    if not isinstance(data, dict):
        raise _fail("expected a JSON object.")
    _version(data.get("version"))
    unknown = sorted(map(str, set(data) - set(KEYS)))
    if unknown:
        raise _fail(f"unknown key(s) {', '.join(unknown)[:200]}.")
    folder = None if request_path is None else Path(request_path).parent
    output, options = _path(data.get("output"), "'output'", folder), data.get("options", {})
    if not isinstance(options, dict):
        raise _fail("'options' must be an object.")
    _check_guide(data.get("guide") is not None, options)
    mask = _raw(data["mask"], "mask", folder) if data.get("mask") is not None else None
    reference = _raw(data.get("reference"), "reference", folder)
    guide = _raw(data["guide"], "guide", folder) if data.get("guide") is not None else None
    if folder is not None:
        inputs = [Path(request_path), reference.path] + [r.path for r in (guide, mask) if r is not None]
        _check_output(output, inputs, folder)
    return Request(reference, guide, mask, output, options)
