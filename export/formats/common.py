"""What every format reader returns, and helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import EXIT_INPUT, FATError


@dataclass
class RawWeights:
    """Weights read from one published file, already in torch layout.

    `channel_order` is the order of conv1_1's input channels in the source
    (Caffe, Torch7 and Keras VGG-Face were trained on BGR images).
    """

    format: str
    sources: list[Path]
    arrays: dict[str, np.ndarray]
    channel_order: str  # "RGB" or "BGR"
    notes: dict[str, object] = field(default_factory=dict)


def bad_file(path: Path, problem: str, hint: str = "") -> FATError:
    """An error naming the file and the problem, with what to do."""
    fix = hint or (
        "Re-download the file from its publisher (see README, 'VGG-Face weights'); "
        "a partial download or a different network gives this error."
    )
    return FATError(f"{path}: {problem}. {fix}", EXIT_INPUT)


def as_f32(a: object) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))
