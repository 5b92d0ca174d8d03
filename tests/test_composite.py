"""Compositing: colour matching and the blend used as the optimisation's start."""

from __future__ import annotations

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


def test_mouth_and_smile_take_only_the_guides_lips_as_pixels(small_pair, dlib_backbone):
    from engine.face.frame import frame_faces
    from engine.io.images import load_photo

    template = dlib_backbone.spec["crop_template"]
    ref, guide = (load_photo(p) for p in small_pair)
    smile = frame_faces(ref, guide, template, "smile")
    mouth = frame_faces(ref, guide, template, "mouth")
    eyes = frame_faces(ref, guide, template, "eyes")
    assert eyes.own is None  # other regions: the guide's pixels throughout
    for frame in (smile, mouth):
        assert frame.own.max() > 0.99 and (frame.own <= frame.mask + 1e-6).all()
    assert mouth.own.sum() < 0.75 * mouth.mask.sum()  # philtrum, chin, moustache: not pasted
    assert smile.paste_mask.sum() > 3 * smile.mask.sum()  # its cheeks and folds: the person's own, bent
