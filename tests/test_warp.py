"""Bending the guide onto the reference's geometry (engine/face/warp.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from engine import edit
from engine.face.regions import PARTS, REGIONS
from engine.face.warp import delaunay, piecewise_affine, target_landmarks, warp_to


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
    (corners,) = REGIONS["mouth"].reshape_anchors
    t = target_landmarks(guide, reference, mouth, corners)
    assert np.allclose(t[:48], reference[:48])  # outside the region: the reference's geometry
    assert np.allclose(t[[48, 54]], reference[[48, 54]], atol=1e-3)  # the reference's own corners
    gap = lambda p: np.linalg.norm(p[66] - p[62]) / np.linalg.norm(p[54] - p[48])  # noqa: E731
    assert gap(t) == pytest.approx(gap(guide), rel=1e-6)  # the guide's opening, in proportion
    t = target_landmarks(guide, reference, mouth, PARTS["mouth_area"].anchors)  # --warp similarity's anchors: the same
    assert gap(t) == pytest.approx(gap(guide), rel=1e-6)


def test_the_mouths_opening_scales_with_the_face_by_its_share():
    """A guide mouth twice as wide (same face size) placed by the reference's corners: at share 0 its opening
    halves with the width; at share 1 it keeps its size relative to the face; at 0.5, the geometric mean. The
    corners and everything outside the mouth stay the reference's."""
    from engine.face.warp import reshape_targets

    rng = np.random.default_rng(8)
    reference = rng.uniform(40, 160, (68, 2))
    reference[36:42], reference[42:48] = (70, 80), (130, 80)  # eye centres 60 px apart
    reference[48:68] = np.c_[np.linspace(90, 110, 20), np.full(20, 150.0)]
    reference[[48, 54]] = (90, 150), (110, 150)  # a 20 px mouth
    guide = reference.copy()
    guide[48:68] = np.c_[np.linspace(80, 120, 20), np.full(20, 150.0)]
    guide[[48, 54]] = (80, 150), (120, 150)  # a 40 px mouth, the same face size
    guide[[62, 66]] = (100, 140), (100, 160)  # opened 20 px
    spec = REGIONS["mouth"]
    gap = {}
    for share in (0.0, 0.5, 1.0):
        t = reshape_targets(guide, reference, spec.groups, spec.reshape_anchors, share)
        assert np.allclose(t[:48], reference[:48]) and np.allclose(t[[48, 54]], reference[[48, 54]], atol=1e-6)
        assert np.allclose(t[[48, 54, 62, 66], 0], [90, 110, 100, 100], atol=1e-6)  # widths: the corners' scale
        gap[share] = np.linalg.norm(t[66] - t[62])
    assert gap[0.0] == pytest.approx(10) and gap[1.0] == pytest.approx(20) and gap[0.5] == pytest.approx(200 ** 0.5)
    assert spec.face_scaled_opening == 0.5


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
    anchors = PARTS[REGIONS["mouth"].unbent].anchors  # --warp similarity: the unbent mouth's anchors
    m = anchor_similarity(guide, ref, anchors)
    image = _blobs(guide[list(anchors)])
    moved, landmarks = move_rigidly(image, guide, m)
    assert np.abs(landmarks - ref).max() < 1e-3
    for x, y in ref[list(anchors)]:
        assert np.hypot(*np.subtract(_peak_near(moved, x, y), (x, y))) < 1.0


def test_a_fade_limits_the_bend(synthetic):
    """fade 0: those pixels stay exactly; fade 1: the full bend."""
    source, target = synthetic
    img = np.random.default_rng(6).uniform(0, 255, (200, 200, 3)).astype(np.float32)
    fade = np.zeros((200, 200), np.float32)
    fade[:, 100:] = 1.0
    out, full = warp_to(img, source, target, "affine", fade), warp_to(img, source, target, "affine")
    assert np.array_equal(out[:, :100], img[:, :100])
    assert np.allclose(out[:, 100:], full[:, 100:], atol=1e-3)


