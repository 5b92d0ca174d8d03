"""The GIMP bridge's request format, in one place (standard library only).

The plug-in builds requests with `make_request` (it imports this file from the
project folder: GIMP's Python has no numpy or torch, but this needs neither), the
bridge reads them with `parse_request`, and the tests use both. Pixels travel as raw
files (RGBA 8 or 16 bits, or an 8-bit gray selection) in layer coordinates; the
edit options are the names of engine/options.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import EXIT_INPUT, FATError

VERSION = 1
RAW_FORMATS = {"RGBA8": (4, 1), "RGBA16": (4, 2), "Y8": (1, 1)}  # format -> (channels, bytes per value)
MAX_SIDE = 1 << 16


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
    guide: RawImage
    mask: RawImage | None  # the GIMP selection over the layer: picks the face; with region 'selection' the region
    output: Path
    options: dict


def raw_image(path: str, width: int, height: int, fmt: str) -> dict:
    return {"raw": str(path), "width": int(width), "height": int(height), "format": fmt}


def make_request(reference: dict, guide: dict, output: str, options: dict, mask: dict | None = None) -> dict:
    request = {"version": VERSION, "reference": reference, "guide": guide, "output": str(output), "options": options}
    if mask is not None:
        request["mask"] = mask
    return request


def _fail(message: str) -> FATError:
    return FATError(f"bad request from the plug-in: {message}", EXIT_INPUT)


def _raw(data: object, key: str) -> RawImage:
    if not isinstance(data, dict):
        raise _fail(f"{key!r} must be an object with raw, width, height and format.")
    path, width, height, fmt = (data.get(k) for k in ("raw", "width", "height", "format"))
    if not isinstance(path, str) or not path:
        raise _fail(f"{key}.raw must be a file path.")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_SIDE:
            raise _fail(f"{key}.{name} must be a whole number between 1 and {MAX_SIDE}, not {v!r}.")
    if fmt not in RAW_FORMATS:
        raise _fail(f"{key}.format {fmt!r} is not one of {', '.join(RAW_FORMATS)}.")
    return RawImage(Path(path), width, height, fmt)


def parse_request(data: object) -> Request:
    """Structure and types of a request (the pixels and the options are checked where they are read)."""
    if not isinstance(data, dict):
        raise _fail("expected a JSON object.")
    if data.get("version") != VERSION:
        raise _fail(f"version {data.get('version')!r}; this engine speaks version {VERSION} (reinstall the plug-in "
                    "with `python3 install.py`).")
    unknown = sorted(set(data) - {"version", "reference", "guide", "mask", "output", "options"})
    if unknown:
        raise _fail(f"unknown key(s) {', '.join(map(str, unknown))}.")
    output, options = data.get("output"), data.get("options", {})
    if not isinstance(output, str) or not output:
        raise _fail("'output' must be a file path.")
    if not isinstance(options, dict):
        raise _fail("'options' must be an object.")
    mask = _raw(data["mask"], "mask") if data.get("mask") is not None else None
    return Request(_raw(data.get("reference"), "reference"), _raw(data.get("guide"), "guide"), mask, Path(output),
                   options)
