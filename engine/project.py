"""Where the project's own files are, one answer for every module: the checkout, and its models folder, which
FAT_MODELS_DIR moves (the tests, an install shared between users). Standard library only: the GIMP plug-in
imports it too."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    return Path(os.environ.get("FAT_MODELS_DIR") or PROJECT / "models")
