"""Shared fixtures: real backbones exported into a temporary models folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.models.backbone import Backbone, load_backbone
from export.cli import export_dlib, export_vggface
from tests.weightfiles import random_state, write_pth

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def quiet(*_a, **_k) -> None:
    pass


@pytest.fixture(scope="session", autouse=True)
def no_outside_service(tmp_path_factory):
    """A warm engine service the developer left running must not serve the tests' command-line edits (the CLI
    hands edits to one when it answers): the tests get a runtime folder of their own; the service tests make
    their own service in theirs."""
    import os

    folder = tmp_path_factory.mktemp("runtime")
    os.chmod(folder, 0o700)
    names = ("XDG_RUNTIME_DIR", "FAT_SERVICE_SOCKET", "FAT_NO_SERVICE")
    old = {n: os.environ.get(n) for n in names}
    os.environ["XDG_RUNTIME_DIR"] = str(folder)
    os.environ.pop("FAT_SERVICE_SOCKET", None)
    os.environ.pop("FAT_NO_SERVICE", None)
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session", autouse=True)
def own_user_cache(tmp_path_factory):
    """The engine's user cache (verified hashes, memory-mapped weight copies of every synthetic model the tests
    export) goes to a folder of the tests' own, not the developer's ~/.cache."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


def load_module(name: str, path: Path):
    """Import a file that is not in a package (install.py, the plug-in's helpers)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """dlib-resnet (real weights from face_recognition_models) and a small synthetic VGG-Face."""
    d = tmp_path_factory.mktemp("models")
    export_dlib(None, d / "dlib-resnet.onnx", log=quiet)
    src = write_pth(random_state(), tmp_path_factory.mktemp("weights") / "vgg_face_dag.pth")
    export_vggface([src], d / "vggface.onnx", log=quiet)
    return d


@pytest.fixture(scope="session")
def default_bank(models_dir, tmp_path_factory) -> Path:
    """A small dlib-resnet attribute bank as the models folder's default bank (what install.py builds from
    examples/): four example faces at <= 600 px, smiling / mouth_open labelled with both sides present."""
    from engine.frontends.cli import main as cli_main

    out = models_dir / "bank-dlib-resnet.npz"
    if not out.exists():
        d = tmp_path_factory.mktemp("bank-examples")
        for name, crop in (("biden_1.jpg", (250, 150, 750, 650)), ("biden_2.jpg", None), ("obama_1.jpg", None),
                           ("eileen_collins_astronaut.png", None)):
            im = Image.open(EXAMPLES / name).convert("RGB")
            im = im.crop(crop) if crop else im
            im.thumbnail((600, 600))
            im.save(d / (Path(name).stem + ".png"))
        (d / "labels.csv").write_text("file,smiling,mouth_open\nbiden_1.png,0,0\nbiden_2.png,1,1\nobama_1.png,1,1\n"
                                      "eileen_collins_astronaut.png,0,0\n")
        assert cli_main(["bank", "build", str(d), "-o", str(out), "--labels", str(d / "labels.csv"), "--backbone",
                         str(models_dir / "dlib-resnet.json"), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def dlib_backbone(models_dir) -> Backbone:
    return load_backbone("dlib-resnet", directory=models_dir)


@pytest.fixture(scope="session")
def vgg_backbone(models_dir) -> Backbone:
    return load_backbone("vggface", directory=models_dir)


@pytest.fixture(scope="session")
def obama() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / "obama_1.jpg").convert("RGB"))


@pytest.fixture(scope="session")
def small_pair(tmp_path_factory) -> list[Path]:
    """The examples biden_2 (reference) and obama_1 (guide) at ~500 px: quick to detect, still real photos."""
    d = tmp_path_factory.mktemp("pair")
    out = []
    for name in ("biden_2.jpg", "obama_1.jpg"):
        im = Image.open(EXAMPLES / name).convert("RGB")
        im.thumbnail((520, 520))
        out.append(d / name.replace(".jpg", ".png"))
        im.save(out[-1])
    return out
