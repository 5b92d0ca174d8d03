"""Classic compositing of the guide's region into the reference: the optimisation's
start image, and the baselines it is measured against. Numbers from the recipe."""

from __future__ import annotations

import cv2
import numpy as np

from engine.face.masks import face_interior, region_mask
from engine.io.images import luma
from engine.objective.recipes import Recipe

Stats = tuple[np.ndarray, np.ndarray]  # (guide's, reference's) pixels that colour statistics are taken over


def colour_match(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, recipe: Recipe,
                 stats: Stats | None = None) -> np.ndarray:
    """Shift src's Lab mean/std inside the mask to dst's (float 0..255 RGB in, out). `stats` (bool, src's and dst's):
    the pixels each side's statistics come from, where narrower than the mask (start_image: not the reference's
    mouth opening; an open smile's teeth in the reference's statistics turned a closing mouth's corners green)."""
    m = mask > 0.5
    s_m, d_m = (m, m) if stats is None else (m & stats[0], m & stats[1])
    if s_m.sum() < 10 or d_m.sum() < 10:
        s_m, d_m = m, m
    if m.sum() < 10:
        return src.copy()
    s_lab = cv2.cvtColor(np.clip(src, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    d_lab = cv2.cvtColor(np.clip(dst, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    out = s_lab.copy()
    for c in range(3):
        s_mu, s_sd = s_lab[..., c][s_m].mean(), s_lab[..., c][s_m].std() + 1e-6
        d_mu, d_sd = d_lab[..., c][d_m].mean(), d_lab[..., c][d_m].std() + 1e-6
        # keep the guide's contrast on L (teeth vs lips), move its mean; match chroma fully
        gain = 1.0 if c == 0 else float(np.clip(d_sd / s_sd, recipe.chroma_gain_min, recipe.chroma_gain_max))
        out[..., c] = (s_lab[..., c] - s_mu) * gain + d_mu
    return np.clip(cv2.cvtColor(out, cv2.COLOR_Lab2RGB) * 255.0, 0, 255)


def feathered_paste(guide: np.ndarray, reference: np.ndarray, mask: np.ndarray, recipe: Recipe,
                    stats: Stats | None = None) -> np.ndarray:
    return _feathered(colour_match(guide, reference, mask, recipe, stats), reference, mask)


def seamless_clone(guide: np.ndarray, reference: np.ndarray, mask: np.ndarray, recipe: Recipe,
                   stats: Stats | None = None) -> np.ndarray:
    """OpenCV's Poisson blending of the colour-matched guide region, then feathered."""
    return _cloned(colour_match(guide, reference, mask, recipe, stats), reference, mask)


def _feathered(matched: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    a = mask[..., None]
    return reference * (1 - a) + matched * a


def _cloned(matched: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hard = (mask > 0.05).astype(np.uint8) * 255
    ys, xs = np.nonzero(hard)
    if len(xs) == 0:
        return reference.copy()
    # seamlessClone needs the region strictly inside the image
    hard[:2], hard[-2:], hard[:, :2], hard[:, -2:] = 0, 0, 0, 0
    ys, xs = np.nonzero(hard)
    centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    src = np.clip(matched, 0, 255).astype(np.uint8)
    dst = np.clip(reference, 0, 255).astype(np.uint8)
    cloned = cv2.seamlessClone(src, dst, hard, centre, cv2.NORMAL_CLONE).astype(np.float32)
    return _feathered(cloned, reference, mask)


def composite(guide: np.ndarray, reference: np.ndarray, mask: np.ndarray, recipe: Recipe,
              stats: Stats | None = None) -> np.ndarray:
    """Poisson blending at the region's edge, the colour-matched guide itself at its core.

    seamlessClone alone lets the boundary pull the region's interior towards the
    reference (a dark open mouth fades, a beard bleeds in); keeping the guide's own
    pixels where the mask is solid keeps the attribute while the edge stays seamless.
    The guide is colour-matched once for both.
    """
    core = np.clip((mask - recipe.core_start) / recipe.core_width, 0.0, 1.0)[..., None]
    matched = colour_match(guide, reference, mask, recipe, stats)
    return _cloned(matched, reference, mask) * (1 - core) + _feathered(matched, reference, mask) * core


def folds_only(guide: np.ndarray, reference: np.ndarray, own: np.ndarray, mask: np.ndarray,
               recipe: Recipe, guide_face: np.ndarray | None = None, stats: Stats | None = None) -> np.ndarray:
    """The guide's own pixels in `own`; elsewhere the reference with the guide's mid-frequency band of brightness
    laid over it (folds and dimples move; texture, stubble, shading, colour and beards stay the reference's).
    `guide_face` (0..1, masks.face_interior): where the guide's band is its face's; elsewhere (its background, the
    edge of a turned face) the reference is left as it is. A band in every colour channel laid a bank example's
    background edge on a cheek as a rainbow streak, and the reference's red lips taken away left green corners."""
    w = reference.shape[1]
    g = colour_match(guide, reference, mask, recipe, stats)

    def band(x: np.ndarray) -> np.ndarray:
        gray = luma(x)
        return (cv2.GaussianBlur(gray, (0, 0), recipe.band_fine * w)
                - cv2.GaussianBlur(gray, (0, 0), recipe.band_coarse * w))

    folds = band(g) - band(reference)
    if guide_face is not None:
        folds = folds * guide_face
    a = own[..., None]
    return g * a + (reference + folds[..., None]) * (1 - a)


def not_skin(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Eyes and brows (bool): left out of both sides' colour statistics. An eyes region matched over a squinting
    guide's skin and white brows against a reference's blue irises and dark brows came out with blue lids and orange
    cheeks (an attribute bank's eyes_closed on ../shared/faces/jennifer_aniston_2.jpg)."""
    return region_mask(landmarks, "eyes_and_brows", size) >= 0.5


def mouth_opening(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The inner lips' polygon itself (bool): a closed mouth's is a line, nothing."""
    return region_mask(landmarks, "inner_mouth", size, grow=0.0, feather=0.0) >= 0.5


def start_image(kind: str, reference: np.ndarray, guide: np.ndarray, mask: np.ndarray, seed: int,
                recipe: Recipe, own: np.ndarray | None = None,
                landmarks: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The optimisation's start (options.INITS): a blend of the guide's region, the reference, or noise.
    With `own` (a region's `pixels` part) the composite takes only that part's pixels and, inside the guide's face,
    its folds (folds_only); the seamless and feathered baselines stay plain pastes. `landmarks` (the reference's,
    the guide's, in the crop): the reference's colours are taken from its skin and lips, not its mouth's opening."""
    if kind == "noise":
        rng = np.random.default_rng(seed)
        noise = rng.uniform(0, 255, reference.shape).astype(np.float32)
        return reference * (1 - mask[..., None]) + noise * mask[..., None]
    if kind == "reference":
        return reference.copy()
    size = reference.shape[:2]
    # the reference's colours are its skin's and lips': its mouth's opening (teeth, the dark inside) is what a closing
    # mouth replaces. The guide's are all it brings, teeth too: matched over its lips and skin alone, its teeth came
    # out cyan or pink (bench/quality.py smile pairs: happy* 0.79 -> 0.53)
    stats = None
    if landmarks is not None:  # (guide's side, reference's side): skin and lips, the guide's teeth too
        ref_side = ~mouth_opening(landmarks[0], size) & ~not_skin(landmarks[0], size)
        stats = (~not_skin(landmarks[1], size), ref_side)
    if kind == "composite" and own is not None:
        face = (None if landmarks is None else  # the band reaches ~2 coarse sigmas from an edge
                face_interior(landmarks[1], size, 2 * recipe.band_coarse * reference.shape[1]))
        guide = folds_only(guide, reference, own, mask, recipe, face, stats)
        if stats is not None:  # outside `own` the blend's source is the reference's own pixels: its side's rule
            stats = (np.where(own > 0.5, stats[0], stats[1]), stats[1])
    blend = {"composite": composite, "seamless": seamless_clone, "feathered": feathered_paste}[kind]
    return blend(guide, reference, mask, recipe, stats)


def frame_start(frame, strength: float, kind: str, seed: int, recipe: Recipe) -> np.ndarray:
    """The optimisation's start from a face frame (engine/face/frame.py FaceFrame, a guide photo's or a bank
    example's) at `strength`, which goes frame.share(strength) (0..1) of the way to the frame's target: the bent
    reference, and the guide's region laid over it by `kind` (options.INITS); brows (Region.guide_pixels False)
    start from the person's own, moved."""
    amount = frame.share(strength)
    ref, guide = frame.bent(amount)
    if frame.reshape is not None and not frame.reshape.guide_pixels and kind == "composite":
        kind = "reference"
    init = start_image(kind, ref, guide, frame.mask, seed, recipe, frame.own, frame.bent_landmarks(amount))
    laid = frame.laid(amount)
    return ref + (laid[..., None] if isinstance(laid, np.ndarray) else laid) * (init - ref)
