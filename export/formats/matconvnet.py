"""MatConvNet `vgg_face.mat`: SimpleNN struct, RGB input, fc layers as convolutions.

Two layouts are published: top-level `layers` + `meta`, or everything inside a
top-level `net` struct. v5 files are read by scipy, v7.3 (HDF5) files by h5py.

scipy's v5 reader can segfault on a damaged file, so it runs in a child process
(export/isolate.py) that writes the converted arrays as .npy files into a scratch
folder; the parent loads them and removes the folder on every path.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError, mat_struct

from export.formats.common import RawWeights, as_f32, bad_file, file_size, numeric, parsing
from export.formats.hdf5 import H5_ERRORS, h5_member, h5_read

DAMAGED = "not a readable MatConvNet model"
# What scipy.io.loadmat raises on damaged v5 files (UnboundLocalError and ZeroDivisionError are its bugs).
V5_ERRORS = (MatReadError, ValueError, KeyError, IndexError, TypeError, AttributeError, OSError, EOFError,
             UnboundLocalError, ZeroDivisionError, OverflowError, NotImplementedError, UnicodeDecodeError,
             struct.error, zlib.error, RecursionError, BufferError)
V5_MEMORY = 1 << 30  # the child may use this much plus a few times the file's size


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _conv_to_torch(path: Path, name: str, w: np.ndarray) -> np.ndarray:
    if w.ndim == 2:  # a 1x1 conv saved as 2-D: in x out
        w = w[None, None]
    if w.ndim == 3:  # trailing singleton 'out' dropped by MATLAB
        w = w[..., None]
    if w.ndim != 4:
        raise bad_file(path, f"layer {name!r} has a {w.ndim}-D weight, expected H x W x in x out")
    w = w.transpose(3, 2, 0, 1)  # H x W x in x out -> out x in x H x W
    if name.startswith("fc"):
        w = w.reshape(w.shape[0], -1)
    return w


def _conv_arrays(path: Path, layers: list[dict]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) in torch layout for each conv layer's filters and biases, one layer at a time."""
    for layer in layers:
        if _text(layer.get("type")) != "conv":
            continue
        name = _text(layer.get("name"))
        if not name:
            raise bad_file(path, "a conv layer has no name")
        weights = layer.get("weights")
        if weights is None:
            weights = [layer.get("filters"), layer.get("biases")]
        if len(weights) != 2:
            raise bad_file(path, f"layer {name!r} has {len(weights)} weight arrays, expected filters and biases")
        w, b = (numeric(path, f"layer {name!r} {part}", x) for part, x in zip(("filters", "biases"), weights,
                                                                                strict=True))
        yield f"{name}.weight", as_f32(_conv_to_torch(path, name, w))
        yield f"{name}.bias", as_f32(b.reshape(-1))


# --- v5 (scipy), in a child process --------------------------------------------------------------------

def _v5_layers(path: Path) -> list[dict]:
    with parsing(path, DAMAGED, V5_ERRORS), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about odd headers; the checks below decide
        m = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    net = m.get("net", None)
    layers = getattr(net, "layers", None) if isinstance(net, mat_struct) else m.get("layers")
    if layers is None:
        raise bad_file(path, f"{DAMAGED} (no 'layers' or 'net.layers' variable)")
    out = []
    for lay in np.atleast_1d(layers).reshape(-1):
        if not isinstance(lay, mat_struct):
            raise bad_file(path, f"{DAMAGED} (a layer is a {type(lay).__name__}, not a struct)")
        d = {k: getattr(lay, k, None) for k in lay._fieldnames}
        if "weights" in d:
            d["weights"] = list(np.atleast_1d(d["weights"]).reshape(-1))
        out.append(d)
    return out


def v5_to_npy(path: Path, folder: Path) -> dict:
    """(In the child.) Read a v5 file and save each converted array as folder/<i>.npy."""
    layers = _v5_layers(path)
    names = []
    for name, array in _conv_arrays(path, layers):  # one converted layer in memory at a time
        np.save(folder / f"{len(names)}.npy", array, allow_pickle=False)
        names.append(name)
    return {"names": names}


def _v5_read(path: Path) -> dict[str, np.ndarray]:
    from engine.io.scratch import scratch_dir
    from export.isolate import run_isolated

    size = file_size(path)
    with scratch_dir("fat-export-mat-") as folder:
        result = run_isolated(v5_to_npy, (path, folder), path=path, what="MATLAB v5 reader (scipy)",
                              timeout_s=60 + size / 5e6, memory_bytes=V5_MEMORY + 4 * size)
        arrays = {name: np.load(folder / f"{i}.npy", allow_pickle=False) for i, name in enumerate(result["names"])}
    return arrays


# --- v7.3 (HDF5) ----------------------------------------------------------------------------------------

def _h5_text(f: h5py.File, ds: object, path: Path) -> str:
    """A MATLAB char array (UTF-16 codes), stored in place or behind an object reference."""
    if isinstance(ds, h5py.Dataset) and h5py.check_ref_dtype(ds.dtype) is not None:
        refs = h5_read(ds, path, refs=True).reshape(-1)
        if refs.size != 1:
            raise bad_file(path, f"{DAMAGED} ({ds.name} holds {refs.size} references, expected 1)")
        ds = f[refs[0]]
    codes = h5_read(ds, path).reshape(-1)
    if codes.size > 4096 or codes.dtype.kind not in "iu" or (codes.size and not 0 <= codes.min() <= codes.max()
                                                             <= 0x10FFFF):
        raise bad_file(path, f"{DAMAGED} (a layer name or type is not text)")
    return "".join(chr(int(c)) for c in codes)


def _v73_layers(path: Path) -> list[dict]:
    with parsing(path, DAMAGED, H5_ERRORS), h5py.File(path, "r") as f:
        root = h5_member(f, "net", path) if "net" in f else f
        out = []
        for ref in h5_read(h5_member(root, "layers", path), path, refs=True).reshape(-1):
            lay = f[ref]
            if not isinstance(lay, h5py.Group):
                raise bad_file(path, f"{DAMAGED} (a layer is not a struct)")
            d = {key: _h5_text(f, h5_member(lay, key, path), path) for key in ("name", "type")}
            if d["type"] == "conv":
                refs = h5_read(h5_member(lay, "weights", path), path, refs=True).reshape(-1)
                # h5py sees MATLAB's column-major arrays transposed: reverse the axes.
                d["weights"] = [h5_read(f[r], path).T for r in refs]
            out.append(d)
    return out


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    with parsing(path, DAMAGED, (OSError,)):
        v73 = h5py.is_hdf5(path)
    arrays = dict(_conv_arrays(path, _v73_layers(path))) if v73 else _v5_read(path)
    if not arrays:
        raise bad_file(path, "holds no conv layers")
    return RawWeights([path], arrays, "RGB")
