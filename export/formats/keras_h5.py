"""keras-vggface `rcmalli_vggface_tf_vgg16.h5`: Keras HDF5 weights, BGR input.

Conv kernels are H x W x in x out, dense kernels in x out, and fc6's input is a
Flatten of an H x W x C map, so its rows are reordered to torch's C x H x W.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from export.formats.common import RawWeights, as_f32, bad_file, parsing
from export.formats.hdf5 import H5_ERRORS, h5_member, h5_read

DAMAGED = "not a readable Keras HDF5 file"


def _layer_weights(root: h5py.Group, layer: str, path: Path) -> dict[str, np.ndarray]:
    datasets: dict[str, h5py.Dataset] = {}

    def visit(name: str | bytes, obj: object) -> None:
        if isinstance(name, bytes):  # h5py gives names that are not UTF-8 as bytes
            name = name.decode("latin-1")
        if isinstance(obj, h5py.Dataset):
            leaf = name.rsplit("/", 1)[-1].split(":")[0]
            if leaf in ("kernel", "bias"):
                datasets[leaf] = obj

    group = h5_member(root, layer, path)
    if isinstance(group, h5py.Group):
        group.visititems(visit)
    return {leaf: h5_read(ds, path) for leaf, ds in datasets.items()}


def _layer_names(root: h5py.Group) -> list[str]:
    names = root.attrs.get("layer_names", [])
    names = [n.decode("latin-1") if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]
    return names or list(root.keys())


def read_layers(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {"kernel": array, "bias": array}} for every layer that has weights."""
    with parsing(path, DAMAGED, H5_ERRORS):
        f = h5py.File(path, "r")
    with f, parsing(path, DAMAGED, H5_ERRORS):
        root = h5_member(f, "model_weights", path) if "model_weights" in f else f
        if not isinstance(root, h5py.Group):
            raise bad_file(path, "model_weights is not a group")
        return {layer: w for layer in _layer_names(root) if (w := _layer_weights(root, layer, path))}


def _to_torch(path: Path, layer: str, k: np.ndarray) -> np.ndarray:
    if k.ndim == 4:
        return k.transpose(3, 2, 0, 1)
    if layer == "fc6" and k.ndim == 2:
        side = 7
        cin = k.shape[0] // (side * side)
        if cin == 0 or cin * side * side != k.shape[0]:
            raise bad_file(path, f"fc6 kernel has {k.shape[0]} inputs, not 7*7*channels")
        return k.reshape(side, side, cin, k.shape[1]).transpose(3, 2, 0, 1).reshape(k.shape[1], -1)
    if k.ndim == 2:
        return k.T
    return k  # canonical.py reports the wrong shape


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    arrays: dict[str, np.ndarray] = {}
    for layer, w in read_layers(path).items():
        if "kernel" not in w or "bias" not in w:
            raise bad_file(path, f"layer {layer!r} lacks a kernel or bias")
        arrays[f"{layer}.weight"] = as_f32(_to_torch(path, layer, w["kernel"]))
        arrays[f"{layer}.bias"] = as_f32(w["bias"])
    if not arrays:
        raise bad_file(path, "holds no Keras layer weights (no kernel/bias datasets)")
    return RawWeights([path], arrays, "BGR")
