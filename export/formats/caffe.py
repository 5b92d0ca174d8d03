"""Caffe `VGG_FACE.caffemodel` (+ optional `VGG_FACE_deploy.prototxt`).

The caffemodel is a NetParameter protobuf. Rather than vendor the whole
caffe.proto (the old generated caffe_pb2.py fails with protobuf 7), we declare
the few messages we read with their BVLC field numbers and let protobuf parse
them; unknown fields are skipped by protobuf itself.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from export.formats.common import RawWeights, as_f32, bad_file

F = descriptor_pb2.FieldDescriptorProto


def _field(msg, name: str, number: int, ftype: int, label: int = F.LABEL_OPTIONAL,
           type_name: str = "", packed: bool = False) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if packed:
        f.options.packed = True


@lru_cache(maxsize=2)
def messages(raw_data: bool = False) -> dict[str, type]:
    """NetParameter / LayerParameter / V1LayerParameter / BlobProto subsets.

    With raw_data, BlobProto.data is declared `bytes`: a packed repeated float has
    the same wire format, so protobuf hands over the raw little-endian floats and
    numpy wraps them without building 138 million Python floats.
    """
    package = "fatcaffe_raw" if raw_data else "fatcaffe"
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto2")
    shape = fdp.message_type.add(name="BlobShape")
    _field(shape, "dim", 1, F.TYPE_INT64, F.LABEL_REPEATED, packed=True)
    blob = fdp.message_type.add(name="BlobProto")
    _field(blob, "num", 1, F.TYPE_INT32)
    _field(blob, "channels", 2, F.TYPE_INT32)
    _field(blob, "height", 3, F.TYPE_INT32)
    _field(blob, "width", 4, F.TYPE_INT32)
    if raw_data:
        _field(blob, "data", 5, F.TYPE_BYTES)
    else:
        _field(blob, "data", 5, F.TYPE_FLOAT, F.LABEL_REPEATED, packed=True)
    _field(blob, "shape", 7, F.TYPE_MESSAGE, type_name=f".{package}.BlobShape")
    _field(blob, "double_data", 8, F.TYPE_DOUBLE, F.LABEL_REPEATED, packed=True)
    layer = fdp.message_type.add(name="LayerParameter")
    _field(layer, "name", 1, F.TYPE_STRING)
    _field(layer, "type", 2, F.TYPE_STRING)
    _field(layer, "blobs", 7, F.TYPE_MESSAGE, F.LABEL_REPEATED, f".{package}.BlobProto")
    v1 = fdp.message_type.add(name="V1LayerParameter")
    _field(v1, "name", 4, F.TYPE_STRING)
    _field(v1, "type", 5, F.TYPE_INT32)  # enum LayerType on the wire
    _field(v1, "blobs", 6, F.TYPE_MESSAGE, F.LABEL_REPEATED, f".{package}.BlobProto")
    net = fdp.message_type.add(name="NetParameter")
    _field(net, "name", 1, F.TYPE_STRING)
    _field(net, "layers", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, f".{package}.V1LayerParameter")
    _field(net, "layer", 100, F.TYPE_MESSAGE, F.LABEL_REPEATED, f".{package}.LayerParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in ("BlobShape", "BlobProto", "LayerParameter", "V1LayerParameter", "NetParameter")
    }


# V1LayerParameter.LayerType values we care about.
V1_CONVOLUTION = 4
V1_INNER_PRODUCT = 14


def blob_array(blob) -> np.ndarray:
    if isinstance(blob.data, bytes):
        if len(blob.data) % 4:
            raise ValueError("blob data is not a whole number of floats")
        data = np.frombuffer(blob.data, dtype="<f4")
    else:
        data = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if blob.HasField("shape"):
        dims = [int(d) for d in blob.shape.dim]
    else:
        dims = [blob.num, blob.channels, blob.height, blob.width]
    if any(d < 0 for d in dims):
        raise ValueError(f"blob declares a negative dimension {dims}")
    if math.prod(dims) != data.size:
        # Old files often give fc blobs as 1 x 1 x out x in; keep the data's truth.
        raise ValueError(f"blob declares shape {dims} but holds {data.size} values")
    return data.reshape(dims)


def read_prototxt_layers(path: Path) -> list[str]:
    """Names of the layers declared in a deploy prototxt (old or new syntax)."""
    text = path.read_text(errors="replace")
    return re.findall(r'name\s*:\s*"([^"]+)"', text)


def read(paths: list[Path]) -> RawWeights:
    model = next((p for p in paths if p.suffix == ".caffemodel"), None)
    proto = next((p for p in paths if p.suffix == ".prototxt"), None)
    if model is None:
        raise bad_file(paths[0], "a Caffe prototxt alone holds no weights",
                       "Pass the .caffemodel as well (VGG_FACE.caffemodel from vgg_face_caffe.tar.gz).")
    payload = model.read_bytes()
    net = messages(raw_data=True)["NetParameter"]()
    try:
        net.ParseFromString(payload)
        if any(not b.data and (b.num or b.shape.dim) for lay in net.layers for b in lay.blobs):
            net = messages()["NetParameter"]()  # unpacked floats: parse them the slow way
            net.ParseFromString(payload)
    except DecodeError as e:
        raise bad_file(model, f"not a readable Caffe model (protobuf: {e})") from None
    del payload
    arrays: dict[str, np.ndarray] = {}
    layers = [(layer.name, list(layer.blobs)) for layer in net.layers]
    layers += [(layer.name, list(layer.blobs)) for layer in net.layer]
    if not layers:
        raise bad_file(model, "contains no layers (empty or not a Caffe NetParameter)")
    for name, blobs in layers:
        if not blobs:
            continue
        if not isinstance(name, str):  # protobuf hands over a name that is not UTF-8 as bytes
            raise bad_file(model, f"a layer name is not text ({name[:40]!r})")
        if len(blobs) != 2:
            raise bad_file(model, f"layer {name!r} has {len(blobs)} blobs, expected weight and bias")
        try:
            w, b = blob_array(blobs[0]), blob_array(blobs[1])
        except ValueError as e:
            raise bad_file(model, f"layer {name!r}: {e}") from None
        if name.startswith("fc") and w.ndim > 2:
            if math.prod(w.shape[:-2]) != 1:
                raise bad_file(model, f"layer {name!r} weight has shape {w.shape}, expected 1 x 1 x out x in")
            w = w.reshape(w.shape[-2], w.shape[-1])
        arrays[f"{name}.weight"] = as_f32(w)
        arrays[f"{name}.bias"] = as_f32(b.reshape(-1))
    if proto is not None:
        declared = set(read_prototxt_layers(proto))
        missing = [n.split(".")[0] for n in arrays if n.split(".")[0] not in declared]
        if missing:
            raise bad_file(proto, f"does not declare layers {sorted(set(missing))} found in {model.name}",
                           "Pass the prototxt that came with the caffemodel, or none.")
    return RawWeights([p for p in (model, proto) if p], arrays, "BGR")