def test_reshape_targets_put_each_guide_eye_at_the_reference_corners():
    """Eyes: each eye's guide shape (its opening) placed by that eye's own corners, however the guide's head is
    turned; every other point stays the reference's."""
    from engine.face.warp import reshape_targets

    rng = np.random.default_rng(7)
    reference = rng.uniform(40, 160, (68, 2))
    guide = reference * 0.9 + 3
    guide[42:48] += (0, 12)  # the guide's far eye sits lower (a turned head)
    guide[[37, 38, 43, 44]] -= (0, 4)  # and both its eyes open wider
    spec = REGIONS["eyes"]
    t = reshape_targets(guide, reference, spec.groups, spec.reshape_anchors)
    assert np.allclose(t[:36], reference[:36]) and np.allclose(t[48:], reference[48:])
    for eye, (a, b) in zip(spec.groups, spec.reshape_anchors, strict=True):
        assert np.abs(t[[a, b]] - reference[[a, b]]).max() < 1e-3  # the reference's corners

        def opening(p, eye=eye):
            return np.linalg.norm(p[eye[1]] - p[eye[5]]) / np.linalg.norm(p[eye[0]] - p[eye[3]])

        assert opening(t) == pytest.approx(opening(guide), rel=1e-4)  # the guide's opening


def test_thicken_moves_a_brow_as_a_block_and_the_eye_stays():
    """A raised 'brow' (a row of blobs, plus hair blobs just above and below its points) rises whole; the 'eye'
    below it does not move."""
    from engine.face.warp import thicken

    brow = np.c_[np.arange(60, 141, 20), np.full(5, 80.0)]
    eye = np.array([[100.0, 125.0]])
    source = np.vstack([brow, eye])
    target = source.copy()
    target[:5, 1] -= 8  # the brow rises 8 px
    hair = np.vstack([brow + (0, -5), brow + (0, 5)])
    img = _blobs(np.vstack([hair, eye]), sigma=1.5)
    src, dst = thicken(source, target, tuple(range(5)), 10.0, np.full(5, 10.0))
    out = warp_to(img, src, dst, "affine")
    for x, y in hair:  # both hair rows moved by the brow's move: the block did not stretch
        assert np.hypot(*np.subtract(_peak_near(out, x, y - 8), (x, y - 8))) < 1.0
    assert np.hypot(*np.subtract(_peak_near(out, *eye[0]), eye[0])) < 0.5


@pytest.mark.parametrize("region", ["eyes", "eyebrows", "smile", "mouth"])
def test_a_reshaped_edit_changes_nothing_outside_where_it_may(dlib_backbone, small_pair, region):
    paths = small_pair
    r = edit(paths[0], guide=paths[1], backbone=dlib_backbone, region=region, iterations=3, precision="fp32")
    assert r.frame.reshape is not None  # auto reshapes mouths, smiles, eyes and brows
    before = np.asarray(Image.open(paths[0]).convert("RGB")).astype(np.float32)
    outside = r.frame.photo_mask(before.shape[:2]) == 0
    assert np.array_equal(np.rint(r.image)[outside], before[outside])
    moved = np.abs(r.frame.guide.landmarks - r.frame.ref.landmarks).max()
    assert moved > 0.5 and not np.array_equal(r.crops["init"], r.crops["reference"])
    plain = edit(paths[0], guide=paths[1], backbone=dlib_backbone, region=region, warp="none", iterations=0)
    assert plain.frame.reshape is None  # --warp none: nothing bent


def test_a_reshape_towards_the_reference_itself_changes_nothing(dlib_backbone, small_pair):
    """Identical landmarks: the bend is the identity, so the brows' start is the reference, pixel for pixel."""
    r = edit(small_pair[0], guide=small_pair[0], backbone=dlib_backbone, region="eyebrows", iterations=0)
    assert np.abs(r.frame.guide.landmarks - r.frame.ref.landmarks).max() < 1e-3
    assert np.array_equal(r.crops["init"], r.crops["reference"])


