"""keras-vggface `rcmalli_vggface_tf_vgg16.h5`: Keras HDF5 weights, BGR input.

Conv kernels are H x W x in x out, dense kernels in x out, and fc6's input is a
Flatten of an H x W x C map, so its rows are reordered to torch's C x H x W.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from export.formats.common import RawWeights, as_f32, bad_file


def _layer_weights(root: h5py.Group, layer: str) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            leaf = name.rsplit("/", 1)[-1].split(":")[0]
            if leaf in ("kernel", "bias"):
                found[leaf] = obj[()]

    root[layer].visititems(visit)
    return found


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise bad_file(path, f"not a readable HDF5 file ({e})") from None
    with f:
        root = f.get("model_weights", f)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", [])]
        names = names or list(root.keys())
        arrays: dict[str, np.ndarray] = {}
        for layer in names:
            w = _layer_weights(root, layer)
            if not w:
                continue
            if "kernel" not in w or "bias" not in w:
                raise bad_file(path, f"layer {layer!r} lacks a kernel or bias")
            k, b = w["kernel"], w["bias"]
            if k.ndim == 4:
                k = k.transpose(3, 2, 0, 1)
            elif layer == "fc6" and k.ndim == 2:
                side = 7
                cin = k.shape[0] // (side * side)
                if cin * side * side != k.shape[0]:
                    raise bad_file(path, f"fc6 kernel has {k.shape[0]} inputs, not 7*7*channels")
                k = k.reshape(side, side, cin, k.shape[1]).transpose(3, 2, 0, 1).reshape(k.shape[1], -1)
            elif k.ndim == 2:
                k = k.T
            arrays[f"{layer}.weight"] = as_f32(k)
            arrays[f"{layer}.bias"] = as_f32(b)
    if not arrays:
        raise bad_file(path, "holds no Keras layer weights (no kernel/bias datasets)")
    return RawWeights("keras", [path], arrays, "BGR")
