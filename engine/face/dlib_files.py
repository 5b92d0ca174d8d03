"""Paths of dlib's model files shipped by the PyPI package face_recognition_models."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

from engine.errors import EXIT_BACKBONE, FATError


@lru_cache(maxsize=1)
def _package():
    try:
        with warnings.catch_warnings():  # it imports pkg_resources, which warns on every import
            warnings.simplefilter("ignore")
            import face_recognition_models
    except ImportError:
        raise FATError("face_recognition_models is not installed; run `python3 install.py`.", EXIT_BACKBONE) from None
    return face_recognition_models


def landmarks_68() -> Path:
    return Path(_package().pose_predictor_model_location())


def cnn_detector() -> Path:
    return Path(_package().cnn_face_detector_model_location())


def recognition_resnet() -> Path:
    return Path(_package().face_recognition_model_location())