def test_the_photo_is_bent_at_its_own_resolution_without_a_ghost():
    """A raised brow in a photo 3x the crop's size: the sharp edge moves (bend_photo), where a crop-resolution
    difference added to the photo (paste_back alone) leaves the original edge standing beside a soft copy."""
    from engine.face.pasteback import bend_photo, paste_back
    from engine.face.warp import bend_offsets, moved_by

    photo = np.full((600, 600, 3), 230.0, np.float32)
    photo[300:303, 150:450] = 20.0  # a sharp, thin dark line: the brow
    m = np.array([[1 / 3, 0, 0], [0, 1 / 3, 0]])  # photo -> crop (200 x 200)
    crop = cv2.warpAffine(photo, m, (200, 200), flags=cv2.INTER_AREA)
    xs = np.linspace(40, 160, 7)
    source = np.r_[np.c_[xs, np.full(7, 100.0)], np.c_[xs, np.full(7, 60.0)], np.c_[xs, np.full(7, 140.0)]]
    target = source.copy()
    target[:7, 1] -= 5  # the line's points rise 5 crop px = 15 photo px; the rows above and below stay
    offsets = bend_offsets((200, 200), source, target)
    bent = bend_photo(photo, m, offsets)
    column = bent[:, 300, 0]
    assert column[285:288].max() < 60 and column[299:304].min() > 200  # moved, and nothing left behind
    assert np.array_equal(bent[:200], photo[:200]) and np.array_equal(bent[450:], photo[450:])  # unmoved: copied
    old = paste_back(photo, m, moved_by(crop, offsets) - crop, np.ones((200, 200), np.float32))
    assert old[299:304, 300, 0].min() < 120  # the old way: the original line still shows through
    assert np.array_equal(bend_photo(photo, m, np.zeros((200, 200, 2), np.float32)), photo)


def test_bending_the_photo_then_cropping_equals_bending_the_crop():
    """Any similarity photo -> crop (turned, scaled, shifted): the offsets are carried through its inverse."""
    from engine.face.pasteback import bend_photo
    from engine.face.warp import bend_offsets, moved_by

    yy, xx = np.mgrid[0:500, 0:500].astype(np.float32)
    photo = np.stack([127 + 100 * np.sin(xx / 23) * np.cos(yy / 31), 127 + 100 * np.cos((xx + yy) / 40),
                      xx * 0.4 + yy * 0.1], -1).astype(np.float32)  # smooth: interpolation adds little
    angle, scale = np.deg2rad(25), 0.45
    m = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 30.0],
                  [scale * np.sin(angle), scale * np.cos(angle), -80.0]])
    crop = cv2.warpAffine(photo, m, (200, 200), flags=cv2.INTER_LINEAR)
    source = np.array([[60.0, 80], [100, 70], [140, 80], [60, 130], [140, 130], [100, 150]])
    target = source + [[3, -6], [0, -8], [-3, -6], [0, 0], [0, 0], [0, 0]]
    offsets = bend_offsets((200, 200), source, target)
    expected = moved_by(crop, offsets)[40:160, 40:160]
    got = cv2.warpAffine(bend_photo(photo, m, offsets), m, (200, 200), flags=cv2.INTER_LINEAR)[40:160, 40:160]
    assert np.abs(got - expected).mean() < 0.5
    wrong = cv2.warpAffine(bend_photo(photo, m, -offsets), m, (200, 200), flags=cv2.INTER_LINEAR)[40:160, 40:160]
    assert np.abs(wrong - expected).mean() > 1.0


def test_a_brow_moves_at_most_its_limit_times_the_gap_to_the_eye():
    from engine.face.frame import block_below, limited_moves

    marks = np.zeros((68, 2))
    marks[36:48] = np.c_[np.r_[np.linspace(60, 90, 6), np.linspace(140, 170, 6)], np.full(12, 100.0)]  # eyes
    marks[17:27] = np.c_[np.r_[np.linspace(55, 95, 5), np.linspace(135, 175, 5)], np.full(10, 70.0)]  # brows
    groups = (tuple(range(17, 22)), tuple(range(22, 27)))
    far = marks.copy()
    far[17:22, 1] -= 40  # the first brow asked to rise 40 px; the second 3 px
    far[22:27, 1] -= 3
    below, to_eye = block_below(marks, groups[0], 0.08)
    gap = float((to_eye - below).min())
    out = limited_moves(marks, far, groups, 0.08, 1.0)
    rise = marks[17:22, 1] - out[17:22, 1]
    assert rise.max() == pytest.approx(gap, rel=1e-6) and np.allclose(rise, rise[0])  # scaled as a whole
    assert np.allclose(out[22:27], far[22:27]) and np.array_equal(out[:17], marks[:17])  # within its limit: as asked


