"""The exporter on damaged, crafted or interrupted input: a clear FATError (or a clean cancel)
and a usable models folder, never a crash, a traceback, a leak or a half-replaced backbone."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from engine.errors import EXIT_BACKBONE, EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL, FATError
from engine.io.files import sha256_file
from engine.models.backbone import load_backbone
from export import cli, commit
from export.cli import export_vggface, main
from export.vggface import load_canonical, read_raw
from tests.conftest import quiet
from tests.test_fuzz_readers import _DatWriter, mutate, structure_positions, write_seed
from tests.weightfiles import WRITERS, random_state, write_caffe, write_keras, write_pth, write_torch7

ROOT = Path(__file__).resolve().parents[1]
TINY = random_state(widths=(2, 2, 2, 2, 2), fc_width=4, seed=3)


def _patched(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(old) >= 1, f"pattern not found in {path.name}"
    path.write_bytes(data.replace(old, new, 1))
    return path


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([*map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def _subprocess(code: str, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


# --- 1. crafted sizes, strides and offsets: an error, not a segfault (exit 139) ---------------------------

def _fc8_header(fc: int) -> bytes:
    """The Torch7 bytes of fc8.weight's header: 2 dims, sizes, strides, storage offset (1-based)."""
    return struct.pack("<i", 2) + struct.pack("<qqqqq", 2622, fc, fc, 1, 1)


def _t7(tmp_path: Path, name: str, header: bytes) -> Path:
    fc = TINY["fc8.weight"].shape[1]
    p = write_torch7(TINY, tmp_path / f"{name}.t7")
    return _patched(p, _fc8_header(fc), header)


T7_CRAFTED = {  # name -> fc8.weight header (ndim, sizes, strides, offset)
    "huge_stride": struct.pack("<i", 2) + struct.pack("<qqqqq", 2622, 4, 1 << 40, 1, 1),
    "huge_offset": struct.pack("<i", 2) + struct.pack("<qqqqq", 2622, 4, 4, 1, 1 << 40),
    "negative_stride": struct.pack("<i", 2) + struct.pack("<qqqqq", 2622, 4, -(1 << 30), 1, 1),
    "size_beyond_storage": struct.pack("<i", 2) + struct.pack("<qqqqq", 2622, 1 << 12, 4, 1, 1),
}


def test_torch7_tensor_outside_its_storage_is_an_error_not_a_crash(tmp_path):
    """torchfile made a view from the file's sizes/strides/offset unchecked; the float conversion then read
    outside the storage and segfaulted. Run in a child process: before the fix it died with no message."""
    files = [_t7(tmp_path, name, header) for name, header in T7_CRAFTED.items()]
    code = ("import sys\nfrom export.cli import main\n"
            "for f in sys.argv[1:]:\n"
            "    print(f, main([f, '--out', f + '.onnx', '--quiet']), flush=True)\n")
    run = _subprocess(code, *map(str, files))
    assert run.returncode == 0, f"crashed (exit {run.returncode}) after:\n{run.stdout}\n{run.stderr[-2000:]}"
    assert [line.split()[-1] for line in run.stdout.splitlines()] == [str(EXIT_INPUT)] * len(files)
    for f in files:
        assert f"{f}: not a readable Torch7 model" in run.stderr
    assert "Traceback" not in run.stderr


def _t7_storage_size(tmp_path: Path, count: int) -> Path:
    """fc8.weight's storage declares `count` floats (the file holds 2622 * 4)."""
    p = write_torch7(TINY, tmp_path / "VGG_FACE.t7")
    storage = b"torch.FloatStorage" + struct.pack("<q", 2622 * 4)
    return _patched(p, storage, b"torch.FloatStorage" + struct.pack("<q", count))


@pytest.mark.parametrize("make", [
    lambda tmp: _t7_storage_size(tmp, 1 << 60),
    lambda tmp: _t7_storage_size(tmp, -5),
    lambda tmp: _t7(tmp, "many_dims", struct.pack("<i", 1 << 30) + struct.pack("<qqqqq", 2622, 4, 4, 1, 1)),
], ids=["storage_2^60", "storage_negative", "ndim_2^30"])
def test_declared_sizes_beyond_the_file_are_damage_not_out_of_memory(make, tmp_path, capsys):
    """A 60 KB file declaring exabytes was reported as 'out of memory' (exit 70)."""
    path = make(tmp_path)
    code, err = _cli([path, "--out", tmp_path / "o.onnx"], capsys)
    assert code == EXIT_INPUT, err
    assert str(path) in err and "out of memory" not in err and "Traceback" not in err


