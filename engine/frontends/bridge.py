"""`python -m engine bridge REQUEST.json`: the GIMP plug-in's way in.

GIMP's own Python has no numpy or torch, so the plug-in hands over raw pixel
files and a JSON request (format: engine/frontends/protocol.py), reads JSON lines
from stdout ({"event": "stage"|"progress"|"done"|"error", ...}) and reads the raw result
back. Everything else is the same `edit()` as the CLI and the API. `handle` is the whole of one request;
the warm service (engine/frontends/service.py) runs the same function with its loaded models.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.errors import EXIT_INPUT, EXIT_USAGE, FATError, deferred_interrupts, describe_failure
from engine.face.regions import REGIONS
from engine.frontends.protocol import RAW_FORMATS, RawImage, Request, parse_request
from engine.io.files import atomic_write
from engine.io.paths import open_regular
from engine.options import EditOptions

DTYPES = {1: np.uint8, 2: np.uint16}
MAX_REQUEST_BYTES = 1 << 20  # a request is a few hundred bytes; anything near this is not from the plug-in


def read_raw(image: RawImage) -> np.ndarray:
    """The pixels of a raw file: a regular file (opened without blocking: a FIFO or a device is refused, never
    waited on) of exactly the announced size."""
    channels, size = RAW_FORMATS[image.format]
    with open_regular(image.path, f"{image.format} pixels") as f:
        actual = os.fstat(f.fileno()).st_size
        if actual != image.nbytes:
            raise FATError(f"{image.path}: holds {actual} bytes, expected {image.nbytes} "
                           f"({image.width}x{image.height} {image.format}).", EXIT_INPUT)
        count = image.nbytes // size
        data = np.fromfile(f, dtype=np.dtype(DTYPES[size]).newbyteorder("="), count=count)
    if data.size != count:  # the file shrank while being read
        raise FATError(f"{image.path}: changed while being read; try again.", EXIT_INPUT)
    shape = (image.height, image.width, channels) if channels > 1 else (image.height, image.width)
    return data.reshape(shape)


def write_raw(path: Path, pixels: np.ndarray) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(np.ascontiguousarray(pixels).tobytes()))


Emit = Callable[[dict], None]
LoadModel = Callable[["EditOptions", Callable[[str], None]], object]


def emit(event: dict) -> None:
    print(json.dumps(event), flush=True)


def read_request(path: Path) -> Request:
    """The request file -> Request; anything malformed (not JSON, too big, too deep, wrong types) is a bad request."""
    path = Path(path)
    with open_regular(path, "bridge request") as f:
        text = f.read(MAX_REQUEST_BYTES + 1)
    if len(text) > MAX_REQUEST_BYTES:
        raise FATError(f"bad request from the plug-in: {path} is over {MAX_REQUEST_BYTES} bytes.", EXIT_INPUT)
    try:
        data = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FATError(f"bad request from the plug-in: {path} is not valid JSON ({str(e)[:200]}).",
                       EXIT_INPUT) from None
    return parse_request(data, path)


def load_model(options: EditOptions, stage: Callable[[str], None]):
    """The request's backbone, its torch network built now (inside the stage that says so, not in the first step).
    The warm service passes its cache instead (engine/frontends/service.py ModelCache)."""
    stage("Loading the model")
    with deferred_interrupts():
        from engine.models.backbone import load_backbone
        from engine.models.runtime import resolve_device

    bb = load_backbone(options.backbone, resolve_device(options.device))
    bb.module  # noqa: B018  (built here, once)
    return bb


def handle(request_path: Path, emit: Emit, model: LoadModel = load_model, cancel=None) -> int:
    """One request, start to end: the one-shot bridge and the warm service both run exactly this. Every outcome
    is an event ("done" or "error"; "stage" and "progress" on the way); returns the exit code."""
    try:
        return _run(Path(request_path), emit, model, cancel)
    except (Exception, KeyboardInterrupt) as e:  # the plug-in must always get a message, never a silent death
        code, message = describe_failure(e, audience="gimp")
        emit({"event": "error", "exit_code": code, "message": message})
        return code


def _run(request_path: Path, emit: Emit, model: LoadModel, cancel) -> int:
    req = read_request(request_path)
    options = EditOptions.from_mapping(req.options, "request options")
    reference = read_raw(req.reference)
    guide = read_raw(req.guide)[..., :3] if req.guide is not None else None  # None: an attribute-bank edit
    mask = read_raw(req.mask) if req.mask is not None else None
    if mask is not None and mask.shape != reference.shape[:2]:
        raise FATError("the selection mask and the layer differ in size.", EXIT_INPUT)
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)  # a selection picks the face inside it...
        options.box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    user_region = REGIONS[options.edit_region].user_mask
    if user_region and options.box is None:
        raise FATError("region 'selection' was chosen but the image has no selection over this layer.", EXIT_INPUT)

    def stage(text: str) -> None:
        emit({"event": "stage", "text": text})

    backbone = model(options, stage)
    from engine.api import edit
    from engine.io.images import to_native

    def progress(p) -> None:
        emit({"event": "progress", "step": p.step, "total": p.total, "elapsed": round(p.elapsed, 3)})

    # ...and, with region 'selection', is the edit mask itself
    result = edit(reference, guide=guide, options=options, mask=mask if user_region else None, backbone=backbone,
                  progress=progress, cancel=cancel, stage=stage)
    write_raw(req.output, to_native(result.photo, result.image))
    emit({"event": "done", "output": str(req.output), "backbone": result.settings["backbone"],
          "descriptor_distance": result.descriptor_distance, **result.remarks()})
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        code = EXIT_USAGE
        emit({"event": "error", "exit_code": code, "message": "usage: python -m engine bridge REQUEST.json"})
        return code
    return handle(Path(argv[0]), emit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