def test_a_smile_takes_a_share_of_the_guides_mouth_shape_in_the_reference_face_frame(dlib_backbone, small_pair):
    """The smile's mouth moves shape_share of the way to the guide's mouth as the eyes and nose place it (its
    corners lift; its size stays closer to the person's own); eyes, nose and jaw stay where the reference has
    them."""
    from engine.face.frame import align_face, frame_faces
    from engine.face.regions import FACE_FRAME, JAW, MOUTH
    from engine.face.warp import uncrossed_share
    from engine.io.images import load_photo

    ref_photo, guide_photo = (load_photo(p) for p in small_pair)
    template = dlib_backbone.spec["crop_template"]
    frame = frame_faces(ref_photo, guide_photo, template, "smile")
    ref = align_face(ref_photo, template, factor=None)
    guide = align_face(guide_photo, template, factor=ref.factor)
    share = REGIONS["smile"].shape_share
    assert 0 < share < 1 and frame.reshape is not None
    placed = target_landmarks(guide.landmarks, ref.landmarks, MOUTH, FACE_FRAME)
    assert uncrossed_share(ref.landmarks, ref.landmarks + share * (placed - ref.landmarks), MOUTH, JAW) == 1.0
    assert np.allclose(frame.reshape.bend_to, ref.landmarks + share * (placed - ref.landmarks), atol=1e-6)
    others = [i for i in range(68) if i not in MOUTH]
    assert np.array_equal(frame.reshape.bend_to[others], ref.landmarks[others])
    assert np.abs(frame.reshape.bend_to[list(MOUTH)] - ref.landmarks[list(MOUTH)]).max() > 1


def test_a_reshape_never_carries_a_point_across_the_jaw_line():
    """A turned guide's mouth placed on a frontal face can reach past the reference's jaw, and the bend then folds
    the cheek over itself: the move is cut short of the share at which a point inside the jaw would cross it; a
    move that stays inside is kept whole; points on or beyond the jaw line, and the jaw's own, move freely."""
    from engine.face.warp import uncrossed_share

    jaw = tuple(range(5))
    source = np.array([[0, 0], [10, 20], [30, 30], [50, 20], [60, 0], [30, 10], [30, 40], [20, 25]], float)
    inside = source.copy()
    inside[5] = [35, 18]  # further down, still above the jaw
    assert uncrossed_share(source, inside, (5,), jaw) == 1.0
    across = source.copy()
    across[5] = [30, 50]  # 40 px down, through the jaw's lowest landmark at y = 30
    assert 0.44 < uncrossed_share(source, across, (5,), jaw) <= 0.45  # 20 / 40 of the way, less a 10 % margin

    def below_the_jaw(point):  # under the segment (30, 30) - (50, 20)
        return point[1] > 30 - 10 * (point[0] - 30) / 20

    across[5] = [40, 50]  # between two landmarks
    share = uncrossed_share(source, across, (5,), jaw)
    assert not below_the_jaw(source[5] + share * (across[5] - source[5]))
    assert below_the_jaw(source[5] + (share / 0.9 + 0.01) * (across[5] - source[5]))
    free = source.copy()
    free[6] = [30, 10]  # starts below the jaw (outside it) and moves in
    free[7] = [20, 40]  # starts on the segment (10, 20) - (30, 30)
    free[2] = [30, 60]  # a jaw point itself
    assert uncrossed_share(source, free, (2, 6, 7), jaw) == 1.0
    across[5] = [np.nan, 0]
    assert uncrossed_share(source, across, (5,), jaw) == 0.0


def test_an_unbent_smile_is_the_mouth_with_its_cheeks(small_pair, dlib_backbone):
    """Where nothing is bent (--warp none / similarity), the smile is its unbent area (mouth, cheeks, nasolabial
    folds), not the reshape's narrow mouth."""
    from engine.face.frame import frame_faces
    from engine.face.masks import region_mask
    from engine.io.images import load_photo

    ref, guide = (load_photo(p) for p in small_pair)
    template = dlib_backbone.spec["crop_template"]
    for warp in ("none", "similarity"):
        frame = frame_faces(ref, guide, template, "smile", warp=warp)
        assert frame.reshape is None and frame.keep is not None  # its inner mouth costs more to change
        assert np.array_equal(frame.mask, region_mask(frame.ref.landmarks, REGIONS["smile"].unbent, frame.ref.size))
        assert frame.mask.sum() > 1.5 * region_mask(frame.ref.landmarks, "smile", frame.ref.size).sum()


