"""dlib's face descriptor distance (the sidecar's "same person?" number), computed with our
export of dlib's own network in torch: the same network and chip as
dlib.face_recognition_model_v1, at a fraction of its time (no gradient is needed)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

from engine.errors import FATError
from engine.face.align import dlib_chip_transform, from_corner, warp_crop
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
    """Distance between dlib's 128-D descriptors of two RGB photos (0..255, any dtype; each rounded to 8-bit
    levels first, as a saved result is) at the same face position."""
    bb = _dlib_backbone(str(models_dir()))
    if bb is None:
        return dlib_descriptor_distance(_levels(a).astype(np.uint8), _levels(b).astype(np.uint8), landmarks)
    m = dlib_chip_transform(landmarks, CHIP, PADDING)
    box, m = chip_source(m, a.shape[:2])
    chips = np.stack([warp_crop(_levels(x[box]), m, (CHIP, CHIP)) for x in (a, b)]).transpose(0, 3, 1, 2)
    # torch, fp32 (features_exact; this private backbone opens no ONNX Runtime session): in a new process, importing
    # ONNX Runtime and opening a session for one 2-chip pass took 0.11 s, torch's pass 0.05 s
    d = bb.features_exact(torch.from_numpy(chips.astype(np.float32)), ["descriptor"])["descriptor"].numpy()
    return float(np.linalg.norm(d[0] - d[1]))


def chip_source(m: np.ndarray, shape: tuple[int, int], margin: int = 4) -> tuple[tuple[slice, slice], np.ndarray]:
    """The part of a photo a chip's warp reads (its corners mapped back, grown by `margin` px for the bilinear
    and supersampled reads) and the transform from that part: the same chip from a few hundred thousand pixels
    instead of rounding and converting a whole multi-megapixel photo twice (0.1-0.2 s). A chip reaching over the
    photo's edge reads mirrored pixels from anywhere: the whole photo, as before."""
    corners = np.array([[0, 0], [CHIP, 0], [0, CHIP], [CHIP, CHIP]], np.float64)
    back = cv2.invertAffineTransform(m)
    src = corners @ back[:, :2].T + back[:, 2]
    h, w = shape
    if src.min() < margin or src[:, 0].max() > w - 1 - margin or src[:, 1].max() > h - 1 - margin:
        return (slice(0, h), slice(0, w)), m  # a chip over the photo's edge reads it mirrored: the whole photo
    x0, y0 = (int(np.floor(v)) - margin for v in src.min(0))
    x1, y1 = int(np.ceil(src[:, 0].max())) + margin, int(np.ceil(src[:, 1].max())) + margin
    return (slice(y0, y1), slice(x0, x1)), from_corner(m, x0, y0)


def _levels(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.float32)
