"""Detect, align, mask and paste back on real and synthetic photos."""

from __future__ import annotations

import cv2
import dlib
import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.errors import EXIT_NO_FACE, EXIT_USAGE, FATError
from engine.face.align import template_transform, transform_points, umeyama, warp_crop
from engine.face.detect import choose_face, detect_faces, dlib_shape
from engine.face.frame import AlignedFace, align_face
from engine.face.masks import region_mask, resample
from engine.face.pasteback import paste_back
from engine.face.regions import REGIONS, region_names
from engine.io.images import load_photo, save_photo
from engine.io.paths import check_output_path
from export.dlib_backbone import dlib_spec
from export.vggface import VGGFACE_TEMPLATE
from tests.conftest import EXAMPLES

DLIB_TEMPLATE = {"kind": "dlib_chip", "size": [150, 150], "padding": 0.25}


def crop_mask(aligned: AlignedFace, region: str) -> np.ndarray:
    """A region's mask in crop pixels (what engine/face/frame.py builds for the reference)."""
    return region_mask(aligned.landmarks, region, aligned.size)


@pytest.fixture(scope="module")
def photo():
    return load_photo(EXAMPLES / "obama_1.jpg")


@pytest.fixture(scope="module")
def aligned(photo):
    return align_face(photo, DLIB_TEMPLATE)


def test_landmarks_land_on_the_face(aligned):
    left, top, right, bottom = aligned.face.box
    pts = aligned.face.landmarks
    assert (pts[:, 0] > left - 20).all() and (pts[:, 0] < right + 20).all()
    assert pts[36:48, 1].mean() < pts[48:68, 1].mean()  # eyes above the mouth
    assert 80 < aligned.face.eye_distance < 130


def test_chip_geometry_matches_dlib(photo, aligned):
    rgb8 = photo.rgb8()
    shape = dlib_shape(aligned.face.landmarks)  # the same landmarks: only the chip geometry is compared
    ref = dlib.get_face_chip(rgb8, shape, size=150, padding=0.25).astype(float)
    plain = cv2.warpAffine(photo.rgb, aligned.transform, (150, 150), flags=cv2.INTER_LINEAR)
    assert np.abs(plain - ref)[5:-5, 5:-5].mean() < 1.5  # same geometry (dlib resamples slightly differently)


# dlib's get_face_chip_details fits 68-point landmarks to a mean face (mean_face_shape_x/y in
# dlib/image_transforms/interpolation.h, points 17-67 in [0, 1]); these are its eye points 36-47.
DLIB_MEAN_EYES_X = [0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743,
                    0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335]
DLIB_MEAN_EYES_Y = [0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077,
                    0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099]


def dlib_declared_eyes(padding: float) -> np.ndarray:
    """Eye centres as fractions of a dlib chip: the mean face shrunk by the padding, as dlib does."""
    mean = np.stack([DLIB_MEAN_EYES_X, DLIB_MEAN_EYES_Y], 1).reshape(2, 6, 2).mean(1)
    return (padding + mean) / (2 * padding + 1)


def test_both_templates_put_the_eyes_where_declared(photo, aligned, tmp_path):
    m = template_transform(aligned.face.landmarks, VGGFACE_TEMPLATE)
    eyes = transform_points(m, aligned.face.landmarks[36:48]).reshape(2, 6, 2).mean(1)
    np.testing.assert_allclose(eyes / 224, VGGFACE_TEMPLATE["points"][:2], atol=0.03)
    # the dlib-resnet spec declares the template used here, and the chip puts the eyes where dlib's mean face has them
    dat = tmp_path / "model.dat"
    dat.write_bytes(b"")
    assert dlib_spec(dat)["crop_template"] == DLIB_TEMPLATE
    chip_eyes = aligned.landmarks[36:48].reshape(2, 6, 2).mean(1)
    np.testing.assert_allclose(chip_eyes / DLIB_TEMPLATE["size"], dlib_declared_eyes(DLIB_TEMPLATE["padding"]),
                               atol=0.015)  # about 2 px of 150
    assert abs(chip_eyes[0, 1] - chip_eyes[1, 1]) < 3  # level eyes after alignment


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (10, 2))
    a, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = umeyama(src, src @ (s * rot).T + t)
    np.testing.assert_allclose(m, np.hstack([s * rot, t[:, None]]), atol=1e-9)


