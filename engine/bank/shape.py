"""The shape an added attribute bends to: the mean of the chosen examples' shapes, not one example's.

One example's smile is its own: a teeth-together grin, a lopsided smirk, a mouth wider than the person's. The mean
of the k nearest smiles is a typical one, as the feature target is the mean of their features (Deep Feature
Interpolation's reasoning, applied to the landmarks). Pure maths on landmarks, plus one bend of the pixel
example's crop so that its lips and teeth follow the mean shape.
"""

from __future__ import annotations

import numpy as np

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


def bent_to_mean_shape(crop: np.ndarray, marks: np.ndarray, shapes: list[np.ndarray],
                       region: Region) -> tuple[np.ndarray, np.ndarray]:
    """(crop, landmarks) of the pixel example bent so that its region takes the mean shape of `shapes`."""
    target = mean_shape(shapes, marks, region)
    return warp_to(crop, marks, target, "affine"), target
