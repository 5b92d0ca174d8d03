"""The shape an added attribute bends to: the mean of the chosen examples' shapes, not one example's.

One example's smile is its own: a teeth-together grin, a lopsided smirk, a mouth wider than the person's. The mean
of the k nearest smiles is a typical one, as the feature target is the mean of their features (Deep Feature
Interpolation's reasoning, applied to the landmarks). Pure maths on landmarks, plus one bend of the pixel
example's crop so that its lips and teeth follow the mean shape.
"""

from __future__ import annotations

import numpy as np

from engine.face.detect import eye_distance, inner_lip_gap
from engine.face.regions import Region
from engine.face.warp import target_landmarks, warp_to


def mean_shape(shapes: list[np.ndarray], onto: np.ndarray, region: Region) -> np.ndarray:
    """`onto` (68 x 2) with each of the region's landmark groups replaced by the mean of that group in `shapes`,
    each shape placed on `onto` by the group's reshape anchors (a smile: the eyes and nose), so faces of other
    sizes and poses average in one frame."""
    out = np.asarray(onto, float).copy()
    for group, anchors in zip(region.groups, region.reshape_anchors, strict=True):
        idx = list(group)
        out[idx] = np.mean([target_landmarks(np.asarray(s, float), onto, group, anchors, region.placed_per_half)[idx]
                            for s in shapes], axis=0)
    return out


LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)  # the outer and inner lower lip, without the mouth corners
INNER_LIPS = frozenset(range(60, 68))


def _with_gap(marks: np.ndarray, gap: float) -> np.ndarray:
    """`marks` with the lower lip moved square to the eye line until the inner-lip gap is `gap` eye distances
    (engine/bank/measure.py mouth_open)."""
    out = np.asarray(marks, float).copy()
    eyes = out[42:48].mean(0) - out[36:42].mean(0)
    down = np.array([-eyes[1], eyes[0]]) / (np.linalg.norm(eyes) + 1e-9)
    for _ in range(3):  # the gap is measured along the lip pairs, not quite square to the eye line
        short = gap * eye_distance(out) - inner_lip_gap(out)
        if abs(short) <= 1e-3:
            break
        out[list(LOWER_LIP)] += short * down
    return out


def opened_at_least(marks: np.ndarray, gap: float) -> np.ndarray:
    """`marks` with the lower lip lowered until the inner-lip gap is at least `gap` eye distances: a smile added to a
    face caught speaking keeps its mouth open."""
    return _with_gap(marks, gap) if inner_lip_gap(marks) < gap * eye_distance(marks) else np.asarray(marks, float)


def closed_at_most(marks: np.ndarray, gap: float) -> np.ndarray:
    """`marks` with the lower lip raised until the inner-lip gap is at most `gap` eye distances: a smile taken away
    never parts lips that were closed (a neutral face at strength -1 took another face's parted lips, teeth showing)."""
    return _with_gap(marks, gap) if inner_lip_gap(marks) > gap * eye_distance(marks) else np.asarray(marks, float)


def bent_to_mean_shape(crop: np.ndarray, marks: np.ndarray, shapes: list[np.ndarray],
                       region: Region, open_at_least: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(crop, landmarks) of the pixel example bent so that its region takes the mean shape of `shapes`, its mouth
    open at least `open_at_least` eye distances (the reference's own opening: opened_at_least)."""
    target = opened_at_least(mean_shape(shapes, marks, region), open_at_least)
    return warp_to(crop, marks, target, "affine"), target


def closed_to(crop: np.ndarray, marks: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """(crop, landmarks) of an example whose mouth is bent closed to at most `gap` eye distances (the reference's
    own opening: closed_at_most); unchanged where it is not that open."""
    target = closed_at_most(marks, gap)
    if np.array_equal(target, marks):
        return crop, marks
    return warp_to(crop, marks, target, "affine"), target