def _t7_field(tmp_path: Path, old: bytes, new: bytes) -> Path:
    return _patched(write_torch7(TINY, tmp_path / "VGG_FACE.t7"), old, new)


@pytest.mark.parametrize("make, problem", [
    (lambda tmp: _t7_field(tmp, b"nOutputPlane", b"nOutputPlanX"), "nOutputPlane"),  # was TypeError
    (lambda tmp: _t7_field(tmp, b"nn.Linear", b"nn.Lin\xb9ar"), "linear layers"),  # was UnicodeDecodeError
    (lambda tmp: _t7_field(tmp, struct.pack("<i", 3) + b"V 1" + struct.pack("<i", 13) + b"nn.Sequential",
                           struct.pack("<i", 5) + b"V inf" + struct.pack("<i", 13) + b"nn.Sequential"),
     "OverflowError"),
    (lambda tmp: _t7_field(tmp, b"torch.FloatStorage", b"torch.ByteStorage\x00"), "Torch7"),
], ids=["missing_field", "class_name_not_utf8", "version_inf", "storage_of_another_type"])
def test_torch7_damaged_fields(make, problem, tmp_path):
    path = make(tmp_path)
    with pytest.raises(FATError) as err:
        load_canonical("torch7", [path])
    assert err.value.exit_code == EXIT_INPUT and str(path) in str(err.value) and problem in str(err.value)


SCIPY_CRASHERS = [2, 61, 394]  # fuzz cases (tests/test_fuzz_readers.py) on which scipy.io.loadmat segfaulted


def test_matconvnet_v5_crash_in_scipy_is_a_clear_error(tmp_path):
    """scipy.io.loadmat segfaults on some damaged v5 files; the reader runs it in a child process."""
    seed = write_seed("matconvnet", tmp_path / "seed")[0].read_bytes()
    structure = structure_positions("matconvnet", tmp_path / "structure")
    crashers = []
    for case in SCIPY_CRASHERS:
        path = tmp_path / f"case{case}" / "vgg_face.mat"
        path.parent.mkdir()
        path.write_bytes(mutate(seed, "matconvnet", case, structure)[0])
        direct = _subprocess("import sys, scipy.io; scipy.io.loadmat(sys.argv[1], squeeze_me=True, "
                             "struct_as_record=False)", str(path))
        if direct.returncode < 0:
            crashers.append(path)
    if not crashers:
        pytest.skip("the seed files changed: these cases no longer crash scipy (the fuzz suite still covers it)")
    for path in crashers:
        with pytest.raises(FATError) as err:
            read_raw("matconvnet", [path])
        assert err.value.exit_code == EXIT_INPUT and str(path) in str(err.value)


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def _hang() -> None:
    time.sleep(60)


def test_isolated_parser_death_and_hang_become_fat_errors(tmp_path):
    from export.isolate import run_isolated

    path = tmp_path / "x.mat"
    with pytest.raises(FATError, match=r"x\.mat: the parser crashed \(SIGSEGV\)") as err:
        run_isolated(_segfault, (), path=path, what="parser", timeout_s=30)
    assert err.value.exit_code == EXIT_INPUT
    with pytest.raises(FATError, match="took longer than 1 s"):
        run_isolated(_hang, (), path=path, what="parser", timeout_s=1)
    assert run_isolated(sum, ([1, 2],), path=path, what="parser", timeout_s=30) == 3


