"""Reader of dlib's DNN serialization for dlib_face_recognition_resnet_model_v1.dat.

dlib writes a network recursively: each add_layer writes its version, then its
whole subnetwork, then its own layer details (so headers come top-down and layer
details bottom-up). Tag and skip layers write only a version (1) and their
subnetwork; which tag they are is in the C++ type, not the file, so the reader
returns markers and the architecture (engine/models/dlib_resnet.py) places them.

Primitive encodings (dlib/serialize.h): integers are a byte (size | 0x80 if
negative) followed by `size` little-endian bytes; strings are an integer length
then bytes; floats are an integer mantissa and an integer exponent (value =
m * 2**e); tensors are version 2, four dims, then raw little-endian float32.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import EXIT_INPUT, FATError


class DatFormatError(ValueError):
    pass


@dataclass
class Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, marker, input
    params: dict[str, object] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0:
            raise DatFormatError(f"negative length {n} at byte {self.pos}")
        if self.pos + n > len(self.data):
            raise DatFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} more bytes)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        head = self.take(1)[0]
        size, negative = head & 0x0F, bool(head & 0x80)
        if size > 8:
            raise DatFormatError(f"bad integer header {head:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little") if size else 0
        return -value if negative else value

    def string(self) -> str:
        n = self.int()
        if not 0 <= n < 1 << 20:
            raise DatFormatError(f"implausible string length {n} at byte {self.pos}")
        return self.take(n).decode("latin-1")

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent in (32000, 32001, 32002):  # dlib's codes for inf, -inf, nan
            return {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}[exponent]
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise DatFormatError(f"float {mantissa} * 2**{exponent} out of range at byte {self.pos}") from None

    def dims(self) -> tuple[int, int, int, int]:
        """Four tensor dimensions, each checked: a negative size is damage, not a shape."""
        at = self.pos
        d = tuple(self.int() for _ in range(4))
        if any(not 0 <= x <= len(self.data) for x in d):  # even an empty tensor has no dimension that big
            raise DatFormatError(f"impossible tensor dimensions {d} at byte {at}")
        return d  # type: ignore[return-value]

    def bool(self) -> bool:
        b = self.take(1)
        if b not in (b"0", b"1", b"\x00", b"\x01"):
            raise DatFormatError(f"bad bool {b!r} at byte {self.pos - 1}")
        return b in (b"1", b"\x01")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DatFormatError(f"unsupported tensor version {version} at byte {self.pos}")
        dims = self.dims()
        n = math.prod(dims)
        return np.frombuffer(self.take(4 * n), dtype="<f4").reshape(dims).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias_tensor's shape; its offset is implied by its place in `params`."""
        version = self.int()
        if version != 1:
            raise DatFormatError(f"unsupported alias_tensor version {version} at byte {self.pos}")
        return self.dims()


def _views(params: np.ndarray, *shapes: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Consecutive slices of a layer's parameter tensor (filters then biases)."""
    out, offset = [], 0
    for shape in shapes:
        out.append(_view(params, offset, shape))
        offset += math.prod(shape)
    return out


def _view(params: np.ndarray, offset: int, shape: tuple[int, int, int, int]) -> np.ndarray:
    flat = params.reshape(-1)
    n = math.prod(shape)
    if offset + n > flat.size:
        raise DatFormatError(f"alias tensor {shape}+{offset} outside parameters of size {flat.size}")
    return flat[offset:offset + n].reshape(shape).copy()


def _layer_details(r: Reader) -> Layer:
    name = r.string()
    if name in ("con_4", "con_5"):
        params = r.tensor()
        p = {"num_filters": r.int(), "nr": r.int(), "nc": r.int(), "stride_y": r.int(), "stride_x": r.int(),
             "padding_y": r.int(), "padding_x": r.int()}
        weight, bias = _views(params, r.alias(), r.alias())
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        if name == "con_5":
            p["use_bias"] = r.bool()
        return Layer("con", p, {"weight": weight, "bias": bias.reshape(-1)})
    if name == "affine_":
        params = r.tensor()
        gamma, beta = _views(params, r.alias(), r.alias())
        mode = r.int()
        return Layer("affine", {"mode": mode}, {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if name == "relu_":
        return Layer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        p = {k: r.int() for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        return Layer(name[:-2], p)
    if name in ("add_prev", "add_prev_"):
        return Layer("add_prev")
    if name in ("fc_2", "fc_3"):
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor()
        weight, bias = _views(params, r.alias(), r.alias())
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        arrays = {"weight": weight}
        if bias_mode == 0:
            arrays["bias"] = bias.reshape(-1)
        return Layer("fc", {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias_mode": bias_mode}, arrays)
    raise DatFormatError(f"unknown dlib layer {name!r} at byte {r.pos}")


def _add_layer_tail(r: Reader) -> None:
    for _ in range(3):  # setup called, gradient stale, output disabled
        r.bool()
    for _ in range(3):  # x_grad, cached_output, params_grad (or grad_final)
        r.tensor()


MAX_DEPTH = 2000  # layers nested in one another; dlib's ResNet has about 150


def _net(r: Reader, out: list[Layer], depth: int = 0) -> None:
    """Append layers bottom-up (input first) to `out`."""
    if depth > MAX_DEPTH:
        raise DatFormatError(f"layers nested more than {MAX_DEPTH} deep at byte {r.pos}")
    version = r.int()
    if version == 1:  # add_tag_layer / add_skip_layer
        _net(r, out, depth + 1)
        out.append(Layer("marker"))
        return
    if version == 2:
        _net(r, out, depth + 1)
        out.append(_layer_details(r))
        _add_layer_tail(r)
        return
    if version == 3:  # the bottom add_layer, holding the input layer
        name = r.string()
        if name != "input_rgb_image_sized":
            raise DatFormatError(f"unsupported input layer {name!r}")
        mean = [r.float() for _ in range(3)]
        size = (r.int(), r.int())
        out.append(Layer("input", {"mean_rgb": mean, "size": size}))
        out.append(_layer_details(r))
        _add_layer_tail(r)
        r.int()  # sample expansion factor
        return
    raise DatFormatError(f"unsupported add_layer version {version} at byte {r.pos}")


@dataclass
class DlibNet:
    loss: str
    loss_params: dict[str, float]
    layers: list[Layer]  # bottom-up: input, con, affine, relu, ..., fc


def read_dat(path: Path) -> DlibNet:
    """Parse the whole file; anything unexpected becomes a FATError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FATError(f"{path}: cannot read ({e.strerror}).", EXIT_INPUT) from None
    r = Reader(data)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 5000))
    try:
        version = r.int()
        if version != 1:
            raise DatFormatError(f"loss layer version {version}, expected 1")
        loss = r.string()
        if loss != "loss_metric_2":
            raise DatFormatError(f"loss layer {loss!r}: not dlib's face-recognition network")
        loss_params = {"margin": r.float(), "distance_threshold": r.float()}
        layers: list[Layer] = []
        _net(r, layers)
        if r.pos != len(data):
            raise DatFormatError(f"{len(data) - r.pos} bytes left over after the network")
    except DatFormatError as e:
        raise FATError(f"{path}: not a readable dlib face-recognition model ({e}). Reinstall "
                       "face_recognition_models (python3 install.py does this).", EXIT_INPUT) from None
    finally:
        sys.setrecursionlimit(old_limit)
    return DlibNet(loss, loss_params, layers)
