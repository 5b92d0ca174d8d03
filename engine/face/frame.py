"""The face frame: from a photo to an aligned face crop and back.

It owns detect -> align -> region mask -> paste back, so the rest of the engine
works in one canonical crop at the reference's own resolution and never handles
photo coordinates: the user-mask clamp and the photo-frame mask for the debug
pictures live here too. Sizes are (h, w) throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from engine.errors import image_ref
from engine.face.align import scale_of, template_transform, transform_points, warp_crop
from engine.face.detect import Face, eye_distance, find_face, inner_lip_gap
from engine.face.masks import grow_and_feather, lookup_region, region_mask, soften_user_mask, unbent_part, user_mask
from engine.face.pasteback import bend_photo, paste_back
from engine.face.regions import EYES, JAW, NOSE_BASE, PHILTRUM_KEEP, UPPER_LIP, Region
from engine.face.warp import (
    FOLD_AREA,
    anchor_similarity,
    bend_offsets,
    largest_share,
    move_rigidly,
    moved_by,
    reshape_targets,
    target_landmarks,
    thicken,
    uncrossed_share,
    unfolded_share,
    warp_to,
)
from engine.io.images import Photo

MAX_WORK_FACTOR = 4


@dataclass
class AlignedFace:
    face: Face
    transform: np.ndarray  # 2x3, photo -> crop
    crop: np.ndarray  # float32 h x w x 3, 0..255
    landmarks: np.ndarray  # 68 x 2 in crop pixels
    factor: int = 1  # crop size = template size * factor

    @property
    def size(self) -> tuple[int, int]:
        return self.crop.shape[0], self.crop.shape[1]


def work_factor(m: np.ndarray) -> int:
    """How many times the template size matches the face's own resolution (1..4)."""
    return int(np.clip(round(1.0 / max(scale_of(m), 1e-6)), 1, MAX_WORK_FACTOR))


def align_face(photo: Photo, template: dict, detector: str = "hog", index: int | None = None,
               box: tuple[float, float, float, float] | None = None, what: str = "image",
               factor: int | None = 1) -> AlignedFace:
    """Crop at `factor` x the template size; factor None = the face's own resolution, so a
    paste-back is not a blurry upscale."""
    face = find_face(photo.rgb8(), detector, index, box, what)
    m_template = template_transform(face.landmarks, template)
    k = work_factor(m_template) if factor is None else factor
    m = m_template * k
    h, w = (int(v) * k for v in template["size"])
    crop = warp_crop(photo.rgb, m, (h, w))
    return AlignedFace(face, m, crop, transform_points(m, face.landmarks), k)


def to_crop(aligned: AlignedFace, photo_mask: np.ndarray) -> np.ndarray:
    """A photo-frame mask (h, w) in the crop's pixels."""
    h, w = aligned.size
    return np.clip(cv2.warpAffine(photo_mask.astype(np.float32), aligned.transform, (w, h),
                                  flags=cv2.INTER_LINEAR), 0, 1)


@dataclass
class Reshape:
    """A region that takes the guide's shape (the frame's guide landmarks are that target: the guide's shape of the
    region at the reference's anchors): how the crop is bent there, and where."""

    method: str  # affine | tps
    # the bend's points on the reference and where they go: the landmarks and target, and a block region's copies
    bend_from: np.ndarray
    bend_to: np.ndarray
    fade: np.ndarray  # 1 where the region moves with its landmarks, fading to 0 where nothing moves
    # where the photo may change: 1 wherever the bend moved anything (wider than the optimiser's region), so the
    # feathered paste never blends a moved brow with the unmoved one (a doubled brow)
    paste_mask: np.ndarray
    guide_pixels: bool = True  # False: the composite start is the reference's own region bent (Region.guide_pixels)


OPENED = 0.01  # eye distances of inner-lip gap beyond the reference's: a bend that opens the mouth (FaceFrame.laid)


