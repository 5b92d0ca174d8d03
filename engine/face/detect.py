"""Find faces and their 68 landmarks with dlib (models from face_recognition_models).

HOG is the default detector (fast, frontal faces); the CNN detector (mmod) finds
more turned and small faces at ~1 s per megapixel on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import dlib
import numpy as np

from engine.errors import EXIT_NO_FACE, EXIT_USAGE, FATError
from engine.face import dlib_files as dlib_models

MIN_EYE_DISTANCE = 40.0  # px between eye centres; smaller faces cannot be edited well
DETECT_MAX_SIDE = 1600  # detect on a downscaled copy of larger images (landmarks at full size)


@dataclass
class Face:
    box: tuple[float, float, float, float]  # left, top, right, bottom in image pixels
    landmarks: np.ndarray  # 68 x 2 (x, y) in image pixels

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[42:48].mean(0) - self.landmarks[36:42].mean(0)))

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return (right - left) * (bottom - top)


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


def detect_faces(rgb8: np.ndarray, detector: str = "hog") -> list[Face]:
    """All faces, largest first."""
    small, s = _scaled(np.ascontiguousarray(rgb8))
    if detector == "hog":
        rects = list(_hog()(small, 1))
    elif detector == "cnn":
        found = _cnn()(small, 1)
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
                       "face (or try --detector cnn).", EXIT_NO_FACE)
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
    return choose_face(detect_faces(rgb8, detector), index, box, what)