def test_piecewise_affine_equals_scipys_linear_interpolation_over_qhulls_triangles():
    """The bend's own triangulation (OpenCV, no scipy import in a new process) gives what scipy's
    LinearNDInterpolator gave: the same map at every pixel, NaN nowhere inside the border points' hull."""
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import Delaunay

    from engine.face.warp import _border

    rng = np.random.default_rng(7)
    for h, w in [(300, 260), (211, 347)]:
        points = np.vstack([rng.uniform([15, 15], [w - 15, h - 15], (68, 2)), _border((h, w))])
        moved = points + np.vstack([rng.normal(0, 5, (68, 2)), np.zeros((32, 2))])
        ours = {tuple(sorted(t)) for t in delaunay(points)}
        assert ours == {tuple(sorted(t)) for t in Delaunay(points).simplices}
        mapped = piecewise_affine(points, moved, (h, w))
        yy, xx = np.mgrid[0:h, 0:w].astype(float)
        expected = LinearNDInterpolator(points, moved)(np.c_[xx.ravel(), yy.ravel()]).reshape(h, w, 2)
        assert not np.isnan(mapped).any()
        assert np.abs(mapped - expected).max() < 1e-9
    outside = piecewise_affine(np.array([[10.0, 10], [50, 10], [10, 50]]), np.zeros((3, 2)), (60, 60))
    assert np.isnan(outside[55, 55]).all() and not np.isnan(outside[12, 12]).any()


def test_a_change_is_carried_from_one_bend_to_another(dlib_backbone, small_pair):
    """FaceFrame.carried (a bank edit's warm start across strengths): a change drawn at the bend's points for one
    amount lands at the same points for another amount (within a pixel); between equal amounts it stays as it is,
    and without a reshape it is returned untouched."""
    r = edit(small_pair[0], guide=small_pair[1], backbone=dlib_backbone, region="mouth", iterations=0)
    frame = r.frame
    h, w = frame.ref.size
    goal_half, goal_whole = frame._goal(0.5), frame._goal(1.0)
    moving = np.flatnonzero(np.linalg.norm(goal_whole - goal_half, axis=1) > 2.0)
    moving = [i for i in moving if 3 < goal_half[i, 0] < w - 4 and 3 < goal_half[i, 1] < h - 4]
    assert moving, "the mouth's points move between the two amounts"
    change = np.zeros((h, w, 3), np.float32)
    for i in moving:
        x, y = np.rint(goal_half[i]).astype(int)
        change[y - 1:y + 2, x - 1:x + 2] = 100.0
    carried = frame.carried(change, frame, 0.5, 1.0)
    for i in moving:
        x, y = goal_whole[i]
        near = carried[max(0, int(y) - 1):int(y) + 3, max(0, int(x) - 1):int(x) + 3, 0]
        assert near.max() > 50, (i, goal_half[i], goal_whole[i])
    np.testing.assert_allclose(frame.carried(change, frame, 0.7, 0.7), change, atol=1e-3)
    plain = edit(small_pair[0], guide=small_pair[1], backbone=dlib_backbone, region="mouth", warp="none",
                 iterations=0)
    assert plain.frame.carried(change, plain.frame, 0.5, 1.0) is change


def test_a_guide_edit_above_strength_1_bends_further(dlib_backbone, small_pair):
    """A guide photo's mouth at strength 1.5 is bent half as far again as at 1 (its frame's reach), not stopped at
    the guide's shape; 1 and below keep the guide's shape as the full bend."""
    moves = {}
    for strength in (1.0, 1.5):
        r = edit(small_pair[0], guide=small_pair[1], backbone=dlib_backbone, region="mouth", iterations=0,
                 strength=strength)
        assert r.frame.reach == strength and r.frame.share(strength) == 1.0
        moves[strength] = r.frame.bent_landmarks(1.0)[0] - r.frame.ref.landmarks
    ratio = float(np.linalg.norm(moves[1.5]) / np.linalg.norm(moves[1.0]))
    assert 1.2 < ratio <= 1.5 + 1e-6, ratio


