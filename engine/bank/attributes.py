"""The attributes a bank knows: name -> default edit region and CelebA's column name.

Standard library only (the options schema lists the names without numpy).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attribute:
    label: str  # what a GIMP user reads
    region: str  # default edit region (engine/face/regions.py REGIONS)
    celeba: str | None  # the column in CelebA's list_attr_celeba.txt, if it has one
    # where the example's own pixels go into the start image, when narrower than the region (None: the region):
    # a smile's cheeks pasted from another face made light/grey patches (bench/bank_quality.py contact sheet),
    # so only its mouth is pasted and the optimisation shades the cheeks and folds
    pixels: str | None = None
    score: str = "mouth_open"  # the landmark score that tracks it (engine/bank/measure.py SCORES), for reports
    rises: bool = True  # the score rises with the attribute (an eye's aspect ratio falls as it closes)
    # the start's pixels come from the example showing it most clearly (its score) among this many of the nearest
    # reliable ones; 1 = the nearest. bench/bank_quality.py, mouth_open: 3 opened 14/22 mouths instead of 12/22 with
    # mobileface >= 0.75 in 18/22 as before (mean 0.811 vs 0.823); all 5 opened 15/22 but kept identity in 15/22.
    # Smiles by mouth width lost identity that way (>= 0.75 in 10/15 instead of 14/15, an earlier session's code; the
    # nearest keeps it in 12/15 on today's).
    strongest_of: int = 1
    # for the "with" side only, (n, score) in place of (strongest_of, score). A smile's pixels come from the one of
    # the two nearest that shows more teeth (its inner-lip gap): with the nearest, a closed-lip smile, face-api read
    # a smile on 7 of the 11 non-smiling references it can read, with the toothier of two on 9 of 11, identity kept
    # on 13/15 against 12/15 (bench/bank_quality.py, session 11, with engine/bank/shade.py); the toothiest of three
    # made 9 of 11 but kept identity on 10/15, with wide, denture-like grins. Taking a smile away keeps the nearest:
    # the less open of two made the smile fall on 18 of 24 smiling references instead of 20
    adding_strongest: tuple[int, str] | None = None
    # to add it where the region bends to the example's shape (Region.reshape_anchors): the shape is the mean of the
    # chosen "with" examples' (engine/bank/shape.py), taken whole (not the region's shape_share of the way: that
    # share keeps one guide's person-specific shape at bay, a mean shape is already typical).
    # bench/bank_quality.py smiling +1 (with adding_pixels): one example's smile shape at 0.75 kept identity
    # (mobileface >= 0.75) in 14/15, mean 0.804; the mean of the 5 nearest smiles' shapes at 0.75: 15/15, 0.861, but
    # face-api read a smile on only 6 of the 11 it can read (8 before); taken whole: 14/15, 0.830, 8 of 11. Not kept:
    # the lower eyelids in the smile region too, raised by the smiling examples' mean lift over the others': 9 of 11
    # read as smiling (kit_harington_1 0.40 -> 0.91, the optimisation's attribute loss over the eyes doing most of
    # it), identity 13/15, mean 0.812; the lids bent but left out of the optimised region: 7 of 11, 14/15.
    # A mean shape has no pose of its own, so it is placed per half of the face (Region.placed_per_half): on the
    # turned celebahq_female_030321 the far corner no longer crosses the jaw, the bend is no longer cut to 0.63, and
    # face-api reads a smile (0.07 -> 0.95, a broad and natural one on the contact sheet) at mobileface 0.731 (0.840);
    # over the 15: 9 of the 11 read as smiling, identity 13/15, mean 0.818 (with the similarity's own x: 9 of 11,
    # 14/15, 0.827; never widening a half: 8 of 11, 15/15, 0.838; kit_harington_1 alone swings 0.03-0.99 between
    # these three, the judge's noise). A face caught speaking, its mouth open wider than the mean smile, starts from
    # its own mouth and teeth bent to the mean smile kept as open (engine/bank/edit.py _example): obama_2 0.704 -> 0.813
    # (happy 0.98; an example's grin stretched to his opening had long, denture-like teeth); 9 of 11, 14/15, 0.825
    adding_mean_shape: bool = False
    # to add it where the region bends: the example's own pixels start the edit only in this part (None: the
    # region's), the person's own lips bent to the new shape around it. bench/bank_quality.py: smiling +1 with the
    # example's teeth only ("inner_mouth") kept identity in 14/15 (mean 0.804) instead of 13/15 (0.802) with its
    # lips; mouth_open opened 14 of the 17 the judge can read instead of 13, identity kept in 20/22 as before (mean
    # 0.837, 0.834 before). Taking an attribute away lays the example's lips (a smile removed over the person's own
    # lips fell on 17/24, not 19/24: the closed lips must cover the teeth)
    adding_pixels: str | None = None


ATTRIBUTES: dict[str, Attribute] = {
    "smiling": Attribute("Smiling", "smile", "Smiling", pixels="mouth_area", score="mouth_width",
                         adding_strongest=(2, "mouth_open"), adding_mean_shape=True, adding_pixels="inner_mouth"),
    "mouth_open": Attribute("Mouth open", "mouth", "Mouth_Slightly_Open", score="mouth_open", strongest_of=3,
                            adding_pixels="inner_mouth"),
    "eyes_closed": Attribute("Eyes closed", "eyes", None, score="eye_aspect", rises=False),
    "brows_raised": Attribute("Brows raised", "upper_face", None, score="brow_height"),
}
CELEBA_COLUMNS = {a.celeba: name for name, a in ATTRIBUTES.items() if a.celeba}
