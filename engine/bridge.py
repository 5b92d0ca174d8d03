"""`python -m engine bridge REQUEST.json`: the GIMP plug-in's way in.

GIMP's own Python has no numpy or torch, so the plug-in hands over raw pixel
files (RGBA, 8 or 16 bits, in layer coordinates) and a JSON request, reads JSON
lines from stdout ({"event": "progress"|"done"|"error", ...}) and reads the raw
result back. Everything else is the same `edit()` as the CLI and the API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from engine.errors import EXIT_INPUT, EXIT_INTERNAL, FATError
from engine.fileio import atomic_write

DTYPES = {"RGBA8": np.uint8, "RGBA16": np.uint16, "Y8": np.uint8}
CHANNELS = {"RGBA8": 4, "RGBA16": 4, "Y8": 1}


def read_raw(spec: dict) -> np.ndarray:
    fmt, w, h = spec["format"], int(spec["width"]), int(spec["height"])
    if fmt not in DTYPES:
        raise FATError(f"raw pixel format {fmt!r} is not supported.", EXIT_INPUT)
    data = np.fromfile(spec["raw"], dtype=np.dtype(DTYPES[fmt]).newbyteorder("="))
    c = CHANNELS[fmt]
    if data.size != w * h * c:
        raise FATError(f"{spec['raw']}: holds {data.size} values, expected {w}x{h}x{c}.", EXIT_INPUT)
    return data.reshape(h, w, c) if c > 1 else data.reshape(h, w)


def write_raw(path: Path, pixels: np.ndarray) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(np.ascontiguousarray(pixels).tobytes()))


def emit(event: dict) -> None:
    print(json.dumps(event), flush=True)


def run(request_path: Path) -> int:
    from engine.api import edit
    from engine.imageio import to_native

    req = json.loads(Path(request_path).read_text())
    reference = read_raw(req["reference"])
    guide = read_raw(req["guide"])
    mask = read_raw(req["mask"]) if req.get("mask") else None
    region = req.get("region", "mouth")
    box = None
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)  # a selection picks the face inside it...
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    if region == "selection":  # ...and, as the region, is the edit mask itself
        if box is None:
            raise FATError("region 'selection' was chosen but the image has no selection over this layer.",
                           EXIT_INPUT)
        region = "face"
    else:
        mask = None

    def progress(p) -> None:
        emit({"event": "progress", "step": p.step, "total": p.total, "elapsed": round(p.elapsed, 3)})

    result = edit(reference, guide=guide[..., :3], region=region, strength=float(req.get("strength", 1.0)),
                  iterations=int(req.get("iterations", 60)), init=req.get("init", "composite"),
                  face=req.get("face"), device=req.get("device"), seed=int(req.get("seed", 0)),
                  backbone=req.get("backbone"), mask=mask, box=box, progress=progress)
    write_raw(Path(req["output"]), to_native(result.photo, result.image))
    emit({"event": "done", "output": req["output"], "backbone": result.settings["backbone"],
          "descriptor_distance": result.descriptor_distance})
    return 0


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 1:
            raise FATError("usage: python -m engine bridge REQUEST.json", 2)
        return run(Path(argv[0]))
    except FATError as e:
        emit({"event": "error", "exit_code": e.exit_code, "message": str(e)})
        return e.exit_code
    except (OSError, KeyError, ValueError) as e:
        emit({"event": "error", "exit_code": EXIT_INPUT, "message": f"bad request from the plug-in: {e}"})
        return EXIT_INPUT
    except Exception as e:  # the plug-in must always get a message, never a silent death
        emit({"event": "error", "exit_code": EXIT_INTERNAL, "message": f"internal error: {type(e).__name__}: {e}"})
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
