"""PyTorch port `vgg_face_dag.pth` (Albanie): a plain state dict, RGB input.

Both torch.save formats are read with weights_only=True (never running pickled code
from a downloaded file): the zip format memory-mapped, the legacy (pre-1.6) format
read normally (torch cannot memory-map it).
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import torch

from export.formats.common import RawWeights, as_f32, bad_file, parsing

DAMAGED = "not a loadable PyTorch weights file"
# What torch.load (and its weights-only unpickler) raises on a damaged file.
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, TypeError,
               KeyError, IndexError, AttributeError, UnicodeDecodeError, OverflowError, struct.error,
               NotImplementedError, RecursionError, AssertionError)  # torch checks some fields with assert


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_state(path: Path) -> object:
    with parsing(path, DAMAGED, LOAD_ERRORS):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    state = load_state(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise bad_file(path, "does not hold a state dict of tensors")
    odd = [k for k, v in state.items() if v.is_complex() or v.layout != torch.strided or v.is_quantized]
    if odd:
        raise bad_file(path, f"tensors {odd[:4]} are not plain real-valued tensors")
    arrays = {k.removeprefix("module."): as_f32(v.detach().float().numpy()) for k, v in state.items()}
    return RawWeights([path], arrays, "RGB")
