"""Where the default bank lives: the models folder (FAT_MODELS_DIR or models/), one per backbone."""

from __future__ import annotations

from pathlib import Path

from engine.project import models_dir


def default_bank(backbone: str) -> Path:
    return models_dir() / f"bank-{backbone}.npz"
