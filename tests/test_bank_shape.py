"""The shape an added smile bends to: the mean of the chosen examples' shapes (engine/bank/shape.py)."""

from __future__ import annotations

import numpy as np

from engine.bank.measure import scores
from engine.bank.shape import LOWER_LIP, bent_to_mean_shape, closed_to, mean_shape, opened_at_least
from engine.face.frame import align_face
from engine.face.regions import MOUTH, REGIONS
from engine.io.images import load_photo
from tests.conftest import EXAMPLES


def _similar(points: np.ndarray, scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(degrees)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ rot.T + np.asarray(shift)


def test_the_mean_shape_is_taken_in_the_faces_own_frame():
    """Two examples of other sizes and poses whose mouths differ from the face's by +d and -2d (in their own frames):
    placed by the eyes and nose, their mean is the face's mouth moved by -d/2; nothing else moves."""
    rng = np.random.default_rng(3)
    face = rng.uniform(20, 130, (68, 2))
    d = np.zeros_like(face)
    d[list(MOUTH)] = rng.uniform(-4, 4, (len(MOUTH), 2))
    shapes = [_similar(face + d, 2.0, 12.0, (40, -15)), _similar(face - 2 * d, 0.7, -8.0, (5, 30))]
    out = mean_shape(shapes, face, REGIONS["smile"])
    assert np.allclose(out, face - d / 2, atol=1e-6)


def test_one_example_alone_keeps_its_own_shape_and_pixels():
    rng = np.random.default_rng(5)
    marks = rng.uniform(20, 130, (68, 2))
    crop = rng.uniform(0, 255, (150, 150, 3)).astype(np.float32)
    bent, target = bent_to_mean_shape(crop, marks, [_similar(marks, 1.4, 5.0, (3, 3))], REGIONS["smile"])
    assert np.allclose(target, marks, atol=1e-6)
    assert np.abs(bent - crop).max() < 1e-3


def test_the_example_is_bent_only_where_its_mouth_moves():
    """A real face's crop: its corners lifted in one of two examples rise half as far; the eyes and the crop's
    edges stay as they were."""
    aligned = align_face(load_photo(EXAMPLES / "obama_1.jpg"), {"kind": "dlib_chip", "size": [150, 150],
                                                                "padding": 0.25})
    marks, crop = aligned.landmarks, aligned.crop.astype(np.float32)
    lifted = marks.copy()
    lifted[[48, 54]] -= (0, 6)
    bent, target = bent_to_mean_shape(crop, marks, [marks, lifted], REGIONS["smile"])
    assert np.allclose(target[[48, 54]], marks[[48, 54]] - (0, 3))
    assert np.allclose(np.delete(target, [48, 54], 0), np.delete(marks, [48, 54], 0))
    assert np.abs(bent - crop).max() > 1.0  # the pixels follow the mouth
    top = int(marks[36:48, 1].max()) + 2  # above the eyes' lowest point nothing moves
    assert np.abs(bent[:top] - crop[:top]).max() < 1e-3 and np.abs(bent[:, -3:] - crop[:, -3:]).max() < 1e-3


def test_a_mouth_is_opened_to_at_least_a_gap_by_its_lower_lip_alone():
    """A real face's closed mouth, the face rolled 20 degrees: opened to 0.3 eye distances, the gap measures 0.3,
    only the lower lip moved, square to the eye line; a mouth already that open is left as it is."""
    aligned = align_face(load_photo(EXAMPLES / "biden_1.jpg"), {"kind": "dlib_chip", "size": [150, 150],
                                                                "padding": 0.25})
    marks = _similar(aligned.landmarks, 1.3, 20.0, (10, -5))
    assert scores(marks)["mouth_open"] < 0.02
    opened = opened_at_least(marks, 0.3)
    assert abs(scores(opened)["mouth_open"] - 0.3) < 1e-3
    moved = np.flatnonzero(np.abs(opened - marks).max(1) > 1e-9)
    assert set(moved) == set(LOWER_LIP)
    eyes = marks[42:48].mean(0) - marks[36:42].mean(0)
    assert np.allclose((opened - marks)[moved] @ eyes, 0, atol=1e-6)  # square to the eye line
    assert ((opened - marks)[moved] @ np.array([-eyes[1], eyes[0]]) > 0).all()  # and down the face
    assert np.array_equal(opened_at_least(opened, 0.2), opened)


def test_an_open_example_is_bent_closed_to_a_gap_and_a_closed_one_is_left_alone():
    """A smile taken away never parts the reference's lips: an example more open than the reference is bent closed to
    the reference's gap, its pixels following; one already that closed is returned as it is."""
    aligned = align_face(load_photo(EXAMPLES / "eileen_collins_astronaut.png"), {"kind": "dlib_chip",
                                                                                 "size": [150, 150], "padding": 0.25})
    marks, crop = aligned.landmarks, aligned.crop.astype(np.float32)
    assert scores(marks)["mouth_open"] > 0.12
    bent, target = closed_to(crop, marks, 0.02)
    assert abs(scores(target)["mouth_open"] - 0.02) < 1e-3
    assert set(np.flatnonzero(np.abs(target - marks).max(1) > 1e-9)) == set(LOWER_LIP)
    assert np.abs(bent - crop).max() > 1.0
    top = int(marks[36:48, 1].max()) + 2
    assert np.abs(bent[:top] - crop[:top]).max() < 1e-3
    same_crop, same_marks = closed_to(crop, marks, 0.3)
    assert same_crop is crop and same_marks is marks
