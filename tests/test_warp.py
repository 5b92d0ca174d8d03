"""Bending the guide onto the reference's geometry (engine/face/warp.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine import edit
from engine.face.regions import REGIONS
from engine.face.warp import target_landmarks, warp_to


def _blobs(points: np.ndarray, size=(200, 200), sigma=2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    img = np.zeros(size, np.float32)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(img[..., None], 3, axis=2) * 255


def _peak_near(img: np.ndarray, x: float, y: float, r: int = 6) -> tuple[float, float]:
    """Intensity-weighted centre of the blob around (x, y)."""
    x0, y0 = int(round(x)) - r, int(round(y)) - r
    patch = img[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1, 0].astype(float)
    yy, xx = np.mgrid[0:patch.shape[0], 0:patch.shape[1]]
    return float((patch * xx).sum() / patch.sum() + x0), float((patch * yy).sum() / patch.sum() + y0)


@pytest.fixture
def synthetic():
    rng = np.random.default_rng(4)
    grid = np.stack(np.meshgrid(np.arange(45, 160, 30), np.arange(45, 160, 30)), -1).reshape(-1, 2).astype(float)
    source = grid + rng.uniform(-3, 3, grid.shape)  # well apart: each blob is measured on its own
    target = source + rng.uniform(-5, 5, source.shape)
    return source, target


@pytest.mark.parametrize("method", ["affine", "tps"])
def test_warp_moves_points_onto_their_targets(method, synthetic):
    source, target = synthetic
    out = warp_to(_blobs(source), source, target, method)
    errors = [np.hypot(*np.subtract(_peak_near(out, *t), t)) for t in target]
    assert max(errors) < 1.0, errors


@pytest.mark.parametrize("method", ["affine", "tps"])
def test_identical_landmarks_leave_the_image_as_it_is(method, synthetic):
    source, _ = synthetic
    img = np.random.default_rng(1).uniform(0, 255, (200, 200, 3)).astype(np.float32)
    assert np.array_equal(warp_to(img, source, source, method), img)


def test_the_borders_stay_put(synthetic):
    source, target = synthetic
    img = np.random.default_rng(2).uniform(0, 255, (200, 200, 3)).astype(np.float32)
    out = warp_to(img, source, target, "affine")
    assert np.abs(out[0] - img[0]).max() < 1e-3 and np.abs(out[:, -1] - img[:, -1]).max() < 1e-3


def test_targets_keep_the_guide_mouth_shape_at_the_reference_corners():
    rng = np.random.default_rng(3)
    guide = rng.uniform(0, 100, (68, 2))
    reference = guide * 1.1 + 5
    reference[48:68] += rng.normal(0, 2, (20, 2))  # another mouth shape
    mouth = tuple(range(48, 68))
    t = target_landmarks(guide, reference, mouth, REGIONS["mouth"].anchors)
    assert np.allclose(t[:48], reference[:48])  # outside the region: the reference's geometry
    gap = lambda p: np.linalg.norm(p[66] - p[62]) / np.linalg.norm(p[54] - p[48])  # noqa: E731
    assert gap(t) == pytest.approx(gap(guide), rel=1e-6)  # the guide's opening, in proportion


def test_a_warped_edit_changes_nothing_outside_the_region(dlib_backbone, small_pair):
    paths = small_pair
    r = edit(paths[0], guide=paths[1], backbone=dlib_backbone, warp="affine", iterations=4, precision="fp32")
    plain = edit(paths[0], guide=paths[1], backbone=dlib_backbone, warp="none", iterations=4, precision="fp32")
    before = np.asarray(Image.open(paths[0]).convert("RGB")).astype(np.float32)
    outside = r.frame.photo_mask(before.shape[:2]) == 0
    assert np.array_equal(np.rint(r.image)[outside], before[outside])
    assert not np.array_equal(r.crops["init"], plain.crops["init"])  # the warp did move the guide's mouth


def test_similarity_moves_the_region_anchors_onto_the_reference():
    """'similarity': one rigid move of the whole crop (nothing bent) that puts the mouth corners on the reference's."""
    from engine.face.warp import anchor_similarity, move_rigidly

    rng = np.random.default_rng(5)
    ref = rng.uniform(60, 140, (68, 2))
    angle, scale, shift = 0.1, 1.15, np.array([4.0, -6.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    guide = ref @ rot.T + shift  # the guide's face is the reference's, turned, scaled and shifted
    m = anchor_similarity(guide, ref, REGIONS["mouth"].anchors)
    image = _blobs(guide[list(REGIONS["mouth"].anchors)])
    moved, landmarks = move_rigidly(image, guide, m)
    assert np.abs(landmarks - ref).max() < 1e-3
    for x, y in ref[list(REGIONS["mouth"].anchors)]:
        assert np.hypot(*np.subtract(_peak_near(moved, x, y), (x, y))) < 1.0
