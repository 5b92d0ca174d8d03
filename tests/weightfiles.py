"""Writers of synthetic VGG-Face files in each published layout (tests only).

Each takes a canonical state dict (torch layout, RGB conv1_1) and writes the file
the way the publisher's did: channel order, orientation and flattening conventions,
layer names and container structure. Random weights; small widths for speed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch

from engine.models.vggface import FC_NAMES, VGG_BLOCKS, canonical_shapes, conv_names

SMALL_WIDTHS = (4, 4, 8, 8, 8)
SMALL_FC = 16


def random_state(widths=SMALL_WIDTHS, fc_width=SMALL_FC, seed: int = 0) -> dict[str, np.ndarray]:
    """Random canonical weights scaled so activations stay O(1..100) for 0..255 input."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in canonical_shapes(widths, fc_width).items():
        if key.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            scale = np.sqrt(2.0 / fan_in) * (1 / 64 if key == "conv1_1.weight" else 1)
            state[key] = (rng.standard_normal(shape) * scale).astype(np.float32)
        else:
            state[key] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    return state


def bgr(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(state)
    out["conv1_1.weight"] = np.ascontiguousarray(state["conv1_1.weight"][:, ::-1])
    return out


def fc6_hwc(w: np.ndarray) -> np.ndarray:
    """fc6 weight (out, C*7*7 in CHW order) -> kernel (7*7*C in HWC order, out)."""
    out = w.shape[0]
    c = w.shape[1] // 49
    return w.reshape(out, c, 7, 7).transpose(2, 3, 1, 0).reshape(-1, out)


# --- PyTorch (vgg_face_dag.pth) ---------------------------------------------------

def write_pth(state: dict[str, np.ndarray], path: Path) -> Path:
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path


# --- Caffe (VGG_FACE.caffemodel + VGG_FACE_deploy.prototxt) -----------------------
#
# The caffemodel is encoded by hand below rather than through the reader's schema
# (export/formats/caffe.py): a wrong field number there would otherwise be written
# and read back the same way, and both tests would pass. The numbers come from
# BVLC caffe.proto (src/caffe/proto/caffe.proto), quoted beside each constant.

# message NetParameter { optional string name = 1; repeated V1LayerParameter layers = 2;
#                        repeated LayerParameter layer = 100; }
NET_NAME, NET_LAYERS_V1, NET_LAYER = 1, 2, 100
# message LayerParameter { optional string name = 1; optional string type = 2; repeated string bottom = 3;
#                          repeated string top = 4; repeated BlobProto blobs = 7; }
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
# message V1LayerParameter { repeated string bottom = 2; repeated string top = 3; optional string name = 4;
#                            optional LayerType type = 5; repeated BlobProto blobs = 6; }
V1_NAME, V1_TYPE, V1_BLOBS = 4, 5, 6
# (bottom/top are left to the deploy prototxt: the reader ignores them, and tests that patch the first
# b"conv1_1" in the file expect it to be a layer's name.)
# enum V1LayerParameter.LayerType { CONVOLUTION = 4; INNER_PRODUCT = 14; }
V1_TYPES = {"Convolution": 4, "InnerProduct": 14}
# message BlobProto { optional int32 num = 1; optional int32 channels = 2; optional int32 height = 3;
#                     optional int32 width = 4; repeated float data = 5 [packed = true];
#                     optional BlobShape shape = 7; }
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH, BLOB_DATA, BLOB_SHAPE = 1, 2, 3, 4, 5, 7
# message BlobShape { repeated int64 dim = 1 [packed = true]; }
SHAPE_DIM = 1

WIRE_VARINT, WIRE_LEN = 0, 2  # protobuf wire types


def pb_varint(n: int) -> bytes:
    """Base-128 little-endian varint; negatives as 64-bit two's complement, as protobuf does."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_tag(field: int, wire: int) -> bytes:
    return pb_varint(field << 3 | wire)


def pb_int(field: int, value: int) -> bytes:
    return pb_tag(field, WIRE_VARINT) + pb_varint(value)


def pb_len(field: int, payload: bytes) -> bytes:
    """A length-delimited field: strings, sub-messages and packed repeated scalars."""
    return pb_tag(field, WIRE_LEN) + pb_varint(len(payload)) + payload


def pb_str(field: int, text: str) -> bytes:
    return pb_len(field, text.encode())


def pb_packed_floats(field: int, values: np.ndarray) -> bytes:
    return pb_len(field, np.ascontiguousarray(values, dtype="<f4").tobytes())


def pb_packed_varints(field: int, values: Iterable[int]) -> bytes:
    return pb_len(field, b"".join(pb_varint(int(v)) for v in values))


def caffe_blob(arr: np.ndarray, legacy_dims: tuple[int, ...], new_shape_field: bool) -> bytes:
    """A BlobProto, fields in number order as protobuf writes them: the old num/channels/height/width
    dims (1-4) or packed data (5) then the newer BlobShape (7)."""
    data = pb_packed_floats(BLOB_DATA, arr.reshape(-1))
    if new_shape_field:
        return data + pb_len(BLOB_SHAPE, pb_packed_varints(SHAPE_DIM, arr.shape))
    fields = (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)
    return b"".join(pb_int(f, d) for f, d in zip(fields, legacy_dims, strict=True)) + data


def caffe_layer(name: str, kind: str, blobs: list[bytes], v1: bool) -> bytes:
    """A V1LayerParameter (enum type) or LayerParameter (string type) holding its blobs."""
    if v1:
        head = pb_str(V1_NAME, name) + pb_int(V1_TYPE, V1_TYPES[kind])
        return head + b"".join(pb_len(V1_BLOBS, b) for b in blobs)
    return pb_str(LAYER_NAME, name) + pb_str(LAYER_TYPE, kind) + b"".join(pb_len(LAYER_BLOBS, b) for b in blobs)


def _deploy_prototxt(v1_layers: bool) -> str:
    """The deploy file in the matching syntax (V1 enum `layers` or `layer` with string types)."""
    lines = ['name: "VGG_FACE_16_layers"', 'input: "data"'] + [f"input_dim: {d}" for d in (1, 3, 224, 224)]
    bottom = "data"
    for name in conv_names() + list(FC_NAMES):
        relu = f"relu{name[4:] or name[2:]}"
        if v1_layers:
            kind = "CONVOLUTION" if name.startswith("conv") else "INNER_PRODUCT"
            lines.append(f'layers {{ bottom: "{bottom}" top: "{name}" name: "{name}" type: {kind} }}')
            lines.append(f'layers {{ bottom: "{name}" top: "{name}" name: "{relu}" type: RELU }}')
        else:
            kind = "Convolution" if name.startswith("conv") else "InnerProduct"
            lines.append(f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{name}" }}')
            lines.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        bottom = name
    return "\n".join(lines) + "\n"


def write_caffe(state: dict[str, np.ndarray], folder: Path, new_shape_field: bool = False,
                v1_layers: bool = True) -> list[Path]:
    """VGG_FACE.caffemodel as the publisher's (V1 `layers`, legacy 4-d dims, BGR) or in newer syntax.

    new_shape_field: blob dims as BlobShape (field 7) instead of num/channels/height/width.
    v1_layers: NetParameter.layers (V1LayerParameter, field 2) or, if False, .layer (field 100).
    Only the weighted layers, written one at a time so only one layer's bytes are held at once.
    """
    s = bgr(state)
    model, deploy = folder / "VGG_FACE.caffemodel", folder / "VGG_FACE_deploy.prototxt"
    with open(model, "wb") as fh:
        fh.write(pb_str(NET_NAME, "VGG_FACE_16_layers"))
        for name in conv_names() + list(FC_NAMES):
            w, b = s[f"{name}.weight"], s[f"{name}.bias"]
            legacy = (w.shape if w.ndim == 4 else (1, 1, *w.shape), (1, 1, 1, b.size))
            blobs = [caffe_blob(a, d, new_shape_field) for a, d in zip((w, b), legacy, strict=True)]
            kind = "Convolution" if name.startswith("conv") else "InnerProduct"
            fh.write(pb_len(NET_LAYERS_V1 if v1_layers else NET_LAYER, caffe_layer(name, kind, blobs, v1_layers)))
    deploy.write_text(_deploy_prototxt(v1_layers))
    return [model, deploy]


# --- Keras (rcmalli_vggface_tf_vgg16.h5, save_weights layout) ---------------------

def write_keras(state: dict[str, np.ndarray], path: Path) -> Path:
    s = bgr(state)
    with h5py.File(path, "w") as f:
        names = []
        for layer in ["input_1", *conv_names(), "pool1", "flatten", *FC_NAMES]:
            g = f.create_group(layer)
            names.append(layer.encode())
            if f"{layer}.weight" not in s:
                g.attrs["weight_names"] = np.array([], dtype="S")
                continue
            w = s[f"{layer}.weight"]
            if w.ndim == 4:
                k = w.transpose(2, 3, 1, 0)
            elif layer == "fc6":
                k = fc6_hwc(w)
            else:
                k = w.T
            sub = g.create_group(layer)
            sub.create_dataset("kernel:0", data=k)
            sub.create_dataset("bias:0", data=s[f"{layer}.bias"])
            g.attrs["weight_names"] = np.array([f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()])
        f.attrs["layer_names"] = np.array(names)
        f.attrs["keras_version"] = b"2.1.5"
        f.attrs["backend"] = b"tensorflow"
    return path


# --- MatConvNet (vgg_face.mat) ----------------------------------------------------

def _mcn_weight(name: str, w: np.ndarray) -> np.ndarray:
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)  # out,in,H,W -> H,W,in,out
    if name == "fc6":
        out = w.shape[0]
        return w.reshape(out, -1, 7, 7).transpose(2, 3, 1, 0)
    return w.T[None, None]  # 1 x 1 x in x out


def _mcn_layers(state: dict[str, np.ndarray]) -> list[dict]:
    layers = []
    for b, n, _ in VGG_BLOCKS:
        for i in range(1, n + 1):
            layers.append({"name": f"conv{b}_{i}", "type": "conv"})
            layers.append({"name": f"relu{b}_{i}", "type": "relu"})
        layers.append({"name": f"pool{b}", "type": "pool"})
    for name in FC_NAMES:
        layers.append({"name": name, "type": "conv"})
    layers.append({"name": "prob", "type": "softmax"})
    for layer in layers:
        if layer["type"] == "conv":
            name = layer["name"]
            cell = np.empty((1, 2), dtype=object)
            cell[0, 0] = _mcn_weight(name, state[f"{name}.weight"])
            cell[0, 1] = state[f"{name}.bias"].reshape(-1, 1)
            layer["weights"] = cell
    return layers


def write_matconvnet(state: dict[str, np.ndarray], path: Path, layout: str = "net") -> Path:
    layers = _mcn_layers(state)
    cell = np.empty((1, len(layers)), dtype=object)
    for i, layer in enumerate(layers):
        cell[0, i] = layer
    meta = {"normalization": {"averageImage": np.array([129.1863, 104.7624, 93.5940]).reshape(1, 1, 3),
                              "imageSize": np.array([224, 224, 3])},
            "classes": {"description": np.array([f"person_{i}" for i in range(8)], dtype=object)}}
    data = {"net": {"layers": cell, "meta": meta}} if layout == "net" else {"layers": cell, "meta": meta}
    scipy.io.savemat(str(path), data, do_compression=False)
    return path


def write_matconvnet_v73(state: dict[str, np.ndarray], path: Path) -> Path:
    """A MATLAB v7.3 (HDF5) file: cell arrays as object references, arrays column-major."""
    layers = _mcn_layers(state)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs_group = f.create_group("#refs#")
        net = f.create_group("net")
        counter = iter(range(1 << 30))

        def put(arr: np.ndarray) -> h5py.Reference:
            ds = refs_group.create_dataset(f"r{next(counter)}", data=np.asarray(arr).T)
            return ds.ref

        def text(s: str) -> np.ndarray:
            return np.array([[ord(c)] for c in s], dtype=np.uint16)

        layer_refs = []
        for layer in layers:
            g = refs_group.create_group(f"l{next(counter)}")
            g.create_dataset("name", data=text(layer["name"]).T)
            g.create_dataset("type", data=text(layer["type"]).T)
            if "weights" in layer:
                w = [put(x) for x in layer["weights"][0]]
                g.create_dataset("weights", data=np.array(w, dtype=h5py.ref_dtype).reshape(2, 1))
            layer_refs.append(g.ref)
        net.create_dataset("layers", data=np.array(layer_refs, dtype=h5py.ref_dtype).reshape(-1, 1))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    return path


# --- Torch7 (VGG_FACE.t7) ---------------------------------------------------------

class _T7Writer:
    """Just enough of torch7's binary serializer for an nn.Sequential of modules."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.next_index = 1

    def int(self, v: int) -> None:
        self.buf += struct.pack("<i", v)

    def long(self, v: int) -> None:
        self.buf += struct.pack("<q", v)

    def string(self, s: str) -> None:
        b = s.encode()
        self.int(len(b))
        self.buf += b

    def obj(self, v) -> None:
        if v is None:
            self.int(0)
        elif isinstance(v, bool):
            self.int(5)
            self.int(int(v))
        elif isinstance(v, (int, float)):
            self.int(1)
            self.buf += struct.pack("<d", float(v))
        elif isinstance(v, str):
            self.int(2)
            self.string(v)
        elif isinstance(v, np.ndarray):
            self.tensor(v)
        elif isinstance(v, tuple) and v and v[0] == "torch":
            self.torch_object(v[1], v[2])
        elif isinstance(v, (dict, list)):
            self.int(3)
            self.int(self._index())
            items = v.items() if isinstance(v, dict) else ((i + 1, x) for i, x in enumerate(v))
            items = list(items)
            self.int(len(items))
            for k, x in items:
                self.obj(k)
                self.obj(x)
        else:
            raise TypeError(type(v))

    def _index(self) -> int:
        i = self.next_index
        self.next_index += 1
        return i

    def torch_object(self, cls: str, table: dict) -> None:
        self.int(4)
        self.int(self._index())
        self.string("V 1")
        self.string(cls)
        self.obj(table)

    def tensor(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype=np.float32)
        self.int(4)
        self.int(self._index())
        self.string("V 1")
        self.string("torch.FloatTensor")
        self.int(a.ndim)
        for d in a.shape:
            self.long(d)
        for s in np.array(a.strides) // 4:
            self.long(int(s))
        self.long(1)
        self.int(4)
        self.int(self._index())
        self.string("V 1")
        self.string("torch.FloatStorage")
        self.long(a.size)
        self.buf += a.tobytes()


def write_torch7(state: dict[str, np.ndarray], path: Path, flat_conv: bool = True) -> Path:
    s = bgr(state)
    modules: list = []
    for b, n, _ in VGG_BLOCKS:
        for i in range(1, n + 1):
            w = s[f"conv{b}_{i}.weight"]
            cout, cin = w.shape[:2]
            modules.append(("torch", "nn.SpatialConvolutionMM", {
                "weight": w.reshape(cout, -1) if flat_conv else w, "bias": s[f"conv{b}_{i}.bias"],
                "nInputPlane": cin, "nOutputPlane": cout, "kW": 3, "kH": 3, "dW": 1, "dH": 1,
                "padW": 1, "padH": 1, "train": False}))
            modules.append(("torch", "nn.ReLU", {"inplace": False}))
        modules.append(("torch", "nn.SpatialMaxPooling", {"kW": 2, "kH": 2, "dW": 2, "dH": 2}))
    modules.append(("torch", "nn.View", {"numElements": s["fc6.weight"].shape[1]}))
    for k, name in enumerate(FC_NAMES):
        modules.append(("torch", "nn.Linear", {"weight": s[f"{name}.weight"], "bias": s[f"{name}.bias"]}))
        if k < 2:
            modules.append(("torch", "nn.ReLU", {"inplace": False}))
            modules.append(("torch", "nn.Dropout", {"p": 0.5}))
    modules.append(("torch", "nn.SoftMax", {}))
    w = _T7Writer()
    w.obj(("torch", "nn.Sequential", {"modules": modules, "train": False}))
    path.write_bytes(bytes(w.buf))
    return path


WRITERS = {
    "pytorch": lambda st, d: [write_pth(st, d / "vgg_face_dag.pth")],
    "caffe": lambda st, d: write_caffe(st, d),
    "caffe-new": lambda st, d: write_caffe(st, d, new_shape_field=True, v1_layers=False),
    "keras": lambda st, d: [write_keras(st, d / "rcmalli_vggface_tf_vgg16.h5")],
    "matconvnet": lambda st, d: [write_matconvnet(st, d / "vgg_face.mat", "net")],
    "matconvnet-toplevel": lambda st, d: [write_matconvnet(st, d / "vgg_face.mat", "top")],
    "matconvnet-v73": lambda st, d: [write_matconvnet_v73(st, d / "vgg_face.mat")],
    "torch7": lambda st, d: [write_torch7(st, d / "VGG_FACE.t7")],
}