@dataclass
class FaceFrame:
    """Reference and guide in one canonical frame at the reference's work resolution."""

    ref: AlignedFace
    guide: AlignedFace
    mask: np.ndarray  # crop-frame region mask, 0..1
    keep: np.ndarray | None  # crop-frame part of the region where change costs more (the attribute itself)
    user_mask: np.ndarray | None  # photo-frame mask given by the user (a hard limit), if any
    own: np.ndarray | None = None  # crop-frame part where the guide's own pixels start the edit (Region.pixels)
    reshape: Reshape | None = None  # mouths, smiles, eyes, brows take the guide's shape (Region.reshape_anchors)
    # the strength the reshape's target stands for: 1 = the guide's shape; above 1 the shape was carried further
    # (reshaped_frame's reach), so that a strength above 1 bends further than 1 does
    reach: float = 1.0
    _bends: dict[float, np.ndarray] = field(default_factory=dict, repr=False, compare=False)  # bend() by amount

    def share(self, strength: float) -> float:
        """How far (0..1) of the way to this frame's target a strength goes: its size over the frame's reach."""
        return min(1.0, abs(strength) / self.reach)

    def bent(self, amount: float) -> tuple[np.ndarray, np.ndarray]:
        """Reference and guide crops with the region bent `amount` (0..1) of the way from the reference's shape to
        the guide's (unchanged without a reshape)."""
        offsets = self.bend(amount)
        if offsets is None:
            return self.ref.crop, self.guide.crop
        r = self.reshape
        return (moved_by(self.ref.crop, offsets),
                warp_to(self.guide.crop, r.bend_to, self._goal(amount), r.method, r.fade))

    def laid(self, amount: float) -> float | np.ndarray:
        """How much of the guide's pixels a start `amount` (0..1) of the way lays, per crop pixel: `amount`, except in
        a mouth the bend opens wider than the reference's, where all of them. The reference has nothing of its own to
        show there but its lips' inner edges, stretched, and teeth laid half over them looked ghostly (a CLI user's
        smile at strength 0.5)."""
        amount = min(1.0, max(0.0, amount))
        if self.reshape is None or amount in (0.0, 1.0):
            return amount
        goal = self.bent_landmarks(amount)[0]
        if inner_lip_gap(goal) <= inner_lip_gap(self.ref.landmarks) + OPENED * eye_distance(goal):
            return amount
        return amount + (1 - amount) * region_mask(goal, "inner_mouth", self.ref.size)

    def bent_landmarks(self, amount: float) -> tuple[np.ndarray, np.ndarray]:
        """The 68 landmarks of bent(amount)'s reference and guide crops (both at the goal where there is a bend)."""
        if self.reshape is None or amount <= 0:
            return self.ref.landmarks, self.guide.landmarks
        goal = self._goal(amount)[: len(self.ref.landmarks)]  # (a block region's copies follow the landmarks)
        return goal, goal

    def carried(self, change: np.ndarray, previous: FaceFrame, from_strength: float, to_strength: float) -> np.ndarray:
        """A change made over `previous`'s crop bent for `from_strength` (an optimisation's result minus its start),
        bent on to where the same points lie in this frame at `to_strength`: a strength's result warm-starts the next
        one where the start is bent (attribute banks, engine/bank/edit.py; a strength above 1 has a frame of its own,
        reaching further). Unchanged without a reshape, or between equal goals."""
        r = self.reshape
        if r is None or previous.reshape is None:
            return change
        return warp_to(change, previous._goal(previous.share(from_strength)), self._goal(self.share(to_strength)),
                       r.method, r.fade)

    def bend(self, amount: float) -> np.ndarray | None:
        """The reference's bend `amount` of the way to the guide's shape, as crop-pixel offsets (None: no bend)."""
        r = self.reshape
        if r is None or amount <= 0:
            return None
        amount = min(1.0, amount)
        if amount not in self._bends:  # the start and the paste bend alike: computed once
            self._bends[amount] = bend_offsets(self.ref.crop.shape[:2], r.bend_from, self._goal(amount), r.method,
                                               r.fade)
        return self._bends[amount]

    def _goal(self, amount: float) -> np.ndarray:
        """Where the bend's points go, `amount` (at most 1) of the way from the reference's shape to the guide's."""
        r = self.reshape
        return r.bend_from + min(1.0, amount) * (r.bend_to - r.bend_from)

    @property
    def paste_mask(self) -> np.ndarray:
        """Where the photo may change: the region mask, or with a reshape everywhere the bend moved."""
        return self.mask if self.reshape is None else self.reshape.paste_mask

    def paste(self, photo_rgb: np.ndarray, result_crop: np.ndarray, amount: float = 1.0) -> np.ndarray:
        """The edited crop's change, in the photo; a user's mask is a hard promise: nothing changes outside it.
        A reshape (bent `amount` of the way, as the start was) bends the photo itself at its own resolution, and
        only the change from the bent reference crop is pasted (engine/face/pasteback.py bend_photo)."""
        base, start = photo_rgb, self.ref.crop
        offsets = self.bend(amount)
        if offsets is not None:
            base, start = bend_photo(photo_rgb, self.ref.transform, offsets), moved_by(self.ref.crop, offsets)
        replaced = None if self.own is None else (self.own * self.laid(amount), start)  # the guide's own pixels
        image = paste_back(base, self.ref.transform, result_crop - start, self.paste_mask, replaced)
        if self.user_mask is not None:
            a = self.user_mask[..., None]
            image = np.where(a > 0, photo_rgb + a * (image - photo_rgb), photo_rgb)
        return image

    def photo_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The paste mask in photo pixels (h, w): the debug overlay."""
        h, w = size
        return cv2.warpAffine(self.paste_mask, self.ref.transform, (w, h),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def bend_guide(guide: AlignedFace, ref: AlignedFace, spec: Region, method: str) -> AlignedFace:
    """The guide's crop bent onto the reference's geometry (engine/face/warp.py), keeping the region's shape."""
    if method in ("auto", "none") or not spec.anchors:
        return guide
    if method == "similarity":  # the region's anchors (mouth corners...) onto the reference's, nothing bent
        m = anchor_similarity(guide.landmarks, ref.landmarks, spec.anchors)
        if m is None:
            return guide
        crop, landmarks = move_rigidly(guide.crop, guide.landmarks, m)
        return replace(guide, crop=crop, landmarks=landmarks)
    target = target_landmarks(guide.landmarks, ref.landmarks, region_points(spec), spec.anchors)
    return replace(guide, crop=warp_to(guide.crop, guide.landmarks, target, method), landmarks=target)


