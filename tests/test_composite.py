"""Compositing: colour matching and the blend used as the optimisation's start."""

from __future__ import annotations

import cv2
import numpy as np

from engine.objective.composite import colour_match, composite, feathered_paste, seamless_clone
from engine.objective.recipes import DLIB_RESNET as RECIPE


def _images():
    rng = np.random.default_rng(0)
    ref = np.full((120, 120, 3), (180.0, 140.0, 120.0), np.float32) + rng.normal(0, 3, (120, 120, 3))
    guide = np.full((120, 120, 3), (90.0, 60.0, 50.0), np.float32) + rng.normal(0, 3, (120, 120, 3))
    guide[50:70, 40:80] = 240.0  # "teeth": a bright detail inside the region
    yy, xx = np.mgrid[:120, :120]
    mask = np.clip(1.5 - np.hypot((yy - 60) / 30, (xx - 60) / 40), 0, 1).astype(np.float32)
    return ref.astype(np.float32), guide.astype(np.float32), mask


def test_colour_match_moves_the_region_towards_the_reference():
    ref, guide, mask = _images()
    matched = colour_match(guide, ref, mask, RECIPE)
    m = mask > 0.5
    assert np.abs(matched[m].mean(0) - ref[m].mean(0)).max() < np.abs(guide[m].mean(0) - ref[m].mean(0)).max() / 4


def test_blends_change_only_the_masked_area_and_keep_the_detail():
    ref, guide, mask = _images()
    for blend in (feathered_paste, seamless_clone, composite):
        out = blend(guide, ref, mask, RECIPE)
        assert out.shape == ref.shape and np.isfinite(out).all()
        assert np.array_equal(out[mask == 0], ref[mask == 0])
        assert out[60, 60].mean() > out[40, 20].mean() + 20  # the bright detail survives
    core = composite(guide, ref, mask, RECIPE)
    assert np.allclose(core[60, 60], feathered_paste(guide, ref, mask, RECIPE)[60, 60])  # solid core = the guide itself


def test_folds_only_keeps_the_reference_shading_and_carries_the_guide_folds():
    """Outside the guide's own part (its lips), a smile start moves folds, not beards or shadows."""
    from engine.objective.composite import folds_only, start_image

    size = 240
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    ref = np.full((size, size, 3), 170.0, np.float32)
    guide = np.full((size, size, 3), 170.0, np.float32)
    guide -= 60 * np.exp(-((yy - 80) ** 2 + (xx - 120) ** 2) / (2 * 30.0**2))[..., None]  # a moustache shadow
    guide -= 40 * np.exp(-((xx - 60) ** 2) / (2 * 2.5**2))[..., None]  # a fold: a thin line
    mask = np.ones((size, size), np.float32)
    own = np.zeros((size, size), np.float32)
    out = folds_only(guide, ref, own, mask, RECIPE)
    shadow_before, shadow_after = 170 - guide[80, 120].mean(), 170 - out[80, 120].mean()
    assert shadow_after < 0.25 * shadow_before  # the broad shadow stays behind
    fold_before = guide[150, 90].mean() - guide[150, 60].mean()
    fold_after = out[150, 90].mean() - out[150, 60].mean()
    assert fold_after > 0.4 * fold_before  # the fold comes along
    assert np.allclose(folds_only(ref, ref, own, mask, RECIPE), ref, atol=1e-3)  # the same face: no change
    own[:] = 1
    assert np.allclose(folds_only(guide, ref, own, mask, RECIPE), colour_match(guide, ref, mask, RECIPE))
    plain = start_image("seamless", ref, guide, mask, 0, RECIPE, own)  # baselines stay plain pastes
    assert np.array_equal(plain, seamless_clone(guide, ref, mask, RECIPE))


def test_folds_carry_brightness_only_and_only_from_the_guides_face():
    """A guide's coloured edge (a bank example's background beside its cheek) came across as a rainbow streak, and
    the reference's red lips taken away left green corners: the folds are brightness, added alike to every
    channel, and only where the guide has its face (start_image with the guide's landmarks)."""
    from engine.face.masks import face_interior
    from engine.objective.composite import folds_only, start_image

    size = 240
    ref = np.full((size, size, 3), 150.0, np.float32)
    ref[150:160, 80:160] = (200.0, 60.0, 60.0)  # red lips, outside the guide's own part
    guide = np.full((size, size, 3), 150.0, np.float32)
    guide[:, 200:] = (40.0, 200.0, 90.0)  # a green background past the guide's cheek
    guide[:, 100:104] -= 50  # a fold on the face
    own, mask = np.zeros((size, size), np.float32), np.ones((size, size), np.float32)
    out = folds_only(guide, ref, own, mask, RECIPE)
    change = out - ref
    assert np.allclose(change[..., 0], change[..., 1], atol=1e-3) and np.allclose(change[..., 1], change[..., 2],
                                                                                   atol=1e-3)  # no colour cast
    assert change[120, 102].mean() < -5  # the fold is there
    jaw = np.c_[np.linspace(20, 180, 17), 120 + 60 * np.sin(np.linspace(0, np.pi, 17))]
    brows = np.c_[np.linspace(40, 160, 10), np.full(10, 30.0)]
    landmarks = np.vstack([jaw, brows, np.full((41, 2), 100.0)])  # a face from x 20 to 180: the green is outside
    face = face_interior(landmarks, (size, size), 2 * RECIPE.band_coarse * size)
    assert face[100, 100] == 1 and face[100, 199] == 0
    limited = folds_only(guide, ref, own, mask, RECIPE, face)
    assert np.allclose(limited[:, 185:], ref[:, 185:], atol=1e-3)  # the background's edge brings nothing
    assert limited[120, 102].mean() < ref[120, 102].mean() - 5  # the face's own fold still does
    start = start_image("composite", ref, guide, mask, 0, RECIPE, own, (landmarks, landmarks))
    assert np.abs(start[:, 190:] - ref[:, 190:]).max() < 2  # the same through the start image


