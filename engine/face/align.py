"""Similarity transforms from a face's landmarks to a backbone's crop template,
and anti-aliased crops through them. Pure maths plus OpenCV warps.

A transform is a 2x3 matrix M mapping image (x, y) to crop (x, y).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.errors import EXIT_BACKBONE, FATError
from engine.face.detect import dlib_shape


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth corners from the 68-point layout."""
    return np.array([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48], landmarks[54]])


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst, 2x3."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / s.var(0).sum())
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def dlib_chip_transform(landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """The same mapping dlib.get_face_chip uses (get_face_chip_details + get_mapping_to_chip)."""
    import dlib

    det = dlib.get_face_chip_details(dlib_shape(landmarks), size, padding)
    r = det.rect
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    c, s = math.cos(det.angle), math.sin(det.angle)

    def rot(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return cx + c * dx - s * dy, cy + s * dx + c * dy

    src = np.float32([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())])
    dst = np.float32([[0, 0], [det.cols - 1, 0], [det.cols - 1, det.rows - 1]])
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def template_transform(landmarks: np.ndarray, template: dict) -> np.ndarray:
    kind = template.get("kind")
    if kind == "dlib_chip":
        return dlib_chip_transform(landmarks, int(template["size"][0]), float(template.get("padding", 0.25)))
    if kind == "points5":
        h, w = template["size"]
        dst = np.array(template["points"], float) * [w, h]
        return umeyama(five_points(landmarks), dst)
    raise FATError(f"unknown crop template kind {kind!r} in the backbone spec.", EXIT_BACKBONE)


def from_corner(m: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """m (photo -> crop) for a part of the photo whose top-left pixel is (x0, y0): read from that part alone."""
    return m @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], float)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, float) @ m[:, :2].T + m[:, 2]


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def scale_of(m: np.ndarray) -> float:
    return float(math.sqrt(abs(np.linalg.det(m[:, :2]))))


def warp_crop(rgb: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop (h, w) through M; supersamples then area-averages when shrinking, so no aliasing."""
    h, w = size
    k = int(min(4, max(1, math.ceil(1.0 / max(scale_of(m), 1e-6)))))
    mk = m * k
    big = cv2.warpAffine(rgb.astype(np.float32), mk, (w * k, h * k), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA) if k > 1 else big
