"""Both backbones pass one suite: load, taps, shapes, parity, spec against the files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import dlib
import numpy as np
import onnx
import pytest
import torch

from engine.errors import EXIT_BACKBONE, EXIT_USAGE, FATError
from engine.face import dlib_files as dlib_models
from engine.models.backbone import load_backbone, read_spec, resolve_name
from engine.objective.recipes import recipe_for
from export.dlib_dat import read_dat


@pytest.fixture(params=["dlib-resnet", "vggface"])
def backbone(request, models_dir):
    return load_backbone(request.param, directory=models_dir)


def test_loads_with_taps_and_shapes_from_spec(backbone):
    h, w = backbone.input_size
    x = torch.rand(2, 3, h, w) * 255
    with torch.no_grad():
        out = backbone.features(x, backbone.taps)
    for tap, shape in backbone.spec["taps"].items():
        assert list(out[tap].shape) == [2, *shape], tap
    recipe = recipe_for(backbone.name)  # the layers the objective reads must be taps of the export
    for layer in (*recipe.identity_layers, *recipe.attribute_layers, backbone.spec["descriptor_tap"]):
        assert layer in backbone.spec["taps"], layer


def test_torch_and_onnx_runtime_agree_per_tap(backbone, obama):
    from PIL import Image

    h, w = backbone.input_size
    real = np.asarray(Image.fromarray(obama).resize((w, h)), np.float32).transpose(2, 0, 1)[None]
    noise = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    x = np.concatenate([real, noise])
    fast = backbone.features_fast(x, backbone.taps)
    with torch.no_grad():
        slow = backbone.features(torch.from_numpy(x), backbone.taps)
    worst = max(float(np.abs(fast[t] - slow[t].numpy()).max()) for t in backbone.taps)
    assert worst <= 1e-4


def test_gradients_flow_to_the_pixels(backbone):
    h, w = backbone.input_size
    x = (torch.rand(1, 3, h, w) * 255).requires_grad_(True)
    tap = backbone.spec["descriptor_tap"]
    backbone.features(x, [tap])[tap].square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def _onnx_dims(value_info) -> list[int | str]:
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


def test_spec_on_disk_describes_its_onnx_file_and_selection(backbone, models_dir):
    """The JSON the exporter wrote is what the loaded Backbone reports, and it tells the truth
    about the ONNX file beside it: hash, input, outputs and the shapes both runtimes produce."""
    spec_path = models_dir / f"{backbone.name}.json"
    on_disk = json.loads(spec_path.read_text())
    assert backbone.spec == on_disk and read_spec(spec_path)[0] == on_disk
    onnx_path = models_dir / on_disk["onnx"]
    assert backbone.onnx_path.resolve() == onnx_path.resolve()
    assert on_disk["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    h, w = on_disk["input"]["size"]
    assert backbone.input_size == (h, w) and on_disk["crop_template"]["size"] == [h, w]
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    assert [(i.name, _onnx_dims(i)[1:]) for i in graph.input] == [(on_disk["input"]["name"], [3, h, w])]
    assert [o.name for o in graph.output] == list(on_disk["taps"])
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        slow = backbone.features(torch.from_numpy(x), backbone.taps)
    fast = backbone.features_fast(x, backbone.taps)
    for tap, shape in on_disk["taps"].items():
        assert list(slow[tap].shape) == list(fast[tap].shape) == [1, *shape], tap
    assert resolve_name(None, models_dir) == "vggface"  # preferred when installed


def test_tampered_onnx_is_refused(backbone, models_dir, tmp_path):
    for f in (f"{backbone.name}.json", f"{backbone.name}.onnx"):
        shutil.copy(models_dir / f, tmp_path / f)
    with open(tmp_path / f"{backbone.name}.onnx", "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"0123456789")
    with pytest.raises(FATError) as err:
        load_backbone(backbone.name, directory=tmp_path)
    assert "sha256" in str(err.value) and err.value.exit_code == EXIT_BACKBONE


def test_missing_backbone_and_unknown_name(tmp_path):
    with pytest.raises(FATError, match="install.py") as err:
        load_backbone(directory=tmp_path)
    assert err.value.exit_code == EXIT_BACKBONE
    with pytest.raises(FATError) as err:
        load_backbone("resnet50", directory=tmp_path)
    assert err.value.exit_code == EXIT_USAGE


def test_dlib_resnet_matches_dlibs_own_descriptor(dlib_backbone, obama):
    """Torch, ONNX Runtime and dlib itself on the same 150x150 chip of a real photo."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_models.landmarks_68()))
    shape = predictor(obama, detector(obama, 1)[0])
    chip = dlib.get_face_chip(obama, shape, size=150, padding=0.25)
    ref = np.array(dlib.face_recognition_model_v1(str(dlib_models.recognition_resnet())).compute_face_descriptor(chip))
    x = chip.transpose(2, 0, 1)[None].astype(np.float32)
    with torch.no_grad():
        t = dlib_backbone.features(torch.from_numpy(x), ["descriptor"])["descriptor"][0].numpy()
    o = dlib_backbone.features_fast(x, ["descriptor"])["descriptor"][0]
    assert np.abs(t - ref).max() <= 1e-4
    assert np.abs(o - ref).max() <= 1e-4


def test_dat_reader_rejects_damaged_files(tmp_path):
    good = dlib_models.recognition_resnet()
    data = Path(good).read_bytes()
    for name, blob in (("truncated.dat", data[: len(data) // 3]), ("garbage.dat", b"\x05hello" * 100),
                       ("extra.dat", data + b"\x00\x01")):
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(FATError) as err:
            read_dat(p)
        assert str(p) in str(err.value)