def test_colour_statistics_leave_out_the_references_mouth_opening():
    """Closing a smile: the reference's teeth are what is replaced, not a colour the start must take (counted in,
    they pulled the closing mouth's corners to green)."""
    from engine.objective.composite import start_image

    size = 200
    skin = np.array([180.0, 120.0, 100.0], np.float32)
    landmarks = np.full((68, 2), 100.0)
    landmarks[36:42], landmarks[42:48] = (70, 60), (130, 60)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    landmarks[60:68] = np.c_[100 + 30 * np.cos(angles), 140 + 15 * np.sin(angles)]  # an open mouth
    ref = np.tile(skin, (size, size, 1))
    cv2.fillPoly(ref, [np.round(landmarks[60:68]).astype(np.int32)], (250.0, 250.0, 250.0))  # its teeth
    guide = np.full((size, size, 3), (150.0, 100.0, 80.0), np.float32)  # a closed mouth, darker skin
    mask = np.zeros((size, size), np.float32)
    mask[100:180, 40:160] = 1  # the mouth's region
    start = start_image("feathered", ref, guide, mask, 0, RECIPE, None, (landmarks, landmarks))
    assert np.abs(start[110, 50] - skin).max() < 2  # matched to the skin
    counted = start_image("feathered", ref, guide, mask, 0, RECIPE)  # teeth in the statistics
    assert np.abs(counted[110, 50] - skin).max() > 10
    # the composite with the guide's own part (its lips) covering only part of the opening: the blend's second
    # match sees the reference's own teeth outside that part, on its source side too (found in review)
    own = np.zeros((size, size), np.float32)
    own[150:180, 40:160] = 1  # the guide's lower lip, below most of the opening
    start = start_image("composite", ref, guide, mask, 0, RECIPE, own, (landmarks, landmarks))
    assert np.abs(start[110, 50] - skin).max() < 2


def test_colour_statistics_are_the_skins_not_the_eyes_or_brows():
    """An eyes region matched over a squinting guide's skin and white brows against a reference's blue irises and
    dark brows came out with blue lids and orange cheeks: both sides' statistics leave eyes and brows out."""
    from engine.objective.composite import not_skin, start_image

    size = 200
    landmarks = np.full((68, 2), 100.0)
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    for eye, x in ((slice(36, 42), 70), (slice(42, 48), 130)):
        landmarks[eye] = np.c_[x + 18 * np.cos(angles), 80 + 8 * np.sin(angles)]
    landmarks[17:22] = np.c_[np.linspace(50, 90, 5), [62, 58, 56, 58, 62]]  # brows: arcs above the eyes
    landmarks[22:27] = np.c_[np.linspace(110, 150, 5), [62, 58, 56, 58, 62]]
    landmarks[60:68] = 100.0, 170.0  # a closed mouth, far below
    hidden = not_skin(landmarks, (size, size))
    assert hidden[80, 70] and hidden[80, 130] and hidden[57, 70] and not hidden[110, 100] and not hidden[80, 100]

    def face(skin, brows, eyes):
        im = np.tile(np.array(skin, np.float32), (size, size, 1))
        for group in (slice(17, 22), slice(22, 27)):
            cv2.polylines(im, [np.round(landmarks[group]).astype(np.int32)], False, brows, 5)
        for group in (slice(36, 42), slice(42, 48)):
            cv2.fillPoly(im, [np.round(landmarks[group]).astype(np.int32)], eyes)
        return im

    ref = face((200.0, 150.0, 120.0), (60.0, 40.0, 30.0), (60.0, 90.0, 200.0))  # dark brows, blue eyes
    guide = face((170.0, 120.0, 110.0), (245.0, 245.0, 240.0), (230.0, 225.0, 220.0))  # white brows, a squint's lids
    mask = np.zeros((size, size), np.float32)
    mask[40:110, 30:170] = 1
    start = start_image("feathered", ref, guide, mask, 0, RECIPE, None, (landmarks, landmarks))
    assert np.abs(start[100, 100] - ref[100, 100]).max() < 3  # the guide's skin takes the reference's colour
    counted = colour_match(guide, ref, mask, RECIPE)  # eyes and brows in the statistics
    assert np.abs(counted[100, 100] - ref[100, 100]).max() > 10


def test_mouth_smile_and_eyes_take_only_the_guides_own_part_as_pixels(small_pair, dlib_backbone):
    from engine.face.frame import frame_faces
    from engine.io.images import load_photo

    template = dlib_backbone.spec["crop_template"]
    ref, guide = (load_photo(p) for p in small_pair)
    smile = frame_faces(ref, guide, template, "smile")
    mouth = frame_faces(ref, guide, template, "mouth")
    eyes = frame_faces(ref, guide, template, "eyes")
    nose = frame_faces(ref, guide, template, "nose")
    assert nose.own is None  # regions without a pixels part: the guide's pixels throughout
    for frame in (smile, mouth, eyes):
        assert frame.own.max() > 0.99 and (frame.own <= frame.mask + 1e-6).all()
    assert mouth.own.sum() < 0.75 * mouth.mask.sum()  # philtrum, chin, moustache: not pasted
    # eyes: lids and lashes; the guide's brows, eye shadow and under-eye skin stay out (only their folds come)
    assert eyes.own.sum() < 0.5 * eyes.mask.sum()
    assert smile.paste_mask.sum() > 3 * smile.mask.sum()  # its cheeks and folds: the person's own, bent
