"""Region masks from 68 landmarks: pure functions from points to float masks.

A mask is float32 H x W in 0..1: the landmark hulls of a region (engine/face/regions.py),
grown by a margin relative to the face size, then feathered with a Gaussian so edits
fade out instead of ending in a seam. A user's mask (a GIMP selection, --mask) with a
hard edge gets the same kind of fade, inside its own outline (`soften_user_mask`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from engine.errors import EXIT_INPUT, EXIT_USAGE, FATError, arg_ref
from engine.face.detect import eye_distance
from engine.face.regions import BROWS, JAW, PARTS, REGIONS, Region


def lookup_region(name: str) -> Region:
    if name in REGIONS:
        return REGIONS[name]
    if name in PARTS:
        return PARTS[name]
    raise FATError(f"unknown region {name!r}; choose one of {', '.join(REGIONS)}.", EXIT_USAGE)


def region_mask(landmarks: np.ndarray, region: str | Region, size: tuple[int, int],
                grow: float | None = None, feather: float | None = None) -> np.ndarray:
    """Feathered mask (h, w) of a landmark region for landmarks given in the same pixel frame."""
    spec = lookup_region(region) if isinstance(region, str) else region
    if spec.user_mask:
        raise FATError(f"region {spec.label!r} is the user's own mask: give {arg_ref('mask')}.",
                       EXIT_USAGE)
    iod = eye_distance(landmarks)
    hulls = []
    for group in spec.groups:
        pts = np.asarray(landmarks, float)[list(group)]
        if spec.forehead:  # extend the hull up to the forehead
            top = pts[[i for i, j in enumerate(group) if j in BROWS]].copy()
            top[:, 1] -= spec.forehead * iod
            pts = np.vstack([pts, top])
        if spec.shrink != 1.0:  # keep the feathered edge inside the face outline
            centre = pts.mean(0)
            pts = centre + (pts - centre) * spec.shrink
        hulls.append(pts)
    return grow_and_feather(filled_hulls(hulls, size), iod * (spec.grow if grow is None else grow),
                            iod * (spec.feather if feather is None else feather), shape=True)


def unbent_part(part: str, guide_landmarks: np.ndarray, ref_landmarks: np.ndarray,
                size: tuple[int, int]) -> np.ndarray:
    """Where a guide's own pixels (a region's `pixels` part) go when nothing bends the reference to the guide's
    shape: the guide's part and the reference's own, since a closing eye or mouth must cover the open one it
    replaces (a squint pasted over an open eye left the reference's iris above it as a blue band)."""
    return np.maximum(region_mask(guide_landmarks, part, size), region_mask(ref_landmarks, part, size))


def face_interior(landmarks: np.ndarray, size: tuple[int, int], margin_px: float) -> np.ndarray:
    """0 outside the face (the hull of the jaw and brows) rising to 1 at `margin_px` inside its outline: where a
    blur of a photo's face is the face's own and not its background's."""
    inside = filled_hulls([np.asarray(landmarks, float)[list(JAW + BROWS)]], size) >= 0.5
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(depth / max(margin_px, 1e-6), 0.0, 1.0).astype(np.float32)


def filled_hulls(point_sets: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The convex hull of each point set, filled and anti-aliased (1/16 px precision), as 0..1."""
    hard = np.zeros(size, np.uint8)
    for pts in point_sets:
        hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
        cv2.fillConvexPoly(hard, hull, 255, lineType=cv2.LINE_AA, shift=4)
    return hard.astype(np.float32) / 255.0


def grow_and_feather(mask: np.ndarray, grow_px: float, feather_px: float, shape: bool = False) -> np.ndarray:
    """`mask` grown by a disk of `grow_px` and feathered by a Gaussian of `feather_px` / 2. `shape`: the mask is a
    filled outline (anti-aliased at most), grown as everything within the radius of
    it (of every pixel it touches, where it is thinner than a pixel: a closed eye's): a distance transform, linear in
    the pixels, where a dilation with a disk kernel took 0.47 s for a 117 px radius (a bend's ring). Other masks
    (a user's soft selection) are dilated as they are."""
    out = mask.astype(np.float32)
    r = int(round(grow_px))
    if r > 0 and shape:
        inside = out >= 0.5
        if not inside.any():  # a hull thinner than a pixel: every pixel it touches
            inside = out > 0
        distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        out = (distance <= r).astype(np.float32)
    elif r > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        out = cv2.dilate(out, kernel)
    if feather_px > 0.5:
        out = cv2.GaussianBlur(out, (0, 0), feather_px / 2.0)
    out[out < 1.0 / 512] = 0.0  # cut the Gaussian's invisible tails: untouched means untouched
    return np.clip(out, 0.0, 1.0)


def user_mask(path_or_array, size: tuple[int, int]) -> np.ndarray:
    """A user's mask (image file, bytes, PIL image or array; white = edit) as 0..1, the size (h, w) of the photo.

    The rule, so that a mask means what it looks like: the mask is the luminance of its colour
    (white = edit, black = keep), alpha ignored, even for an opaque RGBA image. Only when the colour is
    the same everywhere does the shape come from the alpha channel (opaque = edit): a black or white
    layer painted on transparency. A mask with nothing to edit (all black, or fully transparent) and an
    array with NaN or inf are errors. Files are read like photos (size limits, truncation, EXIF
    orientation); arrays as engine.io.images.mask_channels says.
    """
    from engine.io.images import luma, mask_channels

    colour, alpha = mask_channels(path_or_array)
    flat = colour.reshape(-1, colour.shape[-1]) if colour.ndim == 3 else colour.reshape(-1, 1)
    uniform = bool((flat.min(axis=0) == flat.max(axis=0)).all())
    if uniform and alpha is not None and alpha.min() != alpha.max():
        m = alpha  # a uniform layer: its shape is in the alpha
    else:
        m = luma(colour) if colour.ndim == 3 else colour
        if alpha is not None and alpha.max() == 0:
            m = np.zeros_like(m)  # fully transparent: nothing painted
    h, w = size
    if m.shape != (h, w):
        raise FATError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}; they must match.", EXIT_INPUT)
    m = np.clip(m, 0, 1).astype(np.float32)
    if m.max() < 0.5 / 255:
        raise FATError("the mask is all black (or fully transparent): nothing to edit. Paint the area to edit "
                       "white on black.", EXIT_INPUT)
    return m


USER_MASK_FEATHER = 0.2  # x eye distance: the fade given to a hard-edged user mask (the regions use 0.08..0.2)


def soft_edge_width(m: np.ndarray) -> float:
    """Mean width in pixels of a mask's fade: 0 for a hard edge, about 1 anti-aliased, more when feathered."""
    inside = (m >= 0.5).astype(np.uint8)
    edge = np.count_nonzero(inside & (1 - cv2.erode(inside, np.ones((3, 3), np.uint8))))
    partial = np.count_nonzero((m > 0.02) & (m < 0.98))
    return partial / max(1, edge)


def soften_user_mask(m: np.ndarray, eye_px: float) -> np.ndarray:
    """A hard-edged user mask (a plain rectangle selection) fades in over USER_MASK_FEATHER x the face's eye
    distance, all inside its outline: no seam or tone jump at the edge, and still nothing changes outside it.
    A mask that already fades (a feathered selection, a soft brush) is the user's choice and is kept."""
    width = USER_MASK_FEATHER * eye_px
    if width < 1 or soft_edge_width(m) >= width / 2:
        return m
    inside = (m >= 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    width = min(width, max(1.0, float(dist.max())))  # a small mask still reaches full strength at its centre
    t = np.clip(dist / width, 0.0, 1.0)
    return (t * t * (3 - 2 * t) * m).astype(np.float32)  # smoothstep: no kink where the fade meets the inside


def resample(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (h, w) mask averaged down to a feature map's (h', w'), shaped (1, 1, h', w')."""
    m = mask.reshape(1, 1, *mask.shape[-2:]).float()
    return F.adaptive_avg_pool2d(m, size) if size[0] <= m.shape[-2] else F.interpolate(
        m, size=size, mode="bilinear", align_corners=False)
