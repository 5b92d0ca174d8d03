"""A hard-edged selection (a plain rectangle) fades in inside its outline instead of pasting a seam."""

from __future__ import annotations

import cv2
import numpy as np

from engine.face.masks import USER_MASK_FEATHER, soft_edge_width, soften_user_mask


def rectangle(h: int = 200, w: int = 300, box: tuple[int, int, int, int] = (50, 40, 250, 160)) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1.0
    return m


def test_a_hard_rectangle_fades_in_inside_its_outline():
    hard = rectangle()
    soft = soften_user_mask(hard, eye_px=80)
    width = USER_MASK_FEATHER * 80
    assert (soft[hard == 0] == 0).all()  # nothing outside the selection changes
    assert soft[40, 150] < 0.05 and soft[100, 150] == 1.0  # ~0 at the edge, full strength deep inside
    row = soft[100, 50:50 + int(width) + 2]
    assert (np.diff(row) >= 0).all() and np.abs(np.diff(row)).max() < 0.2  # a smooth ramp, no step
    assert soft_edge_width(soft) > width / 2


def test_a_feathered_mask_is_kept_and_a_tiny_one_still_reaches_full_strength():
    feathered = cv2.GaussianBlur(rectangle(), (0, 0), 8)
    assert np.array_equal(soften_user_mask(feathered, eye_px=80), feathered)  # the user's own fade is kept
    tiny = soften_user_mask(rectangle(box=(100, 90, 106, 96)), eye_px=80)
    assert tiny.max() == 1.0 and (tiny[rectangle(box=(100, 90, 106, 96)) == 0] == 0).all()