def region_points(spec: Region) -> tuple[int, ...]:
    return tuple(sorted({i for group in spec.groups for i in group}))


def block_below(landmarks: np.ndarray, points: tuple[int, ...], block: float) -> tuple[np.ndarray, np.ndarray]:
    """(how far below each point its block of hair reaches, its distance to the nearest eye point), in pixels: `block`
    eye distances, but never more than half-way to the eye (some brows sit on the lids)."""
    to_eye = np.linalg.norm(landmarks[list(points)][:, None] - landmarks[list(EYES)][None], axis=2).min(1)
    return np.minimum(block * eye_distance(landmarks), 0.5 * to_eye), to_eye


def limited_moves(landmarks: np.ndarray, target: np.ndarray, groups: tuple[tuple[int, ...], ...], block: float,
                  limit: float) -> np.ndarray:
    """The target with each group's move scaled down so that no point moves further than `limit` x the gap between
    its block's lower edge and the eye: only the skin in that gap stretches, and stretched much more than twice it
    drew lashes and brow hair into streaks and dark blocks (Region.move_limit)."""
    out = np.asarray(target, float).copy()
    for group in groups:
        idx = list(group)
        below, to_eye = block_below(landmarks, group, block)
        move = np.linalg.norm(out[idx] - landmarks[idx], axis=1)
        scale = min(1.0, float(np.min(limit * (to_eye - below) / np.maximum(move, 1e-9))))
        out[idx] = landmarks[idx] + scale * (out[idx] - landmarks[idx])
    return out


def beyond(landmarks: np.ndarray, target: np.ndarray, reach: float) -> np.ndarray:
    """The move to `target` carried `reach` (>= 1) times as far, except that the upper lip, beyond the target, never
    comes closer to the nose than PHILTRUM_KEEP of the photo's own gap (or the target's, if that is closer already).
    Carried as far as the rest, a smile's upper lip rose on under the nose: in a GIMP trial at strength 1.5 the
    lip was gone and the example's teeth and mouth's darkness sat where the philtrum had been."""
    out = target + (reach - 1.0) * (np.asarray(target, float) - landmarks)
    lip = list(UPPER_LIP)
    floor = min(float(np.linalg.norm(target[51] - target[NOSE_BASE])),
                PHILTRUM_KEEP * float(np.linalg.norm(landmarks[51] - landmarks[NOSE_BASE])))
    share = largest_share(lambda s: float(np.linalg.norm(target[51] + s * (out[51] - target[51]) - out[NOSE_BASE]))
                          >= floor, 12, 1.0)
    out[lip] = target[lip] + share * (out[lip] - target[lip])
    return out


