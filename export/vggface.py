"""VGG-Face from any published format -> canonical weights -> ONNX + spec."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from engine.io.files import sha256_file
from engine.models.vggface import INPUT_SIZE, MEAN_RGB, VGGFace, tap_names
from export import formats
from export.canonical import canonical_vggface
from export.formats.common import RawWeights

# Loose VGG-Face crop: where eye centres, nose tip and mouth corners land, as
# fractions of the 224x224 input (faces in the VGG-Face set fill ~60% of the crop).
VGGFACE_TEMPLATE = {
    "kind": "points5",
    "size": [INPUT_SIZE, INPUT_SIZE],
    "points": [[0.345, 0.415], [0.655, 0.415], [0.5, 0.58], [0.38, 0.72], [0.62, 0.72]],
}


def read_raw(fmt: str, files: list[Path]) -> RawWeights:
    return formats.reader(fmt).read(files)


def load_canonical(fmt: str, files: list[Path]) -> dict[str, np.ndarray]:
    return canonical_vggface(read_raw(fmt, files))


def build_model(state: dict[str, np.ndarray]) -> VGGFace:
    """Wraps the arrays without copying (550 MB at full size); some readers give read-only
    views of the file's bytes, which is fine: export never writes to the weights."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return VGGFace.from_state_dict({k: torch.from_numpy(v) for k, v in state.items()}).eval()


def vggface_spec(fmt: str, files: list[Path], with_fc: bool) -> dict:
    return {
        "backbone": "vggface",
        "architecture": "vggface16",
        "source": {"format": fmt, "files": [{"name": f.name, "sha256": sha256_file(f)} for f in files]},
        "input": {"name": "image", "size": [INPUT_SIZE, INPUT_SIZE], "channel_order": "RGB",
                  "range": [0, 255], "mean": list(MEAN_RGB), "std": [1.0, 1.0, 1.0], "scale": 1.0,
                  "normalisation_in_graph": True},
        "crop_template": VGGFACE_TEMPLATE,
        "descriptor_tap": "fc7" if with_fc else "pool5",
    }


def vgg_taps(with_fc: bool) -> list[str]:
    return tap_names(include_fc=with_fc)
