"""Torch7 `VGG_FACE.t7`: an nn.Sequential read by `torchfile`, BGR input.

Layers carry no names, so convolutions and linears are named in order
(conv1_1 ... conv5_3, fc6, fc7, fc8). SpatialConvolutionMM stores its weight flat
(out, in*kh*kw); the module's nInputPlane/kH/kW fields give the real shape.

torchfile trusts the file: a tensor's sizes, strides and storage offset become a
numpy view without a bounds check (a damaged file then segfaults in the float
conversion), and declared lengths become allocations. So the tensor and storage
readers are replaced (torchfile's own extension point, `type_handlers`) by ones that
check every size against the file, and the file object torchfile reads from refuses
reads past its end.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torchfile

from engine.models.vggface import FC_NAMES, conv_names
from export.formats.common import RawWeights, as_f32, bad_file, file_size, numeric, parsing

MAX_DIMS = 16
MAX_PLANES = 1 << 20  # any convolution field beyond this is damage, not a network
DAMAGED = "not a readable Torch7 model"
# What torchfile raises on a damaged file (besides Damaged from the checks below).
T7_ERRORS = (torchfile.T7ReaderException, struct.error, EOFError, ValueError, TypeError, KeyError, OverflowError,
             UnicodeDecodeError, AttributeError, NotImplementedError, RecursionError)


class Damaged(ValueError):
    """A size, stride or offset in the file that does not fit the file."""


class BoundedFile:
    """The file as torchfile sees it: a read past the end or of negative length is damage."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size

    def read(self, n: int = -1) -> bytes:
        at = self.f.tell()
        if n is None or n < 0 or at + n > self.size:
            raise Damaged(f"wants {n} bytes at offset {at}, but the file has {self.size} bytes")
        return self.f.read(n)


def _storage_reader(dtype: type) -> object:
    def read_storage(reader: torchfile.T7Reader, version: object) -> np.ndarray:
        n = reader.read_long()
        if n < 0:
            raise Damaged(f"a storage of {n} elements")
        return np.frombuffer(reader.f.read(n * np.dtype(dtype).itemsize), dtype=dtype)
    return read_storage


def strided_view(storage: object, size: list[int], stride: list[int], offset: int, dtype: type) -> np.ndarray:
    """The tensor's view of its storage, after checking that it lies inside the storage."""
    if not isinstance(storage, np.ndarray) or storage.dtype != dtype or storage.ndim != 1:
        raise Damaged("a tensor's storage is not a storage of its type")
    if any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
        raise Damaged(f"a tensor with size {size}, stride {stride}, offset {offset}")
    if 0 in size:
        return np.empty(size, dtype=dtype)
    end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    if end > storage.size or math.prod(size) > storage.size:
        raise Damaged(f"a tensor of size {size} (stride {stride}, offset {offset}) reaches past its storage of "
                      f"{storage.size} elements")
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride])


def _tensor_reader(dtype: type) -> object:
    def read_tensor(reader: torchfile.T7Reader, version: object) -> np.ndarray:
        ndim = reader.read_int()
        if not 0 <= ndim <= MAX_DIMS:
            raise Damaged(f"a tensor with {ndim} dimensions")
        size = reader.read_long_array(ndim)
        stride = reader.read_long_array(ndim)
        offset = reader.read_long() - 1
        storage = reader.read_obj()
        if storage is None or ndim == 0:
            return np.empty(0, dtype=dtype)
        return strided_view(storage, size, stride, offset, dtype)
    return read_tensor


for _kind, _dtype in (("Byte", np.uint8), ("Char", np.int8), ("Short", np.int16), ("Int", np.int32),
                      ("Long", np.int64), ("Float", np.float32), ("Double", np.float64), ("Cuda", np.float32),
                      ("CudaByte", np.uint8), ("CudaChar", np.int8), ("CudaShort", np.int16),
                      ("CudaInt", np.int32), ("CudaDouble", np.float64)):
    torchfile.type_handlers[f"torch.{_kind}Tensor".encode()] = _tensor_reader(_dtype)
    torchfile.type_handlers[f"torch.{_kind}Storage".encode()] = _storage_reader(_dtype)


def load(path: Path) -> object:
    """torchfile.load with every read bounded by the file."""
    size = file_size(path)
    with open(path, "rb") as f, parsing(path, DAMAGED, T7_ERRORS):
        return torchfile.T7Reader(BoundedFile(f, size)).read_obj()


def _typename(module: object) -> str:
    if not isinstance(module, torchfile.TorchObject):
        return ""
    name = module.torch_typename()
    return name.decode("latin-1") if isinstance(name, bytes) else str(name)


def _field(module: torchfile.TorchObject, key: str) -> object:
    table = module._obj
    if not isinstance(table, dict):
        return None
    return table.get(key.encode(), table.get(key))


def _count(path: Path, name: str, module: torchfile.TorchObject, key: str) -> int:
    value = _field(module, key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_PLANES:
        raise bad_file(path, f"{name}: field {key} is {value!r}, expected a positive whole number")
    return value


def _tensor(path: Path, name: str, module: torchfile.TorchObject, key: str) -> np.ndarray:
    return numeric(path, f"{name}.{key}", _field(module, key))


def _modules(path: Path, model: object) -> list:
    modules = _field(model, "modules") if isinstance(model, torchfile.TorchObject) else None
    if modules is None:
        raise bad_file(path, "is not an nn.Sequential (no 'modules' list)")
    if not isinstance(modules, list):
        raise bad_file(path, f"{DAMAGED} ('modules' is a {type(modules).__name__}, not a list)")
    return modules


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    modules = _modules(path, load(path))
    convs = [m for m in modules if "SpatialConvolution" in _typename(m)]
    linears = [m for m in modules if _typename(m).endswith("Linear")]
    if len(convs) != len(conv_names()) or len(linears) != len(FC_NAMES):
        raise bad_file(path, f"has {len(convs)} convolutions and {len(linears)} linear layers; "
                             f"VGG-Face has {len(conv_names())} and {len(FC_NAMES)}")
    arrays: dict[str, np.ndarray] = {}
    for name, m in zip(conv_names(), convs, strict=True):
        w = _tensor(path, name, m, "weight")
        shape = tuple(_count(path, name, m, k) for k in ("nOutputPlane", "nInputPlane", "kH", "kW"))
        if w.size != math.prod(shape):
            raise bad_file(path, f"{name}: weight has {w.size} values, module declares {shape}")
        arrays[f"{name}.weight"] = as_f32(w.reshape(shape))
        arrays[f"{name}.bias"] = as_f32(_tensor(path, name, m, "bias").reshape(-1))
    for name, m in zip(FC_NAMES, linears, strict=True):
        arrays[f"{name}.weight"] = as_f32(_tensor(path, name, m, "weight"))
        arrays[f"{name}.bias"] = as_f32(_tensor(path, name, m, "bias").reshape(-1))
    return RawWeights([path], arrays, "BGR")
