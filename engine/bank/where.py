"""Where the default bank lives: the models folder (FAT_MODELS_DIR or models/), one per backbone."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def default_bank(backbone: str) -> Path:
    return Path(os.environ.get("FAT_MODELS_DIR", PROJECT / "models")) / f"bank-{backbone}.npz"
