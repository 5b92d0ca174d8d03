"""Find faces and their 68 landmarks with dlib (models from face_recognition_models).

HOG is the default detector (fast, frontal faces); the CNN detector (mmod) finds
more turned and small faces at ~1 s per megapixel on the CPU.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import dlib
import numpy as np

from engine.errors import EXIT_NO_FACE, EXIT_USAGE, FATError, option_ref
from engine.face import dlib_files as dlib_models

MIN_EYE_DISTANCE = 40.0  # px between eye centres; smaller faces cannot be edited well
DETECTION_CACHE = 16  # photos whose faces a process remembers (by content hash)
DETECT_MAX_SIDE = 1600  # detect on a downscaled copy of larger images (landmarks at full size)


@dataclass
class Face:
    box: tuple[float, float, float, float]  # left, top, right, bottom in image pixels
    landmarks: np.ndarray  # 68 x 2 (x, y) in image pixels

    @property
    def eye_distance(self) -> float:
        return eye_distance(self.landmarks)

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return (right - left) * (bottom - top)


def eye_distance(landmarks: np.ndarray) -> float:
    """Distance between the eye centres of 68 landmarks: the unit every face-relative size is given in."""
    return float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))


def inner_lip_gap(landmarks: np.ndarray) -> float:
    """The mean inner-lip gap (61-67, 62-66, 63-65) of 68 landmarks, in their own units."""
    p = np.asarray(landmarks, np.float64)
    return float(np.mean([np.linalg.norm(p[a] - p[b]) for a, b in ((61, 67), (62, 66), (63, 65))]))


@lru_cache(maxsize=1)
def _hog():
    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def _cnn():
    return dlib.cnn_face_detection_model_v1(str(dlib_models.cnn_detector()))


@lru_cache(maxsize=1)
def _predictor():
    return dlib.shape_predictor(str(dlib_models.landmarks_68()))


@lru_cache(maxsize=1)
def _recognizer():
    return dlib.face_recognition_model_v1(str(dlib_models.recognition_resnet()))


def dlib_shape(landmarks: np.ndarray) -> dlib.full_object_detection:
    """68 landmarks as dlib's own type (dlib wants integer positions; ours are integers already)."""
    return dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1),
                                      [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])


def descriptor_distance(a: np.ndarray, b: np.ndarray, landmarks: np.ndarray) -> float:
    """dlib's own descriptor distance between two RGB uint8 photos at the same face position."""
    shape = dlib_shape(landmarks)
    da = np.array(_recognizer().compute_face_descriptor(np.ascontiguousarray(a), shape))
    db = np.array(_recognizer().compute_face_descriptor(np.ascontiguousarray(b), shape))
    return float(np.linalg.norm(da - db))


def _scaled(rgb8: np.ndarray) -> tuple[np.ndarray, float]:
    side = max(rgb8.shape[:2])
    if side <= DETECT_MAX_SIDE:
        return rgb8, 1.0
    import cv2

    s = DETECT_MAX_SIDE / side
    return cv2.resize(rgb8, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), s


def detect_faces(rgb8: np.ndarray, detector: str = "hog", upsample: int = 1) -> list[Face]:
    """All faces, largest first. `upsample` 1 also finds faces under ~80 px (the image is searched at twice
    its size: ~4x the time); 0 finds the larger ones only."""
    key = (hashlib.blake2b(np.ascontiguousarray(rgb8).data, digest_size=16).hexdigest(), rgb8.shape, detector,
           upsample)
    if key not in _found and _helper is not None:
        _take_helper()
    if key not in _found:
        _found[key] = _detect(rgb8, detector, upsample)
        _trim()
    return list(_found[key])


_found: dict[tuple, list[Face]] = {}
_helper = None  # a helper process finding this command's faces (engine/face/prefetch.py), not yet taken


def _trim() -> None:
    while len(_found) > DETECTION_CACHE:  # a warm engine (GIMP, batch) sees the same photos again
        _found.pop(next(iter(_found)))