def test_beyond_the_guides_shape_the_upper_lip_keeps_its_gap_to_the_nose():
    """frame.beyond: reach 1 is the target itself; further, every point goes reach times as far, but the upper lip
    stops where 0.7 of the photo's own nose-to-lip gap is left (a GIMP trial at 1.5: the lip gone under the nose)."""
    from engine.face.frame import beyond
    from engine.face.regions import NOSE_BASE, PHILTRUM_KEEP, UPPER_LIP

    rng = np.random.default_rng(7)
    face = rng.uniform(20, 130, (68, 2))
    face[NOSE_BASE], face[51] = (75, 80), (75, 100)  # a 20 px philtrum
    target = face.copy()
    target[48:68] += (0, -4)  # the mouth rises 4 px: 16 px left
    assert np.array_equal(beyond(face, target, 1.0), target)
    out = beyond(face, target, 2.0)
    others = [i for i in range(68) if i not in UPPER_LIP]
    np.testing.assert_allclose(out[others], (face + 2 * (target - face))[others])
    gap = np.linalg.norm(out[51] - out[NOSE_BASE])
    assert PHILTRUM_KEEP * 20 - 0.05 <= gap < PHILTRUM_KEEP * 20 + 0.5, gap  # 14 px, not 12
    assert beyond(face, target, 1.25)[51, 1] == pytest.approx(target[51, 1] - 1.0)  # above the floor: all of it
    closer = face.copy()
    closer[48:68] += (0, -10)  # the target itself leaves 10 px: the lip rises no further
    assert beyond(face, closer, 2.0)[51, 1] == pytest.approx(closer[51, 1], abs=0.05)


def _fold_count(offsets: np.ndarray) -> int:
    """Pixels where the bend p -> p + offset(p) turns the picture over (its Jacobian's determinant below 0)."""
    gx, gy = np.gradient(offsets[..., 0]), np.gradient(offsets[..., 1])  # each: (d/dy, d/dx)
    det = (1 + gx[1]) * (1 + gy[0]) - gx[0] * gy[1]
    return int((det < 0).sum())


def test_a_move_that_would_fold_the_picture_is_cut_short(synthetic):
    """unfolded_share: one point pushed past its neighbours turns the mesh's triangles over (a frontal guide's smile
    on a turned head drew the jaw as a zigzag): the share found bends without a fold, and the move it cuts is the
    whole one where nothing folds. A small move, and slivers that turn over with a few px^2, keep the whole move."""
    from engine.face.warp import bend_offsets, unfolded_share

    source, target = synthetic
    size = (200, 200)
    assert unfolded_share(source, target, size, least=20.0) == 1.0  # a few px each way: nothing folds
    pushed = source.copy()
    pushed[5] = source[5] + np.array([70.0, 0.0])  # past the next point to its right, and beyond
    assert _fold_count(bend_offsets(size, source, pushed, "affine")) > 100
    share = unfolded_share(source, pushed, size, least=20.0)
    assert 0.1 < share < 0.9
    cut = source + share * (pushed - source)
    assert _fold_count(bend_offsets(size, source, cut, "affine")) == 0
    sliver = source.copy()  # two points almost on top of each other swap places: a sliver turns over
    sliver = np.vstack([sliver, sliver[5] + [0.5, 0.2]])
    swapped = np.vstack([source, source[5]])
    swapped[5] = sliver[-1]
    assert unfolded_share(sliver, swapped, size, least=20.0) == 1.0


