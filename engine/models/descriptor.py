"""dlib's face descriptor distance (the sidecar's "same person?" number), computed with our
ONNX export of dlib's own network through ONNX Runtime: the same network and chip as
dlib.face_recognition_model_v1, at a fraction of its time (no gradient is needed)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.errors import FATError
from engine.face.align import dlib_chip_transform, warp_crop
from engine.face.detect import descriptor_distance as dlib_descriptor_distance
from engine.models.backbone import Backbone, load_backbone
from engine.project import models_dir

CHIP, PADDING = 150, 0.25  # dlib's compute_face_descriptor chip


@lru_cache(maxsize=1)
def _dlib_backbone(directory: str) -> Backbone | None:
    try:
        return load_backbone("dlib-resnet")
    except FATError:  # not exported (a custom models folder): dlib's own code does the same job, slower
        return None


def descriptor_distance(a: np.ndarray, b: np.ndarray, landmarks: np.ndarray) -> float:
    """Distance between dlib's 128-D descriptors of two RGB photos (0..255) at the same face position."""
    bb = _dlib_backbone(str(models_dir()))
    if bb is None:
        return dlib_descriptor_distance(np.clip(np.rint(a), 0, 255).astype(np.uint8),
                                        np.clip(np.rint(b), 0, 255).astype(np.uint8), landmarks)
    m = dlib_chip_transform(landmarks, CHIP, PADDING)
    chips = np.stack([warp_crop(np.clip(x, 0, 255), m, (CHIP, CHIP)) for x in (a, b)]).transpose(0, 3, 1, 2)
    d = bb.features_fast(chips.astype(np.float32), ["descriptor"])["descriptor"]
    return float(np.linalg.norm(d[0] - d[1]))
