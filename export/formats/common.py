"""What every format reader returns, and helpers they share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import EXIT_INPUT, FATError


@dataclass
class RawWeights:
    """Weights read from one published file, already in torch layout.

    `channel_order` is the order of conv1_1's input channels in the source
    (Caffe, Torch7 and Keras VGG-Face were trained on BGR images).
    """

    sources: list[Path]
    arrays: dict[str, np.ndarray]
    channel_order: str  # "RGB" or "BGR"


def bad_file(path: Path, problem: str, hint: str = "") -> FATError:
    """An error naming the file and the problem, with what to do."""
    fix = hint or (
        "Re-download the file from its publisher (see README, 'VGG-Face weights'); "
        "a partial download or a different network gives this error."
    )
    return FATError(f"{path}: {problem}. {fix}", EXIT_INPUT)


def as_f32(a: object) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


@contextmanager
def parsing(path: Path, what: str, errors: tuple[type[BaseException], ...], hint: str = "") -> Iterator[None]:
    """Turn the exceptions a third-party parser raises on damaged input into a FATError.

    Only around the parser's own calls: each reader lists the types its library is
    known to raise on a damaged file, so a bug of ours still surfaces as one.
    """
    try:
        yield
    except errors as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise bad_file(path, f"{what} ({type(e).__name__}{': ' + detail[:200] if detail else ''})", hint) from None


def file_size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError as e:
        raise FATError(f"{path}: cannot read ({e.strerror}).", EXIT_INPUT) from None


def numeric(path: Path, name: str, value: object) -> np.ndarray:
    """`value` as an array of numbers; anything else (text, a struct, None) is a damaged file."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return value
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return np.asarray(value)
    kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
    raise bad_file(path, f"{name} is not an array of numbers (found {kind})")

