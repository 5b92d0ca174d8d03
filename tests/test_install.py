"""install.py's pieces that run without network or a new venv."""

from __future__ import annotations

import importlib.util
import json
import os

from tests.gimp_env import PROJECT


def load_install():
    spec = importlib.util.spec_from_file_location("fat_install", PROJECT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gimp_plugin_install_and_uninstall(tmp_path, monkeypatch):
    monkeypatch.setenv("FAT_GIMP_PLUGIN_DIR", str(tmp_path / "plug-ins"))
    install = load_install()
    install.install_gimp_plugin()
    script = tmp_path / "plug-ins" / "face-attribute-transfer" / "face-attribute-transfer.py"
    assert script.exists() and os.access(script, os.X_OK)
    config = json.loads((script.parent / "config.json").read_text())
    assert config["project"] == str(PROJECT) and config["python"].endswith("python")
    install.install_gimp_plugin(uninstall=True)
    assert not script.parent.exists()


def test_export_ok_detects_a_changed_onnx(tmp_path, monkeypatch, models_dir):
    install = load_install()
    monkeypatch.setattr(install, "MODELS", models_dir)
    assert install.export_ok("dlib-resnet")
    monkeypatch.setattr(install, "MODELS", tmp_path)
    assert not install.export_ok("dlib-resnet")


def test_vggface_is_found_in_models_or_cache(tmp_path, monkeypatch):
    install = load_install()
    monkeypatch.setattr(install, "MODELS", tmp_path / "m")
    monkeypatch.setattr(install, "USER_CACHE", tmp_path / "c")
    assert install.find_vggface_file() is None
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "vgg_face_dag.pth").write_bytes(b"x")
    assert install.find_vggface_file() == tmp_path / "c" / "vgg_face_dag.pth"
    # a download in progress is not a weights file
    (tmp_path / "c" / "vgg_face_dag.pth.part").write_bytes(b"x")
    assert install.find_vggface_file() is None