def test_a_shape_placed_per_half_takes_each_half_of_a_turned_face():
    """A frontal face's smile placed on the same face turned (its far half narrowed to 0.6, its near half widened
    to 1.15 about the nose, as a turn looks): one similarity by the eyes and nose puts the far mouth corner several
    px wide, past where that half of the face ends; placed per half (Region.placed_per_half, the bank's mean smile)
    each corner lands on the turned face's own, within a pixel across. Same landmarks: the same placement either way;
    a point on the nose's line does not move sideways."""
    from engine.face.frame import align_face
    from engine.face.regions import FACE_FRAME, MOUTH
    from engine.face.warp import foreshortened
    from engine.io.images import load_photo
    from tests.conftest import EXAMPLES

    frontal = align_face(load_photo(EXAMPLES / "obama_1.jpg"), {"kind": "dlib_chip", "size": [150, 150],
                                                                 "padding": 0.25}).landmarks
    mid = frontal[[27, 30, 33], 0].mean()
    turned = frontal.copy()
    turned[:, 0] = mid + (frontal[:, 0] - mid) * np.where(frontal[:, 0] < mid, 0.6, 1.15)
    mouth = list(MOUTH)
    one = target_landmarks(frontal, turned, MOUTH, FACE_FRAME)[mouth]
    per_half = target_landmarks(frontal, turned, MOUTH, FACE_FRAME, per_half=True)[mouth]
    across = lambda placed: np.abs(placed[:, 0] - turned[mouth, 0])  # noqa: E731
    assert across(one)[0] > 4.0 and across(per_half).max() < 1.0, (across(one), across(per_half))
    assert np.allclose(target_landmarks(frontal, frontal, MOUTH, FACE_FRAME, per_half=True),
                       target_landmarks(frontal, frontal, MOUTH, FACE_FRAME), atol=1e-6)
    def along(marks, point):  # along the eye line, from the nose
        u = (marks[45] - marks[36]) / np.linalg.norm(marks[45] - marks[36])
        return float((point - marks[[27, 30, 33]].mean(0)) @ u)

    on_line = frontal.copy()
    on_line[62] -= along(frontal, frontal[62]) * (frontal[45] - frontal[36]) / np.linalg.norm(frontal[45] - frontal[36])
    assert abs(along(frontal, on_line[62])) < 1e-9
    assert abs(along(turned, foreshortened(on_line, on_line, turned, (62,))[62])) < 1e-6


def test_a_half_strength_opening_lays_the_guides_mouth_whole(dlib_backbone, small_pair, tmp_path):
    """At strength 0.5 a mouth bent half-way open shows the guide's teeth whole inside its opening: laid half over the
    reference's stretched lips they looked ghostly (a CLI user's smile at 0.5). Elsewhere the start goes half-way, and
    a mouth that closes goes half-way throughout."""
    from engine.api import backbone_recipe
    from engine.objective.composite import frame_start, start_image
    from engine.options import EditOptions
    from tests.conftest import EXAMPLES

    closed = tmp_path / "biden_1.png"  # a closed mouth, opened by obama_1's
    im = Image.open(EXAMPLES / "biden_1.jpg").convert("RGB").crop((250, 150, 750, 650))
    im.save(closed)
    _, recipe = backbone_recipe(EditOptions(region="mouth"), dlib_backbone)
    frame = edit(closed, guide=small_pair[1], backbone=dlib_backbone, region="mouth", iterations=0,
                 strength=0.5).frame
    laid = frame.laid(frame.share(0.5))
    assert isinstance(laid, np.ndarray) and laid.max() > 0.95 and laid.min() == pytest.approx(0.5)
    goal = frame.bent_landmarks(0.5)[0]
    inside = np.zeros(laid.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(goal[60:68]).astype(np.int32)], 1)
    assert inside.sum() > 30 and laid[inside > 0].mean() > 0.9  # the bent opening: the guide's pixels, whole
    assert (laid[frame.mask < 1e-3] == 0.5).all()  # away from the mouth: half-way
    ref, guide = frame.bent(0.5)
    init = start_image("composite", ref, guide, frame.mask, 0, recipe, frame.own, frame.bent_landmarks(0.5))
    start = frame_start(frame, 0.5, "composite", 0, recipe)
    np.testing.assert_allclose(start, ref + laid[..., None] * (init - ref), atol=1e-3)
    assert frame.laid(1.0) == 1.0 and frame.laid(0.0) == 0.0
    closing = edit(small_pair[1], guide=small_pair[0], backbone=dlib_backbone, region="mouth", iterations=0,
                   strength=0.5).frame  # obama_1's open laugh takes biden_2's less open one
    assert closing.laid(0.5) == 0.5
