"""The plug-in's engine outside GIMP: the one-shot subprocess (protocol, errors, dying with the plug-in) and
the warm service path with its fallback (the service itself: tests/test_service.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.frontends.protocol import make_request, raw_image
from tests.conftest import EXAMPLES, load_module
from tests.gimp_env import PROJECT

PLUGIN_DIR = PROJECT / "plugin" / "face-attribute-transfer"


@pytest.fixture(scope="module")
def engine_process():
    return load_module("engine_process", PLUGIN_DIR / "engine_process.py")


@pytest.fixture(autouse=True)
def one_shot_engine(monkeypatch):
    """The subprocess path unless a test asks for the service (no test leaves a service running)."""
    monkeypatch.setenv("FAT_NO_SERVICE", "1")


@pytest.fixture
def service_runtime(monkeypatch, models_dir):
    """The service path, in a private runtime folder of the test's own; its service is stopped afterwards."""
    from engine.frontends import service_client

    base = Path(tempfile.mkdtemp(prefix="fat-rt-", dir="/tmp"))
    os.chmod(base, 0o700)
    for name, value in (("XDG_RUNTIME_DIR", str(base)), ("FAT_MODELS_DIR", str(models_dir)),
                        ("FAT_SERVICE_IDLE", "120")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FAT_NO_SERVICE")
    monkeypatch.delenv("FAT_SERVICE_SOCKET", raising=False)
    yield base
    try:
        os.kill(int(service_client.ping(timeout=2)["pid"]), signal.SIGTERM)
    except service_client.ServiceError:
        pass
    else:
        deadline = time.time() + 30
        while service_client.socket_path().exists() and time.time() < deadline:
            time.sleep(0.1)
    shutil.rmtree(base, ignore_errors=True)


def _raw(path, array):
    path.write_bytes(np.ascontiguousarray(array).tobytes())
    return str(path)


def _request(tmp_path, reference, guide, iterations=3, region="mouth", mask=None):
    """The request as the plug-in builds it: with the engine's own protocol module."""
    raw = [raw_image(_raw(tmp_path / f"{name}.raw", a), a.shape[1], a.shape[0], fmt)
           for name, a, fmt in (("ref", reference, "RGBA8"), ("guide", guide, "RGBA8"), ("mask", mask, "Y8"))
           if a is not None]
    options = {"region": region, "iterations": iterations, "backbone": "dlib-resnet"}
    req = make_request(raw[0], raw[1], str(tmp_path / "out.raw"), options, raw[2] if mask is not None else None)
    path = tmp_path / "request.json"
    path.write_text(json.dumps(req))
    return path


def _rgba(name, size=520):
    im = Image.open(EXAMPLES / name).convert("RGBA")
    im.thumbnail((size, size))
    return np.asarray(im)


def test_progress_and_result_through_the_bridge(engine_process, models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    ref, guide = _rgba("biden_2.jpg"), _rgba("obama_1.jpg")
    steps = []
    ok, message, done = engine_process.run_engine_process(sys.executable, str(PROJECT),
                                                          str(_request(tmp_path, ref, guide)),
                                                          lambda s, t: steps.append((s, t)))
    assert ok, message
    assert steps[0] == (1, 3) and steps[-1] == (3, 3)
    out = np.fromfile(tmp_path / "out.raw", np.uint8).reshape(ref.shape)
    assert (out[..., 3] == ref[..., 3]).all() and not np.array_equal(out, ref)
    assert done["backbone"] == "dlib-resnet"


def test_engine_errors_reach_the_plugin_as_text(engine_process, models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    blank = np.full((200, 200, 4), 128, np.uint8)
    ok, message, _ = engine_process.run_engine_process(sys.executable, str(PROJECT),
                                                       str(_request(tmp_path, blank, _rgba("obama_1.jpg"))),
                                                       lambda s, t: None)
    assert not ok and "no face found in the selected layer" in message  # the dialog's words
    ok, message, _ = engine_process.run_engine_process(str(tmp_path / "no-python"), str(PROJECT), "x", print)
    assert not ok and "install.py" in message


def _state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return "gone"
    return next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "?")


def test_engine_dies_when_the_plugin_is_killed(engine_process):
    """GIMP kills a plug-in whose progress is cancelled: the engine must not run on."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); import engine_process; "
         "p = engine_process.start([sys.executable, '-c', 'import time; time.sleep(120)'], '.'); "
         "print(p.pid, flush=True); time.sleep(120)", str(PLUGIN_DIR)],
        stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _state(child) in ("S", "R")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _state(child) not in ("gone", "Z"):
        time.sleep(0.1)
    assert _state(child) in ("gone", "Z")


def test_selection_picks_the_face_and_can_be_the_region(engine_process, models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    one = _rgba("biden_2.jpg")
    two = np.concatenate([one, one], axis=1)  # two faces; the selection covers the right one
    mask = np.zeros(two.shape[:2], np.uint8)
    h, w = one.shape[:2]
    mask[int(h * 0.55):int(h * 0.8), w + int(w * 0.3):w + int(w * 0.7)] = 255  # around the right face's mouth
    for region in ("mouth", "selection"):
        path = _request(tmp_path, two, _rgba("obama_1.jpg"), region=region, mask=mask)
        ok, message, _ = engine_process.run_engine_process(sys.executable, str(PROJECT), str(path), lambda s, t: None)
        assert ok, message
        out = np.fromfile(tmp_path / "out.raw", np.uint8).reshape(two.shape)
        changed = np.abs(out.astype(int) - two.astype(int)).max(-1) > 0
        assert changed[:, w:].sum() > 100 and changed[:, :w].sum() == 0  # only the selected face was edited
        if region == "selection":
            assert not changed[mask == 0].any()  # and only inside the selection


def test_a_chatty_engine_cannot_block_on_a_full_stderr_pipe(engine_process, tmp_path):
    """More than a pipe's worth (~64 KB) of stderr before the result must not hang the plug-in."""
    fake = tmp_path / "project" / "engine"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import json, sys\nsys.stderr.write('warning: noise\\n' * 40000)\nsys.stderr.flush()\n"
        "print(json.dumps({'event': 'done', 'backbone': 'fake', 'descriptor_distance': 0.1}), flush=True)\n")
    runner = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import engine_process; "
         "print(engine_process.run_engine_process(sys.executable, sys.argv[2], 'r.json', lambda s, t: None)[0])",
         str(PLUGIN_DIR), str(tmp_path / "project")], capture_output=True, text=True, timeout=60)
    assert runner.stdout.strip() == "True", runner.stderr


