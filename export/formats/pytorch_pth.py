"""PyTorch port `vgg_face_dag.pth` (Albanie): a plain state dict, RGB input."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from export.formats.common import RawWeights, as_f32, bad_file


def read(paths: list[Path]) -> RawWeights:
    path = paths[0]
    try:
        # weights_only: never run pickled code from a downloaded file.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise bad_file(path, f"not a loadable PyTorch weights file ({str(e).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise bad_file(path, "does not hold a state dict of tensors")
    arrays = {k.removeprefix("module."): as_f32(v.detach().float().numpy()) for k, v in state.items()}
    return RawWeights("pytorch", [path], arrays, "RGB")
