"""Every published VGG-Face layout converts to the same canonical weights and ONNX."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch

from engine.errors import EXIT_INPUT, FATError
from engine.models.backbone import load_backbone
from engine.models.vggface import tap_names
from export.cli import export_vggface, main
from export.detect import resolve_sources
from export.formats import caffe
from export.vggface import load_canonical
from tests.conftest import quiet
from tests.weightfiles import WRITERS, bgr, random_state, write_caffe, write_pth

STATE = random_state(seed=1)


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_every_format_gives_the_same_canonical_weights(layout, tmp_path):
    fmt, files = resolve_sources(WRITERS[layout](STATE, tmp_path))
    got = load_canonical(fmt, files)
    assert sorted(got) == sorted(STATE)
    for k, v in STATE.items():
        np.testing.assert_array_equal(got[k], v, err_msg=f"{layout}: {k}")


@pytest.mark.parametrize("layout", ["caffe", "torch7", "matconvnet", "pytorch", "keras"])
def test_onnx_runtime_matches_torch_per_tap(layout, tmp_path):
    files = WRITERS[layout](STATE, tmp_path)
    spec = export_vggface(files, tmp_path / "out" / "vggface.onnx", log=quiet)
    assert spec["source"]["format"] == layout
    assert set(spec["taps"]) == set(tap_names())
    for tap, r in spec["verification"]["per_tap"].items():
        assert r["max_abs_diff"] <= 1e-4, (tap, r)
    # Independently of the exporter's own check: reload through the engine.
    bb = load_backbone(str(tmp_path / "out" / "vggface.json"))
    x = np.random.default_rng(3).uniform(0, 255, (2, 3, 224, 224)).astype(np.float32)
    fast = bb.features_fast(x, bb.taps)
    with torch.no_grad():
        slow = bb.features(torch.from_numpy(x), bb.taps)
    for tap in bb.taps:
        assert np.abs(fast[tap] - slow[tap].numpy()).max() <= 1e-4, tap


def test_bgr_formats_are_flipped_to_rgb(tmp_path):
    """A red image must give the same conv1_1 response whichever format it came from."""
    red = np.zeros((1, 3, 224, 224), np.float32)
    red[:, 0] = 255
    responses = []
    for layout in ("pytorch", "caffe", "keras"):
        d = tmp_path / layout
        d.mkdir()
        export_vggface(WRITERS[layout](STATE, d), d / "v.onnx", log=quiet)
        responses.append(load_backbone(str(d / "v.json")).features_fast(red, ["conv1_1"])["conv1_1"])
    assert np.allclose(responses[0], responses[1], atol=1e-5)
    assert np.allclose(responses[0], responses[2], atol=1e-5)


def test_caffe_new_style_blob_shapes(tmp_path):
    files = write_caffe(STATE, tmp_path, new_shape_field=True)
    got = load_canonical(*resolve_sources(files))
    np.testing.assert_array_equal(got["fc6.weight"], STATE["fc6.weight"])


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position): a decoder as small as the writer's encoder, to walk the bytes by hand."""
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


@pytest.mark.parametrize("v1_layers", [True, False], ids=["V1-layers", "layer"])
def test_hand_encoded_caffemodel_follows_caffe_proto(v1_layers, tmp_path):
    """The writer encodes caffe.proto's field numbers by hand, not through the reader's schema,
    so the reader is checked against caffe.proto rather than against itself."""
    model, _ = write_caffe(STATE, tmp_path, v1_layers=v1_layers)
    data = model.read_bytes()
    name = b"VGG_FACE_16_layers"
    # NetParameter.name = 1 (tag 0x0a), then the first layer: .layers = 2 (0x12) or .layer = 100 (0xa2 0x06)
    head = b"\x0a" + bytes([len(name)]) + name + (b"\x12" if v1_layers else b"\xa2\x06")
    assert data.startswith(head)
    size, start = _read_varint(data, len(head))
    first = data[start:start + size]
    if v1_layers:  # V1LayerParameter: name = 4 (0x22), type = 5 (varint, 0x28) CONVOLUTION = 4, blobs = 6 (0x32)
        assert first.startswith(b"\x22\x07conv1_1\x28\x04\x32")
    else:  # LayerParameter: name = 1 (0x0a), type = 2 (0x12), blobs = 7 (0x3a)
        assert first.startswith(b"\x0a\x07conv1_1\x12\x0bConvolution\x3a")
    weight = np.ascontiguousarray(STATE["conv1_1.weight"][:, ::-1], "<f4").tobytes()
    assert len(weight) == 432  # 4 x 3 x 3 x 3 floats: BlobProto.data = 5 packed (0x2a), length 432 = 0xb0 0x03
    assert b"\x2a\xb0\x03" + weight in first
    # and the reader decodes those bytes to the values written
    net = caffe.messages()["NetParameter"]()
    net.ParseFromString(data)
    layers = net.layers if v1_layers else net.layer
    assert len(net.layer if v1_layers else net.layers) == 0
    assert [lay.name for lay in layers] == [k[:-len(".weight")] for k in STATE if k.endswith(".weight")]
    if v1_layers:
        assert [lay.type for lay in layers] == [caffe.V1_CONVOLUTION] * 13 + [caffe.V1_INNER_PRODUCT] * 3
    else:
        assert {lay.type for lay in layers} == {"Convolution", "InnerProduct"}
    blob = layers[0].blobs[0]
    assert [blob.num, blob.channels, blob.height, blob.width] == list(STATE["conv1_1.weight"].shape)
    raw = caffe.read([model])
    assert sorted(raw.arrays) == sorted(STATE)
    for k, v in bgr(STATE).items():
        np.testing.assert_array_equal(raw.arrays[k], v, err_msg=k)


