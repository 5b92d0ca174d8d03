"""Region masks from 68 landmarks: pure functions from points to float masks.

A mask is float32 H x W in 0..1: the landmark polygon of the region, grown by a
margin relative to the face size, then feathered with a Gaussian so edits fade
out instead of ending in a seam.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from engine.errors import EXIT_INPUT, EXIT_USAGE, FATError

JAW = list(range(0, 17))
BROWS = list(range(17, 27))
NOSE = list(range(27, 36))
EYES = list(range(36, 48))
MOUTH = list(range(48, 68))

# region -> (groups of landmark indices, each filled as a convex hull; grow, feather) as fractions
# of the eye distance.
REGIONS: dict[str, tuple[list[list[int]], float, float]] = {
    "mouth": ([MOUTH], 0.22, 0.18),
    "eyes": ([list(range(36, 42)), list(range(42, 48))], 0.22, 0.15),
    "eyebrows": ([list(range(17, 22)), list(range(22, 27))], 0.08, 0.08),
    "nose": ([NOSE], 0.15, 0.15),
    "upper_face": ([BROWS + EYES + [27, 28]], 0.25, 0.2),
    "lower_face": ([JAW[3:14] + NOSE[4:] + MOUTH], 0.0, 0.2),
    "face": ([JAW + BROWS], 0.0, 0.2),
}


def region_names() -> list[str]:
    return list(REGIONS)


def eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))


def region_mask(landmarks: np.ndarray, region: str, size: tuple[int, int],
                grow: float | None = None, feather: float | None = None) -> np.ndarray:
    """Feathered mask (h, w) of `region` for landmarks given in the same pixel frame."""
    if region not in REGIONS:
        raise FATError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}.", EXIT_USAGE)
    groups, default_grow, default_feather = REGIONS[region]
    iod = eye_distance(landmarks)
    hulls = []
    for group in groups:
        pts = np.asarray(landmarks, float)[group]
        if region == "face":  # extend the hull up to the forehead
            top = pts[len(JAW):].copy()
            top[:, 1] -= 0.45 * iod
            pts = np.vstack([pts, top])
        if region in ("face", "lower_face"):  # keep the feathered edge inside the face outline
            centre = pts.mean(0)
            pts = centre + (pts - centre) * 0.88
        hulls.append(pts)
    return grow_and_feather(filled_hulls(hulls, size), iod * (default_grow if grow is None else grow),
                            iod * (default_feather if feather is None else feather))


def inner_mouth_mask(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The opening between the lips (points 60-67), slightly grown and feathered."""
    iod = eye_distance(landmarks)
    return grow_and_feather(filled_hulls([np.asarray(landmarks, float)[60:68]], size), 0.05 * iod, 0.08 * iod)


def filled_hulls(point_sets: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The convex hull of each point set, filled and anti-aliased (1/16 px precision), as 0..1."""
    hard = np.zeros(size, np.uint8)
    for pts in point_sets:
        hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
        cv2.fillConvexPoly(hard, hull, 255, lineType=cv2.LINE_AA, shift=4)
    return hard.astype(np.float32) / 255.0


def grow_and_feather(mask: np.ndarray, grow_px: float, feather_px: float) -> np.ndarray:
    out = mask.astype(np.float32)
    r = int(round(grow_px))
    if r > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        out = cv2.dilate(out, kernel)
    if feather_px > 0.5:
        out = cv2.GaussianBlur(out, (0, 0), feather_px / 2.0)
    out[out < 1.0 / 512] = 0.0  # cut the Gaussian's invisible tails: untouched means untouched
    return np.clip(out, 0.0, 1.0)


def user_mask(path_or_array, size: tuple[int, int]) -> np.ndarray:
    """A user's mask (PNG path or array; white = edit), resized to (h, w)."""
    if isinstance(path_or_array, np.ndarray):
        m = path_or_array.astype(np.float32)
        m = m / 255.0 if m.max() > 1.0 else m
    else:
        raw = cv2.imread(str(path_or_array), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise FATError(f"{path_or_array}: not a readable mask image (use a grayscale PNG, white = edit).",
                           EXIT_INPUT)
        if raw.ndim == 3:
            raw = raw[..., 3] if raw.shape[2] == 4 else cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
        m = raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)
    if m.ndim == 3:
        m = m.mean(axis=2)
    h, w = size
    if m.shape != (h, w):
        raise FATError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}; they must match.", EXIT_INPUT)
    return np.clip(m, 0, 1)


def resample(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (h, w) mask averaged down to a feature map's (h', w'), shaped (1, 1, h', w')."""
    m = mask.reshape(1, 1, *mask.shape[-2:]).float()
    return F.adaptive_avg_pool2d(m, size) if size[0] <= m.shape[-2] else F.interpolate(
        m, size=size, mode="bilinear", align_corners=False)
