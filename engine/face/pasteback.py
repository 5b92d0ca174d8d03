"""Put an edited crop back into the full-resolution photo.

Only the change is moved: delta = edited crop - aligned reference crop is warped
back through the inverse transform (bicubic) and added through the feathered
region mask. Pixels where the mask is zero are copied, byte for byte. A region that
changes shape (eyes, brows) bends the photo itself at its own resolution first
(bend_photo): a moved edge added as a low-resolution difference would leave the
sharp original beside a soft moved copy.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.face.align import from_corner, invert


def mask_bbox(m: np.ndarray, mask: np.ndarray, size: tuple[int, int], margin: int = 4) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) in a photo of `size` (h, w) of the crop mask's non-zero area."""
    ys, xs = np.nonzero(mask > 1e-4)
    if len(xs) == 0:
        return 0, 0, 0, 0
    inv = invert(m)
    corners = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1],
                        [xs.max() + 1, ys.max() + 1]], float)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    h, w = size
    x0, y0 = (max(0, math.floor(v) - margin) for v in pts.min(0))
    x1, y1 = pts.max(0)
    return x0, y0, min(w, math.ceil(x1) + margin), min(h, math.ceil(y1) + margin)


def _into_box(crop_image: np.ndarray, m: np.ndarray, box: tuple[int, int, int, int], interpolation: int) -> np.ndarray:
    """A crop-frame image (or per-pixel field) resampled onto the photo pixels of box (x0, y0, x1, y1); m: photo ->
    crop. Zero where the box reaches beyond the crop."""
    x0, y0, x1, y1 = box
    return cv2.warpAffine(crop_image.astype(np.float32), from_corner(m, x0, y0), (x1 - x0, y1 - y0),
                          flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


def paste_back(rgb: np.ndarray, m: np.ndarray, delta: np.ndarray, mask: np.ndarray,
               replaced: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """rgb (H, W, 3) float 0..255; m: image->crop transform; delta (h, w, 3); mask (h, w) in 0..1.
    `replaced` (a crop-frame weight 0..1, the start's reference crop): where the edit laid another face's pixels,
    the photo's own detail finer than the crop goes too. Pasted as a difference alone, a closed smile kept the old
    teeth's sharp lower edge as a ghost line across the new lips (GIMP trial, strength -1)."""
    out = rgb.copy()
    x0, y0, x1, y1 = mask_bbox(m, mask, rgb.shape[:2])
    if x1 <= x0 or y1 <= y0:
        return out
    d = _into_box(delta, m, (x0, y0, x1, y1), cv2.INTER_CUBIC)
    a = np.clip(_into_box(mask, m, (x0, y0, x1, y1), cv2.INTER_LINEAR), 0, 1)[..., None]
    box = out[y0:y1, x0:x1]
    edited = box + a * d
    if replaced is not None:
        weight, start = replaced
        r = np.clip(_into_box(weight, m, (x0, y0, x1, y1), cv2.INTER_LINEAR), 0, 1)[..., None]
        edited = edited - r * (box - _into_box(start, m, (x0, y0, x1, y1), cv2.INTER_CUBIC))
    out[y0:y1, x0:x1] = np.where(a > 0, np.clip(edited, 0, 255), box)
    return out


def bend_photo(rgb: np.ndarray, m: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The photo bent at its own resolution by a bend given in crop pixels (engine/face/warp.py bend_offsets; m:
    photo -> crop): a raised brow pasted as a crop-resolution difference kept the sharp original brow under a soft
    raised copy (a doubled brow). Pixels the bend does not move are copied unchanged."""
    out = rgb.copy()
    x0, y0, x1, y1 = mask_bbox(m, (np.abs(offsets).max(-1) > 1e-3).astype(np.float32), rgb.shape[:2])
    if x1 <= x0 or y1 <= y0:
        return out
    crop_offsets = _into_box(offsets, m, (x0, y0, x1, y1), cv2.INTER_LINEAR)
    photo_offsets = crop_offsets @ np.linalg.inv(m[:, :2]).T  # crop pixels -> photo pixels
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    bent = cv2.remap(rgb.astype(np.float32), xx + photo_offsets[..., 0].astype(np.float32),
                     yy + photo_offsets[..., 1].astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    moved = np.abs(photo_offsets).max(-1, keepdims=True) > 1e-3
    out[y0:y1, x0:x1] = np.where(moved, np.clip(bent, 0, 255), out[y0:y1, x0:x1])
    return out