def test_matconvnet_v5_leaves_no_scratch_files(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    files = WRITERS["matconvnet"](TINY, tmp_path)
    got = load_canonical("matconvnet", files)
    np.testing.assert_array_equal(got["fc6.weight"], TINY["fc6.weight"])
    bad = tmp_path / "bad.mat"
    bad.write_bytes(files[0].read_bytes()[:3000])
    with pytest.raises(FATError):
        load_canonical("matconvnet", [bad])
    assert list((tmp_path / "tmp").iterdir()) == []


# --- 2. transactional export: an interrupted export leaves the previous pair usable -----------------------

def _pth(state: dict[str, np.ndarray], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_pth(state, path)


def _first_export(tmp_path: Path) -> tuple[Path, str]:
    src = _pth(random_state(widths=(2, 2, 2, 2, 2), fc_width=4, seed=11), tmp_path / "a" / "v.pth")
    out = tmp_path / "models" / "vggface.onnx"
    export_vggface([src], out, log=quiet)
    return out, sha256_file(out)


def _loads(out: Path) -> str:
    """The backbone loads through its spec (the engine checks the ONNX's sha256); returns that hash."""
    spec = out.with_suffix(".json")
    load_backbone(str(spec))
    return json.loads(spec.read_text())["onnx_sha256"]


def _folder(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir())


def _second_source(tmp_path: Path) -> Path:
    return _pth(random_state(widths=(2, 2, 2, 2, 2), fc_width=4, seed=12), tmp_path / "b" / "v.pth")


def test_failed_verification_keeps_the_previous_pair(tmp_path, monkeypatch):
    out, old = _first_export(tmp_path)
    import export.onnx_writer as writer

    monkeypatch.setattr(writer, "verify", lambda net, path, taps, images: {t: {"max_abs_diff": 1.0,
                                                                               "max_rel_diff": 1.0} for t in taps})
    with pytest.raises(FATError) as err:
        export_vggface([_second_source(tmp_path)], out, log=quiet)
    assert err.value.exit_code == EXIT_BACKBONE
    assert _loads(out) == old == sha256_file(out)
    assert _folder(out) == ["vggface.json", "vggface.onnx"]


def _pause(marker: Path) -> None:
    Path(marker).touch()
    time.sleep(60)


def _pausing(fn, marker: Path, before: bool):
    """fn that, on its first call, creates `marker` and sleeps (before or after doing its work)."""
    calls: list[int] = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if before and len(calls) == 1:
            _pause(marker)
        result = fn(*args, **kwargs)
        if not before and len(calls) == 1:
            _pause(marker)
        return result
    return wrapped


def _driver() -> None:
    """(In a child process.) Export, pausing at a named moment until the test sends a signal."""
    point, marker, *argv = sys.argv[1:]
    import export.onnx_writer as writer

    if point == "verify":  # the staged ONNX is written, not yet verified
        writer.verify = _pausing(writer.verify, marker, before=True)
    elif point == "after-keep":  # the current spec names a link to the previous ONNX
        commit._keep_previous = _pausing(commit._keep_previous, marker, before=False)
    elif point == "after-onnx-move":  # the new ONNX is in place, the new spec not yet
        commit._move = _pausing(commit._move, marker, before=False)
    sys.exit(cli.main(argv))


def _start_driver(point: str, marker: Path, src: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    code = "from tests.test_export_safety import _driver; _driver()"
    proc = subprocess.Popen([sys.executable, "-c", code, point, str(marker), str(src), "--out", str(out), "--quiet"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, f"the export ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the export never reached the pause"
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_cancels_cleanly(signum, tmp_path):
    """Ctrl-C gave a traceback and exit 130; now 'cancelled', exit 6, no temp files, the old pair intact."""
    out, old = _first_export(tmp_path)
    proc = _start_driver("verify", tmp_path / "marker", _second_source(tmp_path), out)
    assert any(p.name.startswith(".vggface.onnx.export-") for p in out.parent.iterdir())  # the staged ONNX
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_CANCELLED, err
    assert "cancelled" in err and "Traceback" not in err
    assert _folder(out) == ["vggface.json", "vggface.onnx"]
    assert _loads(out) == old


@pytest.mark.parametrize("point", ["verify", "after-keep", "after-onnx-move"])
def test_kill_9_at_any_moment_leaves_a_usable_pair(point, tmp_path):
    """Before: the ONNX was replaced before verification and the spec after, so a kill in between left a
    spec whose hash did not match (every later edit exited 5)."""
    out, old = _first_export(tmp_path)
    src = _second_source(tmp_path)
    proc = _start_driver(point, tmp_path / "marker", src, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert _loads(out) == old  # at each of these moments the spec still names the previous bytes
    assert "/" not in json.loads(out.with_suffix(".json").read_text())["onnx"]  # a file beside the spec
    assert (sha256_file(out) == old) == (point != "after-onnx-move")
    # The next export cleans up what the killed one left, and installs the new pair.
    export_vggface([src], out, log=quiet)
    assert _folder(out) == ["vggface.json", "vggface.onnx"]
    assert _loads(out) == sha256_file(out) != old


def test_commit_failing_midway_leaves_a_usable_pair(tmp_path, monkeypatch):
    """An error (disk full, permissions) between the two moves: the spec still names a matching ONNX."""
    out, old = _first_export(tmp_path)
    original, calls = commit._move, []

    def failing_second_move(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(src, dst)

    monkeypatch.setattr(commit, "_move", failing_second_move)
    with pytest.raises(OSError):
        export_vggface([_second_source(tmp_path)], out, log=quiet)
    assert _loads(out) == old  # the previous ONNX, through the link the spec was repointed to
    monkeypatch.setattr(commit, "_move", original)
    export_vggface([_second_source(tmp_path)], out, log=quiet)
    assert _folder(out) == ["vggface.json", "vggface.onnx"]


def test_concurrent_staging_folders_of_live_processes_are_left_alone(tmp_path):
    out, _ = _first_export(tmp_path)
    live = out.parent / f".vggface.onnx.export-{os.getppid()}-abc"
    dead = out.parent / ".vggface.onnx.export-999999999-abc"
    for d in (live, dead):
        d.mkdir()
        (d / "vggface.onnx").write_bytes(b"partial")
    commit.sweep(out)
    assert live.exists() and not dead.exists()


# --- 3. equal initializers ---------------------------------------------------------------------------------

def test_equal_weights_are_kept_as_separate_initializers(tmp_path):
    """fc6 and fc7 biases all zero: the exporter merged them and the writer's check raised a traceback."""
    state = dict(TINY)
    for key in ("fc6.bias", "fc7.bias"):
        state[key] = np.zeros_like(TINY[key])
    src = write_pth(state, tmp_path / "v.pth")
    spec = export_vggface([src], tmp_path / "v.onnx", log=quiet)
    assert max(r["max_abs_diff"] for r in spec["verification"]["per_tap"].values()) <= 1e-4
    bb = load_backbone(str(tmp_path / "v.json"))
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 224, 224)).astype(np.float32)
    fast = bb.features_fast(x, ["fc7", "fc8"])
    with torch.no_grad():
        slow = bb.features(torch.from_numpy(x), ["fc7", "fc8"])
    for tap in ("fc7", "fc8"):
        assert np.abs(fast[tap] - slow[tap].numpy()).max() <= 1e-4


# --- 4. every reader failure is a FATError naming the file ---------------------------------------------

def _zip_with_pickle(tmp_path: Path, name: str, pkl: bytes) -> Path:
    src = zipfile.ZipFile(write_pth(TINY, tmp_path / "src.pth"))
    path = tmp_path / f"{name}.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            z.writestr(info.filename, pkl if info.filename.endswith("data.pkl") else src.read(info.filename))
    return path


def _truncated_pth(tmp_path: Path, fraction: float) -> Path:
    p = write_pth(TINY, tmp_path / "vgg_face_dag.pth")
    p.write_bytes(p.read_bytes()[:int(p.stat().st_size * fraction)])
    return p


def _caffe_bad_name(tmp_path: Path) -> Path:
    model = write_caffe(TINY, tmp_path)[0]
    return _patched(model, b"conv1_1", b"conv1\xff1")


def _targz_corrupt_deflate(tmp_path: Path) -> Path:
    """A .tar.gz whose deflate stream breaks after the first member's header (zlib.error while reading)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in write_caffe(TINY, tmp_path):
            tar.add(f, arcname=f"vgg_face_caffe/{f.name}")
    data = gzip.compress(buf.getvalue(), mtime=0)
    for at in range(len(data) // 2, len(data) - 32, 7):
        damaged = data[:at] + b"\xff" * 16 + data[at + 16:]
        try:
            zlib.decompress(damaged[10:], -15)
        except zlib.error:
            break
    else:
        raise AssertionError("no 16-byte overwrite breaks the deflate stream")
    path = tmp_path / "vgg_face_caffe.tar.gz"
    path.write_bytes(damaged)
    return path


def _keras_missing_layer(tmp_path: Path) -> Path:
    path = write_keras(TINY, tmp_path / "rcmalli_vggface_tf_vgg16.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["layer_names"] = np.array([*f.attrs["layer_names"], b"ghost"])
    return path


def _mat_class(tmp_path: Path, cls: int) -> Path:
    """The top-level variable's MATLAB array class byte (flags word after the first two tags) set to `cls`."""
    path = WRITERS["matconvnet"](TINY, tmp_path)[0]
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<II", data, 136) == (6, 8)  # miUINT32 array-flags subelement
    data[144] = cls
    path.write_bytes(bytes(data))
    return path


def _dat(tmp_path: Path, build, pad: int = 64) -> Path:
    w = _DatWriter(np.random.default_rng(0))
    w.int(1)
    w.string("loss_metric_2")
    build(w)
    path = tmp_path / "damaged.dat"
    path.write_bytes(bytes(w.buf) + b"\x00" * pad)
    return path


def _dat_up_to_first_tensor(w: _DatWriter, height: int = 150) -> None:
    """A .dat up to the first convolution's parameter tensor dimensions."""
    w.float(0.04)
    w.float(0.6)
    w.int(3)
    w.string("input_rgb_image_sized")
    for m in (122.782, 117.001, 104.298):
        w.float(m)
    w.int(height)
    w.int(150)
    w.string("con_5")
    w.int(2)  # tensor version


def _dat_two_unknown_dims(w: _DatWriter) -> None:
    _dat_up_to_first_tensor(w)
    for d in (-1, -1, 1, 1):  # numpy: "can only specify one unknown dimension" (ValueError)
        w.int(d)


def _backwards_dims(at: int) -> tuple[int, ...] | None:
    """Dimensions written at `at` whose (negative) float count takes the reader back to byte -1."""
    for k in (1, 2, 3):  # bytes of the first dimension's encoding; each 1 takes 2 bytes
        end = at + 1 + k + 6
        first = -(end + 1) // 4
        if (end + 1) % 4 == 0 and (abs(first).bit_length() + 7) // 8 == k:
            return (first, 1, 1, 1)
    return None


def _dat_backwards(tmp_path: Path) -> Path:
    """The old reader took a negative size as a step back to byte -1, then failed with IndexError."""
    for height in (150, 300, 70000, 1 << 25):  # encodings of 2..5 bytes move the tensor's position
        def build(w: _DatWriter, height=height) -> None:
            _dat_up_to_first_tensor(w, height)
            for d in _backwards_dims(len(w.buf)) or (0, 0, 0, 0):
                w.int(d)
        probe = _DatWriter(np.random.default_rng(0))
        probe.int(1)
        probe.string("loss_metric_2")
        _dat_up_to_first_tensor(probe, height)
        if _backwards_dims(len(probe.buf)):
            return _dat(tmp_path, build, pad=0)
    raise AssertionError("no height gives a position that reaches byte -1")


def _dat_huge_exponent(w: _DatWriter) -> None:
    w.int(1)
    w.int(5000)  # margin = 1 * 2**5000


DAMAGED = {  # name -> maker; the comment says what escaped as a traceback before
    "pth_truncated_quarter": lambda t: _truncated_pth(t, 0.25),  # OSError
    "pth_truncated_90pc": lambda t: _truncated_pth(t, 0.9),  # OSError
    "pth_pickle_pop_empty": lambda t: _zip_with_pickle(t, "a", b"\x80\x02e."),  # IndexError
    "pth_pickle_memo": lambda t: _zip_with_pickle(t, "b", b"\x80\x02h\x05."),  # KeyError
    "pth_pickle_reduce": lambda t: _zip_with_pickle(t, "c", b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R."),
    # ^ TypeError
    "pth_pickle_persid": lambda t: _zip_with_pickle(t, "d", b"\x80\x02K\x01Q."),  # AssertionError
    "caffe_name_not_utf8": _caffe_bad_name,  # TypeError
    "targz_corrupt_deflate": _targz_corrupt_deflate,  # zlib.error
    "keras_missing_layer": _keras_missing_layer,  # KeyError
    "mat_unknown_class": lambda t: _mat_class(t, 0x7F),  # UnboundLocalError (in scipy)
    "dat_two_unknown_dims": lambda t: _dat(t, _dat_two_unknown_dims),  # ValueError
    "dat_backwards": _dat_backwards,  # IndexError
    "dat_huge_exponent": lambda t: _dat(t, _dat_huge_exponent),  # OverflowError
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_files_give_exit_3_naming_the_file(name, tmp_path, capsys):
    path = DAMAGED[name](tmp_path)
    code, err = _cli([path, "--out", tmp_path / "o.onnx"], capsys)
    assert code == EXIT_INPUT, err
    assert str(path) in err and "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "o.onnx").exists()


def test_keras_h5_errors_from_the_hdf5_library(tmp_path):
    """h5py's RuntimeError/KeyError on damaged structure (cases the fuzzer found) are FATErrors naming the file."""
    seed = write_seed("keras", tmp_path / "seed")[0].read_bytes()
    structure = structure_positions("keras", tmp_path / "structure")
    path = tmp_path / "rcmalli_vggface_tf_vgg16.h5"
    refused = 0
    for case in (8, 13, 20, 24, 38, 49, 73, 79, 81, 287):
        path.write_bytes(mutate(seed, "keras", case, structure)[0])
        try:
            read_raw("keras", [path])
        except FATError as e:
            assert e.exit_code == EXIT_INPUT and str(path) in str(e)
            refused += 1
    assert refused


def test_legacy_pth_is_accepted(tmp_path):
    """torch.save's pre-1.6 format: refused with a misleading 're-download' message; torch reads it safely
    with weights_only=True (just not memory-mapped)."""
    path = tmp_path / "vgg_face_dag.pth"
    torch.save({k: torch.from_numpy(v) for k, v in TINY.items()}, path, _use_new_zipfile_serialization=False)
    got = load_canonical("pytorch", [path])
    for k, v in TINY.items():
        np.testing.assert_array_equal(got[k], v)


# --- 5. a .tar.gz leaves nothing in the temp folder ------------------------------------------------------

@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    import tempfile

    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _archive(tmp_path: Path, files: list[Path]) -> Path:
    archive = tmp_path / "vgg_face_caffe.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=f"vgg_face_caffe/{f.name}")
    return archive


def test_archive_export_removes_the_unpacked_model(tmp_path, private_tmp):
    archive = _archive(tmp_path, write_caffe(TINY, tmp_path))
    export_vggface([archive], tmp_path / "out" / "vggface.onnx", log=quiet)
    assert list(private_tmp.iterdir()) == []


def test_archive_with_a_damaged_model_removes_it_too(tmp_path, private_tmp, capsys):
    model, proto = write_caffe(TINY, tmp_path)
    model.write_bytes(model.read_bytes()[:1000])
    code, _ = _cli([_archive(tmp_path, [model, proto]), "--out", tmp_path / "o.onnx"], capsys)
    assert code == EXIT_INPUT
    assert list(private_tmp.iterdir()) == []


def test_archive_export_cancelled_removes_it_too(tmp_path, private_tmp, capsys, monkeypatch):
    """Ctrl-C while reading: the CLI's signal handler raises KeyboardInterrupt; finally-blocks clean up."""
    import export.vggface as vggface

    def interrupted(fmt, files):
        assert any(private_tmp.iterdir())  # unpacked
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(vggface, "load_canonical", interrupted)
    code, err = _cli([_archive(tmp_path, write_caffe(TINY, tmp_path)), "--out", tmp_path / "o.onnx"], capsys)
    assert code == EXIT_CANCELLED and "cancelled" in err
    assert list(private_tmp.iterdir()) == []


def test_stale_unpacked_folders_of_killed_runs_are_removed(tmp_path, private_tmp):
    stale = private_tmp / "fat-export-unpacked-999999999-x"
    stale.mkdir()
    (stale / "VGG_FACE.caffemodel").write_bytes(b"big")
    export_vggface([_archive(tmp_path, write_caffe(TINY, tmp_path))], tmp_path / "o.onnx", log=quiet)
    assert list(private_tmp.iterdir()) == []


# --- 6. HDF5 data stored in other files ---------------------------------------------------------------

def _secret(tmp_path: Path, n: int) -> Path:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(n, dtype="<f4").tobytes())  # any local file; float-shaped so it would export
    return secret


def _keras_with(tmp_path: Path, replace) -> Path:
    path = write_keras(TINY, tmp_path / "rcmalli_vggface_tf_vgg16.h5")
    with h5py.File(path, "r+") as f:
        g = f["fc8"]["fc8"]
        n = g["bias:0"].shape[0]
        del g["bias:0"]
        replace(g, n)
    return path


def _external_storage(tmp_path: Path) -> Path:
    secret = _secret(tmp_path, 2622)
    return _keras_with(tmp_path, lambda g, n: g.create_dataset("bias:0", (n,), "<f4",
                                                               external=[(str(secret), 0, 4 * n)]))


def _virtual(tmp_path: Path) -> Path:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(2622, dtype=np.float32)
    layout = h5py.VirtualLayout((2622,), np.float32)
    layout[:] = h5py.VirtualSource(str(other), "x", shape=(2622,))
    return _keras_with(tmp_path, lambda g, n: g.create_virtual_dataset("bias:0", layout))


def _external_link(tmp_path: Path) -> Path:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        write = f.create_group("fc8").create_group("fc8")
        write["kernel:0"] = TINY["fc8.weight"].T
        write["bias:0"] = TINY["fc8.bias"]
    path = write_keras(TINY, tmp_path / "rcmalli_vggface_tf_vgg16.h5")
    with h5py.File(path, "r+") as f:
        del f["fc8"]
        f["fc8"] = h5py.ExternalLink(str(other), "/fc8")
    return path


def _v73_external(tmp_path: Path) -> Path:
    """fc8's bias (the only 1 x 2622 array) re-created with external storage, and its reference updated."""
    path = WRITERS["matconvnet-v73"](TINY, tmp_path)[0]
    secret = _secret(tmp_path, 2622)
    with h5py.File(path, "r+") as f:
        for layer in f["#refs#"].values():
            if not (isinstance(layer, h5py.Group) and "weights" in layer):
                continue
            names = [f[r].name for r in layer["weights"][()].reshape(-1)]
            if f[names[1]].shape != (1, 2622):
                continue
            del f[names[1]]
            bias = f.create_dataset(names[1], (1, 2622), "<f4", external=[(str(secret), 0, 4 * 2622)])
            refs = np.array([f[names[0]].ref, bias.ref], dtype=h5py.ref_dtype).reshape(2, 1)
            del layer["weights"]
            layer.create_dataset("weights", data=refs)
    return path


@pytest.mark.parametrize("make, words", [
    (_external_storage, "external storage"), (_virtual, "virtual dataset"), (_external_link, "link to another file"),
    (_v73_external, "external storage"),
])
def test_hdf5_data_from_other_files_is_refused(make, words, tmp_path, capsys):
    """An .h5 could make the exporter copy any local file into the ONNX."""
    path = make(tmp_path)
    code, err = _cli([path, "--out", tmp_path / "o.onnx"], capsys)
    assert code == EXIT_INPUT, err
    assert str(path) in err and words in err
    assert not (tmp_path / "o.onnx").exists()


# --- 7. an internal error is one line and exit 70 ---------------------------------------------------------

def _boom(*_a, **_k):
    return 1 / 0


def test_internal_error_is_one_line_and_exit_70(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "export_vggface", _boom)
    src = write_pth(TINY, tmp_path / "v.pth")
    code, err = _cli([src, "--out", tmp_path / "o.onnx"], capsys)
    assert code == EXIT_INTERNAL
    assert "Traceback" not in err and "internal error (ZeroDivisionError" in err and len(err.splitlines()) == 1
    assert list((tmp_path / "cache").rglob("internal-error-*.log"))  # the traceback went to a log file
    code, err = _cli([src, "--out", tmp_path / "o.onnx", "--verbose"], capsys)
    assert code == EXIT_INTERNAL and "Traceback" in err and "ZeroDivisionError" in err
