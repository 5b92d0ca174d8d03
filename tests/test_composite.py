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
