"""Writers of synthetic VGG-Face files in each published layout (tests only).

Each takes a canonical state dict (torch layout, RGB conv1_1) and writes the file
the way the publisher's did: channel order, orientation and flattening conventions,
layer names and container structure. Random weights; small widths for speed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch

from engine.models.vggface import FC_NAMES, VGG_BLOCKS, canonical_shapes, conv_names
from export.formats.caffe import V1_CONVOLUTION, V1_INNER_PRODUCT, messages

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


# --- Caffe (VGG_FACE.caffemodel + VGG_FACE_deploy.prototxt, old V1 syntax) --------

def write_caffe(state: dict[str, np.ndarray], folder: Path, new_shape_field: bool = False) -> list[Path]:
    s = bgr(state)
    msgs = messages()
    net = msgs["NetParameter"](name="VGG_FACE_16_layers")
    proto = ['name: "VGG_FACE_16_layers"', 'input: "data"', "input_dim: 1", "input_dim: 3",
             "input_dim: 224", "input_dim: 224"]
    bottom = "data"
    for name in conv_names() + list(FC_NAMES):
        layer = net.layers.add(name=name, type=V1_CONVOLUTION if name.startswith("conv") else V1_INNER_PRODUCT)
        w, b = s[f"{name}.weight"], s[f"{name}.bias"]
        shapes = (w.shape if w.ndim == 4 else (1, 1, *w.shape), (1, 1, 1, b.size))
        for arr, shape in zip((w, b), shapes, strict=True):
            blob = layer.blobs.add()
            if new_shape_field:
                blob.shape.dim.extend(arr.shape)
            else:
                blob.num, blob.channels, blob.height, blob.width = shape
            blob.data.extend(arr.reshape(-1).tolist())
        kind = "CONVOLUTION" if name.startswith("conv") else "INNER_PRODUCT"
        proto.append(f'layers {{ bottom: "{bottom}" top: "{name}" name: "{name}" type: {kind} }}')
        proto.append(f'layers {{ bottom: "{name}" top: "{name}" name: "relu{name[4:] or name[2:]}" type: RELU }}')
        bottom = name
    model, deploy = folder / "VGG_FACE.caffemodel", folder / "VGG_FACE_deploy.prototxt"
    model.write_bytes(net.SerializeToString())
    deploy.write_text("\n".join(proto) + "\n")
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
    "keras": lambda st, d: [write_keras(st, d / "rcmalli_vggface_tf_vgg16.h5")],
    "matconvnet": lambda st, d: [write_matconvnet(st, d / "vgg_face.mat", "net")],
    "matconvnet-toplevel": lambda st, d: [write_matconvnet(st, d / "vgg_face.mat", "top")],
    "matconvnet-v73": lambda st, d: [write_matconvnet_v73(st, d / "vgg_face.mat")],
    "torch7": lambda st, d: [write_torch7(st, d / "VGG_FACE.t7")],
}