def test_masks_cover_their_region_only(aligned):
    pts = aligned.landmarks
    mouth = region_mask(pts, "mouth", aligned.size)
    x, y = np.round(pts[48:68].mean(0)).astype(int)
    assert mouth[y, x] > 0.99
    for ex, ey in np.round(pts[36:48]).astype(int):
        assert mouth[ey, ex] < 0.05
    for region in region_names():
        if REGIONS[region].user_mask:  # "selection" is the user's own mask: no landmark mask to build
            with pytest.raises(FATError) as err:
                region_mask(pts, region, aligned.size)
            assert err.value.exit_code == EXIT_USAGE
            continue
        m = region_mask(pts, region, aligned.size)
        assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 and m.max() > 0.99
    assert tuple(resample(__import__("torch").from_numpy(mouth), (35, 35)).shape) == (1, 1, 35, 35)
    with pytest.raises(FATError) as err:
        region_mask(pts, "ears", aligned.size)
    assert err.value.exit_code == EXIT_USAGE


def test_round_trip_without_edit_changes_nothing(photo, aligned):
    mask = crop_mask(aligned, "mouth")
    out = paste_back(photo.rgb, aligned.transform, aligned.crop - aligned.crop, mask)
    assert np.array_equal(out, photo.rgb)


def test_where_another_face_was_laid_the_photos_fine_detail_goes_too():
    """Pasted as a difference alone, the photo's detail finer than the crop (an old teeth edge) shows through a
    replaced part as a ghost line (GIMP trial, a closed smile); with `replaced` the part is the result itself."""
    rng = np.random.default_rng(3)
    photo = np.full((240, 240, 3), 120.0, np.float32)
    photo[::2] += 60  # one-pixel stripes: finer than a half-resolution crop holds
    photo += rng.normal(0, 1, photo.shape).astype(np.float32)
    m = np.array([[0.5, 0, 0], [0, 0.5, 0]])  # photo -> crop at half resolution
    crop = cv2.warpAffine(photo, m, (120, 120), flags=cv2.INTER_AREA)
    mask = np.zeros((120, 120), np.float32)
    mask[30:90, 30:90] = 1
    result = crop.copy()
    result[30:90, 30:90] = 150.0  # another face's flat pixels laid in the middle
    plain = paste_back(photo, m, result - crop, mask)
    clean = paste_back(photo, m, result - crop, mask, (mask, crop))
    inside = (slice(80, 160), slice(80, 160))
    assert plain[inside].std() > 20  # the stripes show through
    assert clean[inside].std() < 2 and abs(clean[inside].mean() - 150) < 2
    assert np.array_equal(clean[:50], plain[:50]) and np.array_equal(clean[:50], photo[:50].clip(0, 255))


def test_an_edit_lands_in_the_region_and_nowhere_else(photo, aligned):
    mask = crop_mask(aligned, "mouth")
    delta = np.full_like(aligned.crop, 40.0)
    out = paste_back(photo.rgb, aligned.transform, delta, mask)
    changed = np.abs(out - photo.rgb).max(-1) > 0
    photo_mask = region_mask(aligned.face.landmarks, "mouth", photo.rgb.shape[:2], grow=0.7, feather=0.0)
    assert changed.sum() > 1000
    assert not (changed & (photo_mask == 0)).any()
    mouth_centre = np.round(aligned.face.landmarks[48:68].mean(0)).astype(int)
    assert out[mouth_centre[1], mouth_centre[0]].mean() > photo.rgb[mouth_centre[1], mouth_centre[0]].mean() + 30


