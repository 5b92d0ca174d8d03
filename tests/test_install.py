"""install.py's pieces that run without network or a new venv."""

from __future__ import annotations

import json
import os

from tests.conftest import load_module
from tests.gimp_env import PROJECT


def load_install():
    return load_module("fat_install", PROJECT / "install.py")


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


def test_weights_option_exports_vggface(tmp_path, monkeypatch):
    from tests.weightfiles import random_state, write_pth

    install = load_install()
    monkeypatch.setattr(install, "MODELS", tmp_path / "models")
    src = write_pth(random_state(), tmp_path / "vgg_face_dag.pth")
    install.ensure_vggface(src, offline=True)
    spec = json.loads((tmp_path / "models" / "vggface.json").read_text())
    assert spec["source"]["format"] == "pytorch" and install.export_ok("vggface")


def test_download_is_resumable_and_failures_fall_back(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    install = load_install()
    served = tmp_path / "srv"
    served.mkdir()
    payload = bytes(range(256)) * 4000
    (served / "vgg_face_dag.pth").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/vgg_face_dag.pth"
        dest = tmp_path / "cache" / "vgg_face_dag.pth"
        dest.parent.mkdir()
        dest.with_name(dest.name + ".part").write_bytes(payload[:1000])  # an interrupted earlier download
        assert install.download(url, dest).read_bytes() == payload  # (this server ignores Range: starts over)
        monkeypatch.setattr(install, "MODELS", tmp_path / "none")
        monkeypatch.setattr(install, "USER_CACHE", tmp_path / "cache2")
        monkeypatch.setenv("FAT_VGGFACE_URLS", f"http://127.0.0.1:{server.server_port}/missing.pth {url}")
        got = install.obtain_vggface(None, offline=False)  # first URL 404s, the second works
        assert got is not None and got.read_bytes() == payload
    finally:
        server.shutdown()
    monkeypatch.setattr(install, "USER_CACHE", tmp_path / "cache3")
    monkeypatch.setenv("FAT_VGGFACE_URLS", "http://127.0.0.1:9/nothing.pth")
    assert install.obtain_vggface(None, offline=False) is None


def test_download_resumes_with_a_range_request(tmp_path):
    import http.server
    import threading

    install = load_install()
    payload = bytes(range(256)) * 4000
    sent = []

    class RangeHandler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            start = int(self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0])
            body = payload[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            sent.append(len(body))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "vgg_face_dag.pth"
        dest.with_name(dest.name + ".part").write_bytes(payload[:300_000])
        install.download(f"http://127.0.0.1:{server.server_port}/x", dest)
    finally:
        server.shutdown()
    assert dest.read_bytes() == payload and sent == [len(payload) - 300_000]


def test_gimp_plugin_goes_to_xdg_config_home_even_before_gimp_first_ran(tmp_path, monkeypatch):
    monkeypatch.delenv("FAT_GIMP_PLUGIN_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    install = load_install()
    monkeypatch.setattr(install, "gimp_installed", lambda: True)  # GIMP 3 present, never started: no user folder
    install.install_gimp_plugin()
    assert (tmp_path / "xdg" / "GIMP/3.0/plug-ins/face-attribute-transfer/face-attribute-transfer.py").exists()
    assert not (tmp_path / "home" / ".config").exists()
