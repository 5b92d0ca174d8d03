"""MatConvNet `vgg_face.mat`: SimpleNN struct, RGB input, fc layers as convolutions.

Two layouts are published: top-level `layers` + `meta`, or everything inside a
top-level `net` struct. v5 files are read by scipy, v7.3 (HDF5) files by h5py.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from export.formats.common import RawWeights, as_f32, bad_file


def _conv_to_torch(name: str, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim == 2:  # a 1x1 conv saved as 2-D: in x out
        w = w[None, None]
    if w.ndim == 3:  # trailing singleton 'out' dropped by MATLAB
        w = w[..., None]
    w = w.transpose(3, 2, 0, 1)  # H x W x in x out -> out x in x H x W
    if name.startswith("fc"):
        w = w.reshape(w.shape[0], -1)
    return w


def _from_layer_list(layers: list[dict]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for layer in layers:
        if layer.get("type") != "conv":
            continue
        name = layer["name"]
        weights = layer.get("weights")
        if weights is None:
            weights = [layer.get("filters"), layer.get("biases")]
        w, b = weights
        arrays[f"{name}.weight"] = as_f32(_conv_to_torch(name, w))
        arrays[f"{name}.bias"] = as_f32(np.asarray(b).reshape(-1))
    return arrays


def _v5_layers(path: Path) -> tuple[list[dict], dict]:
    m = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    net = m.get("net", None)
    layers = getattr(net, "layers", None) if net is not None else m.get("layers")
    meta = getattr(net, "meta", None) if net is not None else m.get("meta")
    if layers is None:
        raise ValueError("no 'layers' (or 'net.layers') variable")
    out = []
    for lay in np.atleast_1d(layers):
        d = {k: getattr(lay, k) for k in lay._fieldnames}
        if "weights" in d:
            d["weights"] = list(np.atleast_1d(d["weights"]))
        out.append(d)
    notes: dict = {}
    if meta is not None:
        norm = getattr(meta, "normalization", None)
        if norm is not None and hasattr(norm, "averageImage"):
            notes["average_image"] = np.asarray(norm.averageImage, dtype=float).reshape(-1)[:3].tolist()
    return out, notes


def _h5_string(f: h5py.File, ref) -> str:
    data = np.asarray(f[ref] if isinstance(ref, h5py.Reference) else ref)
    return "".join(chr(int(c)) for c in data.reshape(-1))


def _v73_layers(path: Path) -> tuple[list[dict], dict]:
    with h5py.File(path, "r") as f:
        root = f.get("net", f)
        layers_ref = root["layers"]
        out = []
        for ref in np.asarray(layers_ref).reshape(-1):
            lay = f[ref]
            d = {"name": _h5_string(f, lay["name"][()]), "type": _h5_string(f, lay["type"][()])}
            if d["type"] == "conv":
                refs = np.asarray(lay["weights"]).reshape(-1)
                # h5py sees MATLAB's column-major arrays transposed: reverse the axes.
                d["weights"] = [np.asarray(f[r]).T for r in refs]
            out.append(d)
    return out, {}


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    try:
        if h5py.is_hdf5(path):
            layers, notes = _v73_layers(path)
        else:
            layers, notes = _v5_layers(path)
    except (ValueError, KeyError, TypeError, OSError, AttributeError) as e:
        raise bad_file(path, f"not a readable MatConvNet model ({e})") from None
    arrays = _from_layer_list(layers)
    if not arrays:
        raise bad_file(path, "holds no conv layers")
    return RawWeights("matconvnet", [path], arrays, "RGB", notes)
