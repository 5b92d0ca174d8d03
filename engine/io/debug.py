"""Debug pictures: what the engine saw (box, landmarks, mask) and side-by-sides."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.io.files import atomic_write


def overlay(rgb8: np.ndarray, box, landmarks: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    img = rgb8.copy()
    if mask is not None:
        tint = np.zeros_like(img)
        tint[..., 1] = 255
        a = (0.35 * mask)[..., None]
        img = (img * (1 - a) + tint * a).astype(np.uint8)
    t = max(1, int(round(max(img.shape[:2]) / 400)))
    left, top, right, bottom = (int(round(v)) for v in box)
    cv2.rectangle(img, (left, top), (right, bottom), (255, 200, 0), t)
    for x, y in landmarks:
        cv2.circle(img, (int(round(x)), int(round(y))), t + 1, (255, 0, 0), -1)
    return img


def side_by_side(images: list[np.ndarray], height: int = 360) -> np.ndarray:
    tiles = []
    for im in images:
        im = np.clip(im, 0, 255).astype(np.uint8)
        s = height / im.shape[0]
        tiles.append(cv2.resize(im, (max(1, int(round(im.shape[1] * s))), height), interpolation=cv2.INTER_AREA))
    return np.hstack(tiles)


def write_png(path: Path, rgb8: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
        tmp.write_bytes(buf.tobytes())

    atomic_write(path, write)