def reshaped_frame(ref: AlignedFace, guide: AlignedFace, spec: Region, warp: str, reach: float = 1.0) -> FaceFrame:
    """A region whose shape is the attribute (eye opening, brow height, a smile's lift). Fitting the guide to the
    reference's landmarks would undo the edit, so both go to one target: the guide's shape of the region placed at
    the reference's anchors (each eye's corners; a smile's eyes and nose), moved the region's shape_share of the way
    (a brow at most its limit; nothing across the jaw line), the rest of the face where the reference has it. The
    mask covers the region at both shapes; the start bends the reference's own region to the target
    (FaceFrame.bent). `reach` (a strength above 1) carries the move that much further, the guide's pixels with it,
    under the same limits."""
    method = warp if warp in ("affine", "tps") else "affine"
    target = reshape_targets(guide.landmarks, ref.landmarks, spec.groups, spec.reshape_anchors,
                             spec.face_scaled_opening, spec.placed_per_half)
    reach = max(1.0, reach)  # strengths up to 1 share the guide's shape as their full bend
    target = beyond(ref.landmarks, ref.landmarks + spec.shape_share * (target - ref.landmarks), reach)
    if spec.block and spec.move_limit:
        target = limited_moves(ref.landmarks, target, spec.groups, spec.block, spec.move_limit)
    # nothing that starts inside the jaw line is moved across it (the whole move is cut: one share for all groups)
    target = ref.landmarks + uncrossed_share(ref.landmarks, target, region_points(spec), JAW) * (
        target - ref.landmarks)
    # nor so far that the bend turns the picture over (a frontal guide's smile on a turned head: a zigzag jaw)
    iod = eye_distance(ref.landmarks)
    target = ref.landmarks + unfolded_share(ref.landmarks, target, ref.size, FOLD_AREA * iod**2) * (
        target - ref.landmarks)
    guide = replace(guide, crop=warp_to(guide.crop, guide.landmarks, target, method), landmarks=target)

    def both(**size: float) -> np.ndarray:
        return np.maximum(region_mask(ref.landmarks, spec, ref.size, **size),
                          region_mask(target, spec, ref.size, **size))

    # the bend fades out over a ring several times wider than the move: a narrow ring folds the skin next to a
    # raised brow over itself (the brow smeared upwards)
    bend_from, bend_to = ref.landmarks, target
    if spec.block:
        points = region_points(spec)
        below, _ = block_below(ref.landmarks, points, spec.block)
        bend_from, bend_to = thicken(ref.landmarks, target, points, spec.block * iod, below)
    moved = float(np.linalg.norm(target - ref.landmarks, axis=1).max()) / iod
    ring = spec.feather + 2 * moved
    fade = both(grow=spec.grow + 1.5 * ring, feather=ring)  # 1 on the region's own points, then the ring
    mask = both()
    paste = np.maximum(grow_and_feather((fade > 0).astype(np.float32), iod * spec.feather, iod * spec.feather,
                                        shape=True), mask)
    own = region_mask(target, spec.pixels, ref.size) * mask if spec.pixels else None
    keep = region_mask(target, spec.keep, ref.size) * mask if spec.keep else None
    return FaceFrame(ref, guide, mask, keep, None, own, Reshape(method, bend_from, bend_to, fade, paste,
                                                                    spec.guide_pixels), reach)


def frame_faces(ref_photo: Photo, guide_photo: Photo, template: dict, region: str, detector: str = "hog",
                face: int | None = None, guide_face: int | None = None,
                box: tuple[float, float, float, float] | None = None, mask=None, warp: str = "auto",
                reach: float = 1.0) -> FaceFrame:
    """Detect, align and mask: the guide is cropped at the reference's work factor so both share one frame.
    `mask` (path or array the size of the reference, white = edit) is the region when region is a user mask."""
    spec = lookup_region(region)
    ref = align_face(ref_photo, template, detector, face, box, image_ref("reference"), factor=None)
    guide = align_face(guide_photo, template, detector, guide_face, None, image_ref("guide"), factor=ref.factor)
    if spec.reshape and warp in ("auto", "affine", "tps"):  # mouths, smiles, eyes and brows take the guide's shape
        return reshaped_frame(ref, guide, spec, warp, reach)
    spec = lookup_region(spec.unbent) if spec.unbent else spec
    guide = bend_guide(guide, ref, spec, warp)
    if spec.user_mask:
        full = soften_user_mask(user_mask(mask, ref_photo.rgb.shape[:2]), ref.face.eye_distance)
        return FaceFrame(ref, guide, to_crop(ref, full), None, full)
    crop_region = region_mask(ref.landmarks, spec, ref.size)
    keep = region_mask(guide.landmarks, spec.keep, ref.size) * crop_region if spec.keep else None
    own = unbent_part(spec.pixels, guide.landmarks, ref.landmarks, ref.size) * crop_region if spec.pixels else None
    return FaceFrame(ref, guide, crop_region, keep, None, own)