def _run_recorded(engine_process, request):
    steps, stages = [], []
    ok, message, done = engine_process.run_engine_process(sys.executable, str(PROJECT), str(request),
                                                          lambda s, t: steps.append((s, t)), stages.append)
    return ok, message, steps, stages


def test_the_plugin_uses_the_warm_service_and_starts_it_once(engine_process, service_runtime, tmp_path):
    from engine.frontends import service_client

    ref, guide = _rgba("biden_2.jpg"), _rgba("obama_1.jpg")
    ok, message, steps, stages = _run_recorded(engine_process, _request(tmp_path, ref, guide))
    assert ok, message
    assert stages == ["Starting the engine", "Loading the model", "Finding faces", "Optimising", "Pasting back"]
    assert steps[0] == (1, 3) and steps[-1] == (3, 3)
    out = np.fromfile(tmp_path / "out.raw", np.uint8).reshape(ref.shape)
    assert (out[..., 3] == ref[..., 3]).all() and not np.array_equal(out, ref)
    ok, message, _, stages = _run_recorded(engine_process, _request(tmp_path, ref, guide))
    assert ok, message
    assert stages == ["Finding faces", "Optimising", "Pasting back"]  # warm: no start, no model load
    assert service_client.ping()["served"] == 2


def test_the_plugin_falls_back_to_the_one_shot_engine(engine_process, service_runtime, tmp_path, capfd):
    folder = service_runtime / "face-attribute-transfer"
    folder.mkdir()
    os.chmod(folder, 0o755)  # not private: the service is not used
    ok, message, _, stages = _run_recorded(engine_process, _request(tmp_path, _rgba("biden_2.jpg"),
                                                                      _rgba("obama_1.jpg")))
    assert ok, message
    assert stages[:2] == ["Starting the engine", "Loading the model"]
    assert "open to other users" in capfd.readouterr().err and not list(folder.iterdir())


def test_fat_no_service_takes_the_subprocess(engine_process, service_runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("FAT_NO_SERVICE", "1")
    ok, message, _, _ = _run_recorded(engine_process, _request(tmp_path, _rgba("biden_2.jpg"), _rgba("obama_1.jpg")))
    assert ok, message
    assert not (service_runtime / "face-attribute-transfer").exists()