def test_publisher_archive_is_unpacked(tmp_path):
    files = write_caffe(STATE, tmp_path)
    archive = tmp_path / "vgg_face_caffe.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=f"vgg_face_caffe/{f.name}")
    fmt, unpacked = resolve_sources([archive], tmp_path / "x")
    assert fmt == "caffe" and {f.name for f in unpacked} == {f.name for f in files}
    np.testing.assert_array_equal(load_canonical(fmt, unpacked)["conv3_1.weight"], STATE["conv3_1.weight"])


# --- bad input: clear errors naming the file, never a traceback -------------------

def _wrong_classes(tmp_path):
    bad = dict(STATE)
    bad["fc8.weight"] = np.zeros((1000, STATE["fc8.weight"].shape[1]), np.float32)
    bad["fc8.bias"] = np.zeros(1000, np.float32)
    return write_pth(bad, tmp_path / "vgg_face_dag.pth")


def _missing_layer(tmp_path):
    return write_pth({k: v for k, v in STATE.items() if not k.startswith("conv4_2")}, tmp_path / "vgg_face_dag.pth")


def _truncated(tmp_path):
    p = write_pth(STATE, tmp_path / "vgg_face_dag.pth")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p


def _truncated_t7(tmp_path):
    p = WRITERS["torch7"](STATE, tmp_path)[0]
    p.write_bytes(p.read_bytes()[:5000])
    return p


def _file(name: str, data: bytes):
    """A maker of a file with these bytes (a damaged download, a wrong file)."""
    def make(tmp_path):
        p = tmp_path / name
        p.write_bytes(data)
        return p
    return make


def _nan(tmp_path):
    bad = dict(STATE)
    bad["conv2_1.weight"] = bad["conv2_1.weight"].copy()
    bad["conv2_1.weight"][0, 0, 0, 0] = np.nan
    return write_pth(bad, tmp_path / "vgg_face_dag.pth")


@pytest.mark.parametrize("make, problem", [
    (_wrong_classes, "2622"), (_missing_layer, "conv4_2"), (_truncated, "not a loadable"),
    (_file("VGG_FACE.caffemodel", b"\xff\xfe this is not protobuf" * 10), "Caffe"), (_truncated_t7, "Torch7"),
    (_nan, "NaN"), (_file("VGG_FACE.t7", b""), "empty"), (_file("weights.bin", b"1234"), "unrecognised"),
    (_file("rcmalli_vggface_tf_vgg16.h5", b"<html>404 not found</html>"), "HDF5"),
    (_file("vgg_face_caffe.tar.gz", b"\x1f\x8b\x08\x00garbage"), "archive"),
])
def test_bad_weights_give_clear_errors(make, problem, tmp_path, capsys):
    path = make(tmp_path)
    with pytest.raises(FATError) as err:
        export_vggface([path], tmp_path / "o.onnx", log=quiet)
    assert str(path) in str(err.value) and problem in str(err.value)
    assert err.value.exit_code == EXIT_INPUT
    # and through the CLI: the message and the documented exit code, no traceback
    assert main([str(path), "--out", str(tmp_path / "o.onnx"), "--quiet"]) == EXIT_INPUT
    stderr = capsys.readouterr().err
    assert "error:" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "o.onnx").exists()


def test_missing_file_and_no_arguments(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pth")]) == EXIT_INPUT
    assert "no such file" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.slow
def test_full_size_round_trip(tmp_path):
    """The real VGG-Face size (138 M parameters) through .pth -> ONNX -> ONNX Runtime."""
    full = random_state(widths=(64, 128, 256, 512, 512), fc_width=4096, seed=5)
    src = write_pth(full, tmp_path / "vgg_face_dag.pth")
    del full
    spec = export_vggface([src], tmp_path / "vggface.onnx", log=quiet)
    assert spec["taps"]["pool5"] == [512, 7, 7] and spec["taps"]["fc8"] == [2622]
    worst = max(r["max_rel_diff"] for r in spec["verification"]["per_tap"].values())
    assert worst <= 1e-4


def test_streamed_onnx_is_a_valid_model_with_named_initializers(tmp_path):
    import onnx

    files = WRITERS["pytorch"](STATE, tmp_path)
    export_vggface(files, tmp_path / "v.onnx", log=quiet)
    model = onnx.load(str(tmp_path / "v.onnx"))
    onnx.checker.check_model(model, full_check=True)
    names = {i.name for i in model.graph.initializer}
    assert {f"net.{k}" for k in STATE} <= names
    assert [i.name for i in model.graph.input] == ["image"]
    assert model.opset_import[0].version >= 17
