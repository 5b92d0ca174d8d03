"""How dark a face is above its upper lip, relative to its own cheeks (pure numpy + OpenCV, on an aligned crop).

A bank example's mouth brings the skin above it into the start image: a moustache, stubble or a deep nose
shadow there came out as a borrowed grey moustache on a shaven face (bench/bank_quality.py contact sheets:
obama_2 smiling with alex_lacamoire_2's mouth; strength -1 on obama_2, mark_zuckerberg_1, scarlett_johansson_1).

`lip_shade` = mean luma of the band between the nose base (landmarks 31-35) and the outer upper lip (48-54),
divided by the mean luma of two cheek triangles (jaw point 1 / 15, the nose's side 31 / 35, the lower eyelid
41 / 46). Measured on the 39 faces of ../shared/faces: shaven faces 0.74-1.11 (the spread is lighting: a nose
shadow under a high light), stubble and beards 0.63-0.70, a full moustache 0.42. engine/bank/edit.py puts the
examples `shaded` for a reference after the others as a pixel source.
"""

from __future__ import annotations

import cv2
import numpy as np

# An example is shaded for a reference when it is both in the range of hair and darker than the reference by a
# margin. The range alone would count a bearded example against a bearded face; the margin alone counted nose
# shadows: scarlett_johansson_2 (0.81) is 0.19 below rose_leslie (1.0) and biden_2 (0.74) 0.2 below
# anthony_hopkins_1, and with a margin of 0.15 alone smiles kept identity (mobileface >= 0.75) on 11 of 15
# references instead of 13; a margin of 0.25 alone let a beard (kit_harington_1, 0.63) give obama_2 (0.81) a
# moustache at strength -1 (bench/bank_quality.py contact sheet)
HAIR_LINE = 0.72
SHADE_MARGIN = 0.15
BAND = (48, 31, 32, 33, 34, 35, 54, 53, 52, 51, 50, 49)  # nose base left to right, then the upper lip back
CHEEKS = ((1, 31, 41), (15, 35, 46))


def lip_shade(crop: np.ndarray, landmarks: np.ndarray) -> float:
    """Mean luma above the upper lip / mean luma of the cheeks (1: as light as the cheeks); `landmarks` in the
    crop's pixels. NaN where either part has (almost) no area: degenerate landmarks."""
    luma = cv2.cvtColor(np.clip(crop, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    parts = _polygons(landmarks, (BAND,)), _polygons(landmarks, CHEEKS)
    if min(sum(abs(cv2.contourArea(q.astype(np.float32))) for q in part) for part in parts) < 4:
        return float("nan")
    band, cheeks = (_filled(part, crop.shape[:2]) for part in parts)
    return float(luma[band].mean() / max(float(luma[cheeks].mean()), 1.0))


def _polygons(landmarks: np.ndarray, groups: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    p = np.round(np.asarray(landmarks, np.float64)).astype(np.int32)
    return [p[list(g)] for g in groups]


def _filled(polygons: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    out = np.zeros(size, np.uint8)
    cv2.fillPoly(out, polygons, 1)
    return out > 0


def lip_in(mask: np.ndarray, landmarks: np.ndarray) -> bool:
    """Whether a region mask (0..1, landmarks in its pixels) covers most of the skin above the upper lip."""
    band = _filled(_polygons(landmarks, (BAND,)), mask.shape[:2])
    return bool(band.any() and float(np.asarray(mask)[band].mean()) > 0.5)


def shaded(example_shades: np.ndarray, reference_shade: float) -> np.ndarray:
    """Which examples read as hair above the lip (under HAIR_LINE) and darker there than the reference by more than
    SHADE_MARGIN (bool per example; False wherever a value is NaN)."""
    s = np.asarray(example_shades, np.float64)
    with np.errstate(invalid="ignore"):
        return (s < HAIR_LINE) & (s < reference_shade - SHADE_MARGIN)