def expect(helper) -> None:
    """Faces a helper process is finding (engine/face/prefetch.py; None: none): the first search that misses the
    cache waits for it and takes its results."""
    global _helper
    _helper = helper


def _take_helper() -> None:
    global _helper
    helper, _helper = _helper, None
    helper.collect()


def remembered() -> list:
    """The cache as JSON-ready data (engine/face/prefetch.py's helper hands it to the edit's process)."""
    return [[[digest, list(shape), detector, upsample], [[list(f.box), f.landmarks.tolist()] for f in faces]]
            for (digest, shape, detector, upsample), faces in _found.items()]


def remember(found: list) -> int:
    """Add `remembered()` data from another process to this one's cache; how many searches were added."""
    for (digest, shape, detector, upsample), faces in found:
        key = (str(digest), tuple(int(v) for v in shape), str(detector), int(upsample))
        _found[key] = [Face(tuple(float(v) for v in box), np.array(points, dtype=np.float64).reshape(68, 2))
                       for box, points in faces]
    _trim()
    return len(found)


def _detect(rgb8: np.ndarray, detector: str, upsample: int) -> list[Face]:
    small, s = _scaled(np.ascontiguousarray(rgb8))
    if detector == "hog":
        rects = list(_hog()(small, upsample))
    elif detector == "cnn":
        found = _cnn()(small, upsample)
        rects = [d.rect for d in found]
    else:
        raise FATError(f"unknown detector {detector!r}; use hog or cnn.", EXIT_USAGE)
    faces = []
    for r in rects:
        box = (r.left() / s, r.top() / s, r.right() / s, r.bottom() / s)
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = _predictor()(rgb8, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        faces.append(Face(box, pts))
    return sorted(faces, key=lambda f: -f.area)


def _overlap(face: Face, box: tuple[float, float, float, float]) -> float:
    """Area shared by the face's box and `box` (a user's box or the bounds of a selection)."""
    left, top, right, bottom = face.box
    w = min(right, box[2]) - max(left, box[0])
    h = min(bottom, box[3]) - max(top, box[1])
    return max(0.0, w) * max(0.0, h)


def choose_face(faces: list[Face], index: int | None = None,
                box: tuple[float, float, float, float] | None = None, what: str = "image") -> Face:
    """The largest face, or face `index` (0 = largest), or the one `box` covers most."""
    if not faces:
        raise FATError(f"no face found in the {what}. Use a photo with a clearly visible, roughly frontal "
                       f"face (or try {option_ref('detector', 'cnn')}).", EXIT_NO_FACE)
    if box is not None:  # the faces the box touches, most covered first
        inside = sorted((f for f in faces if _overlap(f, box) > 0), key=lambda f: -_overlap(f, box))
        if not inside:
            raise FATError(f"no face found inside the given box/selection in the {what}.", EXIT_NO_FACE)
        faces = inside
    if index is not None:
        if not 0 <= index < len(faces):
            raise FATError(f"face index {index} asked for, but the {what} has {len(faces)} face(s) "
                           f"(0 = largest).", EXIT_NO_FACE)
        face = faces[index]
    else:
        face = faces[0]
    if face.eye_distance < MIN_EYE_DISTANCE:
        raise FATError(f"the face in the {what} is too small ({face.eye_distance:.0f} px between the eyes; at least "
                       f"{MIN_EYE_DISTANCE:.0f} needed). Use a larger photo or crop closer.", EXIT_NO_FACE)
    return face


def find_face(rgb8: np.ndarray, detector: str = "hog", index: int | None = None,
              box: tuple[float, float, float, float] | None = None, what: str = "image") -> Face:
    """The largest face is searched for at the image's own scale first (fast); a face chosen by index or
    box, or a photo whose faces are all small, gets the full search."""
    if index is None and box is None:
        quick = detect_faces(rgb8, detector, upsample=0)
        if quick and quick[0].eye_distance >= MIN_EYE_DISTANCE:
            return quick[0]
    return choose_face(detect_faces(rgb8, detector, upsample=1), index, box, what)
