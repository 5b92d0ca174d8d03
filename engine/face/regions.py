"""The editable regions as data: which landmarks, how far grown and feathered.

Standard library only (the options schema, and through it the GIMP plug-in, lists
the region names without importing numpy). Distances are fractions of the eye
distance, so a region means the same on every face size. A new region is one
entry in REGIONS; engine/face/masks.py turns an entry into a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

# The 68-point layout (iBUG 300-W, as dlib's shape predictor gives it).
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
EYES = tuple(range(36, 48))
MOUTH = tuple(range(48, 68))
INNER_MOUTH = tuple(range(60, 68))
MOUTH_ANCHORS = (48, 54, 51, 57)  # corners, upper-lip top, lower-lip bottom
UPPER_LIP = (49, 50, 51, 52, 53, 61, 62, 63)
NOSE_BASE = 33
# beyond the guide's shape (strength above 1) the upper lip keeps at least this share of the gap between its top (51)
# and the nose base (33): the philtrum's length is the person's (engine/face/frame.py beyond)
PHILTRUM_KEEP = 0.7
MOUTH_CORNERS = ((48, 54),)  # a mouth's shape (its opening) placed by the reference's own corners
EYE_CORNERS = ((36, 39), (42, 45))  # each eye's corners
FACE_FRAME = (36, 39, 42, 45, 27, 30, 33)  # eye corners and the nose: what a smile does not move
# How the guide's crop is fitted to the reference's landmarks before blending (engine/face/warp.py).
# auto: the region's own choice (mouths, smiles, eyes and brows are reshaped, piecewise-affine; the rest is not bent)
WARPS = ("auto", "none", "similarity", "affine", "tps")


@dataclass(frozen=True)
class Region:
    label: str  # what a GIMP user reads
    groups: tuple[tuple[int, ...], ...] = ()  # landmark groups, each filled as a convex hull
    grow: float = 0.0  # dilation, x eye distance
    feather: float = 0.0  # Gaussian edge, x eye distance
    forehead: float = 0.0  # brow points of a group are copied this far up (the hull reaches the forehead)
    shrink: float = 1.0  # hull scaled about its centre (keeps a feathered edge inside the face outline)
    keep: str | None = None  # a PART of the guide where change costs more: the attribute itself (the opening)
    user_mask: bool = False  # the region is the user's mask / GIMP selection, not landmarks
    anchors: tuple[int, ...] = ()  # with --warp: the landmarks whose reference positions place the guide's shape
    # a PART of the guide whose own pixels start the edit; elsewhere in the region only the guide's mid-frequency
    # shading (its folds) is laid over the reference's own texture and shading (None: the guide's pixels throughout)
    pixels: str | None = None
    # a region whose shape is the attribute (eye opening, brow height, a smile's lift): per landmark group, the
    # landmarks that place the guide's shape of that group on the reference (each eye by its own corners); the
    # reference's own region is bent to that shape before the guide's pixels are laid over it (engine/face/frame.py
    # reshaped_frame)
    reshape_anchors: tuple[tuple[int, ...], ...] = ()
    # False: the composite start is the reference's own region bent to the guide's shape (brows: the person's own
    # brows, moved to the guide's height); the guide's features still set the attribute target
    guide_pixels: bool = True
    # a reshaped region bent as a block this thick (x eye distance) about its points: a brow rises whole instead of
    # its hair stretching towards the still eye below (0: the lids of an eye open apart, point by point)
    block: float = 0.0
    # with a block: each group moves at most this many times the gap between its block and the eye (0: no limit).
    # bench/quality.py eyebrows pairs: unlimited, mobileface 0.737 and the brow height moved 0.69 of the way to the
    # guide's, with streaked lashes and blocky brows on the contact sheet where a brow rose more than its gap; at
    # 1.0, 0.817 and 0.55 (seamlessClone: 0.762 and 0.54), and natural brows; 0.8: 0.834 / 0.50; 1.3: 0.787 / 0.61
    move_limit: float = 0.0
    # a reshaped region's shape moves this share of the way from the reference's to the guide's (as its anchors place
    # it): a mouth's size and lip shape are part of who someone is, while a smile is mostly its corners' lift.
    # bench/quality.py smile pairs, mobileface / happy*: 1.0: 0.705 / 0.87; 0.85: 0.743 / 0.83; 0.75: 0.771 / 0.74
    # (0.784 / 0.74 once no point may cross the jaw line; 0.783 / 0.71 with the anchors fitted by least squares;
    # 0.788 / 0.72 with masks grown by a distance transform; 0.795 / 0.75 with the folds as brightness from the
    # guide's face only and the reference's mouth opening out of the colour statistics);
    # 0.5: 0.844 / 0.51; the corners at 1.0 and the rest at 0.65: 0.761 / 0.87, but a jagged jaw on a turned face
    # (at the time of 0.771 / 0.74: the lips pasted and nothing bent 0.750 / 0.58, the mouth region 0.782 / 0.40;
    # now the lips pasted 0.783 / 0.38 and the reshaped mouth region 0.844 / 0.14)
    shape_share: float = 1.0
    # with two reshape anchors (a mouth's corners): how far the guide's shape across the corners' line (its opening,
    # and its lips' height with it) takes the faces' scale (eye distances) instead of the corners'
    # (engine/face/warp.py scaled_opening). A wide guide mouth placed by a narrow one's corners shrank its opening
    # with the width, but a jaw's drop goes with the face. bench/quality.py mouth pairs, mobileface / opened /
    # mouth_open moved: 0: 0.837 / 9/10 (jeff_bezos_1 at 0.077) / 0.65; 0.5: 0.826 / 10/10 (jeff_bezos_1 0.106) /
    # 0.79; 1: 0.808 / 10/10 / 0.94
    face_scaled_opening: float = 0.0
    # placed by the eyes and nose (FACE_FRAME), each half of the shape takes the width of its half of the reference's
    # face (engine/face/warp.py foreshortened): a shape with no pose of its own, the mean of a bank's examples, on a
    # turned head. Set by the bank's mean-shape smile (engine/bank/edit.py), not for a guide photo's own shape
    placed_per_half: bool = False
    # a PART that stands for the region wherever nothing is bent to a guide's or a bank example's shape (--warp none
    # / similarity): a smile's mouth, cheeks and nasolabial folds (None: the region itself)
    unbent: str | None = None

    @property
    def reshape(self) -> bool:
        return bool(self.reshape_anchors)


REGIONS: dict[str, Region] = {
    # an opening is a change of shape: the guide's mouth, placed by the reference's own corners (its width and
    # corners stay the person's), and the reference's lips, chin and cheeks bent to its opening; the guide's lips
    # and teeth as pixels, its philtrum, moustache and chin only as shading folds; the opening half-way to the
    # face's scale (face_scaled_opening). bench/quality.py mouth pairs: mobileface 0.825, opened 10/10 (before the
    # opening's scale: 0.837, 9/10, jeff_bezos_1 at 0.077; 10/10 with a disk-kernel dilation of the masks, 0.082);
    # pasted at the corners without bending (mouth_area): 0.760, 9/10; grow 0.22 without the inner-mouth keep: 0.815,
    # 9/10; placed by the eyes and nose at share 0.9: 0.750, 10/10; seamlessClone: 0.733, 8/10
    "mouth": Region("Mouth", (MOUTH,), 0.1, 0.2, keep="inner_mouth", pixels="lips", reshape_anchors=MOUTH_CORNERS,
                    face_scaled_opening=0.5, unbent="mouth_area"),
    # a smile moves more than the lips: the mouth takes shape_share of the guide's shape in the reference's face frame
    # (its corners lift) and the reference's own cheeks and nasolabial folds are bent along with it; only the guide's
    # lips and teeth come as pixels (its cheeks brought its beard, moustache and shadows along)
    "smile": Region("Smile (mouth and cheeks)", (MOUTH,), 0.1, 0.2, pixels="lips", reshape_anchors=(FACE_FRAME,),
                    shape_share=0.75, unbent="smile_area"),
    # an eye's opening is its shape: each eye placed by its own corners; the guide's lids and lashes as pixels, its
    # brows, eye shadow and under-eye skin only as folds. bench/quality.py eyes pairs: mobileface 0.818 -> 0.867, the
    # judges' eye openness moved 0.18 -> 0.15 of the way (seamlessClone 0.19; 0/7 half-way each: the judge's eye
    # aspect ratio hardly follows the eyes, a seamless paste of the whole upper face moved it 0.43), where the guide's
    # dark brows and wrinkled lids had come along with its eyes (contact sheet: Clooney's on Zuckerberg)
    "eyes": Region("Eyes", (EYES[:6], EYES[6:]), 0.22, 0.15, reshape_anchors=EYE_CORNERS, pixels="eye_openings"),
    # each brow placed by its eye's corners, so it keeps the guide's height above the eye
    # (bench/quality.py eyebrows pairs: the guide's brow pixels moved the brows further but cost identity)
    "eyebrows": Region("Eyebrows", (BROWS[:5], BROWS[5:]), 0.08, 0.08, reshape_anchors=EYE_CORNERS,
                       guide_pixels=False, block=0.08, move_limit=1.0),
    "nose": Region("Nose", (NOSE,), 0.15, 0.15, anchors=(27, 31, 35)),
    "upper_face": Region("Upper face", (BROWS + EYES + (27, 28),), 0.25, 0.2),
    "lower_face": Region("Lower face", (JAW[3:14] + NOSE[4:] + MOUTH,), 0.0, 0.2, shrink=0.88),
    "face": Region("Whole face", (JAW + BROWS,), 0.0, 0.2, forehead=0.45, shrink=0.88),
    "selection": Region("Selection / mask", user_mask=True),
}

# Parts used inside the engine (keep-masks), never offered as a region.
PARTS: dict[str, Region] = {
    "inner_mouth": Region("Inner mouth", (INNER_MOUTH,), 0.05, 0.08),
    "lips": Region("Lips", (MOUTH,), 0.03, 0.05),
    # the eyes where a guide's own pixels go (Region.pixels): each eye's opening grown by 0.03 eye distances (its lid
    # margin and lashes); the rest of the eyes region takes only the guide's folds, so the reference keeps its own
    # brows, eye shadow and under-eye skin. Coloured from the skin around them (composite.not_skin)
    "eye_openings": Region("Eye openings", (EYES[:6], EYES[6:]), 0.03, 0.04),
    # what is not skin around the eyes, left out of the colour statistics (engine/objective/composite.py)
    "eyes_and_brows": Region("Eyes and brows", (EYES[:6], EYES[6:], BROWS[:5], BROWS[5:]), 0.05, 0.0),
    # the mouth where nothing is bent (Region.unbent: --warp none / similarity): the guide's lips and
    # teeth as pixels, its philtrum, moustache and chin only as shading folds (bench/quality.py mouth pairs: identity
    # 0.747 -> 0.762, opened 8/10 -> 9/10 against the guide's pixels throughout)
    "mouth_area": Region("Mouth area", (MOUTH,), 0.22, 0.18, keep="inner_mouth", anchors=MOUTH_ANCHORS,
                         pixels="lips"),
    # the smile where nothing is bent (Region.unbent: --warp none / similarity; an attribute bank's edit that pastes
    # nothing): the mouth, cheeks and nasolabial folds, the guide's lips as pixels and its folds as shading.
    # bench/bank_quality.py smiling, unbent (session 11): 7-8/15 smiling, identity kept in 13-14/15; with the smile's
    # own mouth-only mask, 4/15 and 15/15
    "smile_area": Region("Smile area", (MOUTH + (3, 13, 31, 35),), 0.1, 0.2, shrink=0.9, keep="inner_mouth",
                         anchors=MOUTH_ANCHORS, pixels="lips"),
}


def region_names() -> list[str]:
    return list(REGIONS)