def _synthetic_16bit_rgba(tmp_path, photo):
    rgb16 = (photo.rgb.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 257, photo.rgb.shape)).astype(
        np.uint16)
    alpha = np.random.default_rng(1).integers(0, 65535, photo.rgb.shape[:2]).astype(np.uint16)
    path = tmp_path / "in16.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.dstack([rgb16, alpha]), cv2.COLOR_RGBA2BGRA))
    return path, rgb16, alpha


def test_16bit_rgba_round_trip_keeps_depth_alpha_and_untouched_pixels(tmp_path, photo):
    path, rgb16, alpha = _synthetic_16bit_rgba(tmp_path, photo)
    p16 = load_photo(path)
    assert p16.dtype == np.uint16 and p16.alpha is not None
    a16 = align_face(p16, DLIB_TEMPLATE)
    mask = crop_mask(a16, "mouth")
    # no edit: byte-identical file content
    save_photo(p16, paste_back(p16.rgb, a16.transform, np.zeros_like(a16.crop), mask), tmp_path / "same.png")
    back = cv2.imread(str(tmp_path / "same.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    assert np.array_equal(cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA), np.dstack([rgb16, alpha]))
    # an edit: alpha untouched, pixels outside the region untouched
    out = paste_back(p16.rgb, a16.transform, np.full_like(a16.crop, 30.0), mask)
    save_photo(p16, out, tmp_path / "edit.png")
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "edit.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    assert np.array_equal(back[..., 3], alpha)
    far = region_mask(a16.face.landmarks, "mouth", rgb16.shape[:2], grow=0.7, feather=0.0) == 0
    assert np.array_equal(back[..., :3][far], rgb16[far])
    assert not np.array_equal(back[..., :3], rgb16)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.open(EXAMPLES / "obama_1.jpg").convert("RGB")
    rotated = im.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the tag saying "rotate 90 CW to display"
    path = tmp_path / "sideways.jpg"
    rotated.save(path, exif=exif, quality=95)
    p = load_photo(path)
    assert p.size == im.size[::-1]  # the engine's (h, w), PIL's (w, h)
    assert len(detect_faces(p.rgb8())) == 1


def test_icc_profile_is_kept(tmp_path, photo):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "icc.png"
    Image.fromarray(photo.rgb8()).save(src, icc_profile=icc)
    p = load_photo(src)
    assert p.icc == icc
    save_photo(p, p.rgb, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").info.get("icc_profile") == icc
    path16, _, _ = _synthetic_16bit_rgba(tmp_path, photo)
    p16 = load_photo(path16)
    p16.icc = icc
    save_photo(p16, p16.rgb, tmp_path / "out16.png")
    assert Image.open(tmp_path / "out16.png").info.get("icc_profile") == icc


def test_no_face_small_face_and_bad_index_are_clear_errors(photo):
    with pytest.raises(FATError, match="no face") as err:
        choose_face(detect_faces(np.full((300, 300, 3), 128, np.uint8)))
    assert err.value.exit_code == EXIT_NO_FACE
    small = cv2.resize(photo.rgb8(), None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    with pytest.raises(FATError, match="too small"):
        choose_face(detect_faces(small))
    with pytest.raises(FATError, match="face index 3"):
        choose_face(detect_faces(photo.rgb8()), index=3)


def test_several_faces_largest_by_default_or_by_box():
    group = load_photo(EXAMPLES / "obama_1.jpg").rgb8()
    two = np.hstack([group, group])
    faces = detect_faces(two)
    assert len(faces) == 2
    right = choose_face(faces, box=(group.shape[1], 0, two.shape[1], two.shape[0]))
    assert right.landmarks[:, 0].min() > group.shape[1]
    assert choose_face(faces) is faces[0]


def test_outputs_never_overwrite_inputs(tmp_path):
    with pytest.raises(FATError, match="overwrite"):
        check_output_path(tmp_path / "a.png", [tmp_path / "b.png", tmp_path / "a.png"])


def _checkerboard(size: int, cell: int) -> np.ndarray:
    """Black and white squares, 3 channels, 0..255: all its energy far above a shrunken crop's Nyquist."""
    y, x = np.mgrid[:size, :size]
    return np.repeat(((x // cell + y // cell) % 2 * 255.0)[..., None], 3, -1).astype(np.float32)


def _similarity(scale: float, angle: float, centre: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """Image -> crop: rotate and scale about `centre`, which lands in the middle of the crop."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    lin = np.array([[c, -s], [s, c]])
    return np.hstack([lin, (np.array(size[::-1]) / 2 - lin @ centre)[:, None]])


def test_warp_crop_antialiases_large_faces():
    """A face 6x the crop: a 4-pixel-period checkerboard (3x the crop's Nyquist) must average to grey,
    where a single sample per crop pixel (what warp_crop would be without supersampling) aliases."""
    pattern = _checkerboard(1400, cell=2)
    m = _similarity(1 / 6, 0.3, (700.0, 700.0), (150, 150))
    crop = warp_crop(pattern, m, (150, 150))
    assert crop.shape == (150, 150, 3) and np.isfinite(crop).all()
    assert abs(crop.mean() - 127.5) < 5 and crop.std() < 15
    for flags in (cv2.INTER_NEAREST, cv2.INTER_LINEAR):
        naive = cv2.warpAffine(pattern, m, (150, 150), flags=flags, borderMode=cv2.BORDER_REFLECT101)
        assert naive.std() > 60, flags  # the same pattern, aliased into coarse false squares


def test_eyebrow_and_eye_masks_do_not_spill_into_each_other(aligned):
    pts = aligned.landmarks
    brows = region_mask(pts, "eyebrows", aligned.size)
    eyes = region_mask(pts, "eyes", aligned.size)
    for x, y in np.round(np.vstack([pts[36:42].mean(0), pts[42:48].mean(0)])).astype(int):
        assert brows[y, x] < 0.05 and eyes[y, x] > 0.99
    mouth = region_mask(pts, "mouth", aligned.size)
    x, y = np.round(pts[30]).astype(int)  # nose tip: neither eyes nor mouth
    assert eyes[y, x] == 0
    assert mouth[y, x] < 0.5


def test_growing_a_mask_is_a_dilation_by_a_disk():
    """grow_and_feather's grow: a binary mask (through a distance transform: a bend's 100 px ring costs ms, not half
    a second) and a soft one (a dilation) both take every pixel within the radius and none beyond."""
    import cv2

    from engine.face.masks import grow_and_feather

    dot = np.zeros((61, 61), np.float32)
    dot[30, 30] = 1
    grown = grow_and_feather(dot, 10, 0, shape=True)
    assert grown[30, 40] == 1 and grown[30, 41] == 0 and grown[37, 37] == 1 and grown[38, 38] == 0
    assert grown.sum() == pytest.approx(np.pi * 10**2, rel=0.05)
    thin = grow_and_feather(dot * 0.3, 10, 0, shape=True)  # a hull thinner than a pixel still grows
    assert thin[30, 40] == 1 and thin[30, 41] == 0
    soft = grow_and_feather(dot * 0.5, 10, 0)
    assert soft.max() == 0.5 and soft[30, 40] == 0.5 and soft[30, 41] == 0
    hull = np.zeros((200, 200), np.float32)
    cv2.fillConvexPoly(hull, np.array([[80, 90], [120, 90], [130, 120], [100, 140], [70, 120]], np.int32), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61))
    dilated = cv2.dilate(hull, kernel)
    assert np.abs(grow_and_feather(hull, 30, 0, shape=True) - dilated).sum() < 0.02 * dilated.sum()  # up to its rim
