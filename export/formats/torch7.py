"""Torch7 `VGG_FACE.t7`: an nn.Sequential read by `torchfile`, BGR input.

Layers carry no names, so convolutions and linears are named in order
(conv1_1 ... conv5_3, fc6, fc7, fc8). SpatialConvolutionMM stores its weight flat
(out, in*kh*kw); the module's nInputPlane/kH/kW fields give the real shape.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torchfile

from engine.models.vggface import FC_NAMES, conv_names
from export.formats.common import RawWeights, as_f32, bad_file


def _typename(module) -> str:
    name = getattr(module, "torch_typename", lambda: b"")()
    return name.decode() if isinstance(name, bytes) else str(name)


def _field(module, key: str):
    return module._obj.get(key.encode(), module._obj.get(key))


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    try:
        model = torchfile.load(str(path))
        modules = _field(model, "modules")
    except (AssertionError, TypeError, ValueError, EOFError, KeyError, AttributeError, OSError,
            struct.error, torchfile.T7ReaderException) as e:
        raise bad_file(path, f"not a readable Torch7 model ({type(e).__name__}: {e})") from None
    if modules is None:
        raise bad_file(path, "is not an nn.Sequential (no 'modules' list)")
    convs = [m for m in modules if "SpatialConvolution" in _typename(m)]
    linears = [m for m in modules if _typename(m).endswith("Linear")]
    if len(convs) != len(conv_names()) or len(linears) != len(FC_NAMES):
        raise bad_file(path, f"has {len(convs)} convolutions and {len(linears)} linear layers; "
                             f"VGG-Face has {len(conv_names())} and {len(FC_NAMES)}")
    arrays: dict[str, np.ndarray] = {}
    for name, m in zip(conv_names(), convs, strict=True):
        w = np.asarray(_field(m, "weight"))
        shape = (int(_field(m, "nOutputPlane")), int(_field(m, "nInputPlane")),
                 int(_field(m, "kH")), int(_field(m, "kW")))
        if w.size != int(np.prod(shape)):
            raise bad_file(path, f"{name}: weight has {w.size} values, module declares {shape}")
        arrays[f"{name}.weight"] = as_f32(w.reshape(shape))
        arrays[f"{name}.bias"] = as_f32(np.asarray(_field(m, "bias")).reshape(-1))
    for name, m in zip(FC_NAMES, linears, strict=True):
        arrays[f"{name}.weight"] = as_f32(_field(m, "weight"))
        arrays[f"{name}.bias"] = as_f32(np.asarray(_field(m, "bias")).reshape(-1))
    return RawWeights("torch7", [path], arrays, "BGR")
