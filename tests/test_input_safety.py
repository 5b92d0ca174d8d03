"""Reliability and safety at the edges: images, masks, output paths, the bridge, Ctrl-C.

Each test reproduces one way a user's file or request used to crash the engine, print a
traceback or give a wrong picture with exit 0; now each is a FATError that says what was
wrong and what to do, with a documented exit code, and leaves no output, no temp file and
the input untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from engine.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_USAGE, FATError
from engine.face.masks import user_mask
from engine.frontends import bridge
from engine.frontends.cli import check_inputs, parser
from engine.frontends.cli import main as cli_main
from engine.frontends.protocol import make_request, parse_request, raw_image
from engine.io.images import kept_monochrome, load_photo, monochrome, probe_image, save_photo, to_native
from engine.io.paths import MAX_PIXELS, MAX_SIDE
from tests.conftest import EXAMPLES

PROJECT = Path(__file__).resolve().parents[1]
REF, GUIDE = EXAMPLES / "biden_2.jpg", EXAMPLES / "obama_1.jpg"


# --- helpers ------------------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_of_zeros(width: int, height: int, idat: bytes | None = None) -> bytes:
    """An 8-bit gray PNG of the given size whose rows are all zero: a few KB that decode to width x height bytes.
    `idat` replaces the real data (a header that promises what no file holds)."""
    if idat is None:
        z, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
        parts += [z.compress(row) for _ in range(height)]
        idat = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def gradient16(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth 16-bit RGB picture whose values use the whole range (mostly far from white)."""
    y, x = np.mgrid[:h, :w]
    return np.dstack([x * 65535 // (w - 1), y * 65535 // (h - 1), (x + y) * 65535 // (w + h - 2)]).astype(np.uint16)


def write16(path: Path, rgb16: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def no_models(tmp_path, monkeypatch) -> Path:
    """An empty models folder: an edit that got past the cheap checks would stop with exit 5, not 2 or 3."""
    d = tmp_path / "no-models"
    d.mkdir()
    monkeypatch.setenv("FAT_MODELS_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def small_ref(tmp_path_factory) -> Path:
    """A quick reference photo (~400 px)."""
    im = Image.open(REF).convert("RGB")
    im.thumbnail((400, 400))
    path = tmp_path_factory.mktemp("small") / "ref.png"
    im.save(path)
    return path


def edit_argv(ref, out, *extra) -> list[str]:
    return ["edit", str(ref), "--guide", str(GUIDE), "-o", str(out), "--quiet", "--iterations", "2",
            "--backbone", "dlib-resnet", *map(str, extra)]


# --- 1. 16-bit photos saved as 8-bit-only types -------------------------------------------------------

@pytest.mark.parametrize("ext", [".jpg", ".webp"])
def test_16bit_photo_saved_as_jpg_or_webp_is_scaled_to_8_bits_not_white(tmp_path, ext):
    rgb16 = gradient16()
    photo = load_photo(write16(tmp_path / "in16.png", rgb16))
    assert photo.dtype == np.uint16
    notes = save_photo(photo, photo.rgb, tmp_path / f"out{ext}")
    assert len(notes) == 1 and "scaled to 8 bits" in notes[0] and ".png or .tif" in notes[0]
    back = cv2.cvtColor(cv2.imread(str(tmp_path / f"out{ext}"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert back.dtype == np.uint8
    expected = rgb16 / 257.0
    assert np.abs(back - expected).mean() < 3  # scaled, not clipped (clipping made 99% of it 255)
    assert (back == 255).mean() < 0.05


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_photo_saved_as_png_or_tiff_keeps_16_bits(tmp_path, ext):
    rgb16 = gradient16()
    photo = load_photo(write16(tmp_path / "in16.png", rgb16))
    assert save_photo(photo, photo.rgb, tmp_path / f"out{ext}") == []
    back = cv2.imread(str(tmp_path / f"out{ext}"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), rgb16)


def _zlib_level_class(png: bytes) -> int:
    """FLEVEL of the first IDAT's zlib header: 0 for levels 0-1, 1 for 2-5, 2 for 6, 3 for 7-9 (RFC 1950)."""
    at = png.index(b"IDAT") + 4
    return png[at + 1] >> 6


def test_png_results_are_written_with_the_fast_lossless_zlib_level(tmp_path):
    rgb = (gradient16() // 257).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    photo = load_photo(tmp_path / "in.png")
    out = tmp_path / "out.png"
    save_photo(photo, photo.rgb, out)
    assert _zlib_level_class(out.read_bytes()) == 0  # level 1 (Pillow's default 6 is class 2)
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB), rgb)


def test_16bit_alpha_is_scaled_too_and_jpeg_says_it_drops_alpha(tmp_path):
    rgba16 = np.dstack([gradient16(), np.full((48, 64), 32896, np.uint16)])  # alpha ~ 128/255
    path = tmp_path / "in16a.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgba16, cv2.COLOR_RGBA2BGRA))
    photo = load_photo(path)
    assert len(save_photo(photo, photo.rgb, tmp_path / "o.webp")) == 1
    assert np.all(np.asarray(Image.open(tmp_path / "o.webp"))[..., 3] == 128)
    notes = save_photo(photo, photo.rgb, tmp_path / "o.jpg")
    assert len(notes) == 2 and "transparency is dropped" in notes[1]


def test_cli_says_before_the_edit_that_a_16bit_photo_becomes_8_bits(tmp_path, capsys):
    ref16 = write16(tmp_path / "ref16.png", gradient16())
    args = parser().parse_args(["edit", str(ref16), "--guide", str(GUIDE), "-o", str(tmp_path / "o.jpg")])
    check_inputs(args)
    err = capsys.readouterr().err
    assert "note:" in err and "scaled to 8 bits" in err
    check_inputs(parser().parse_args(["edit", str(ref16), "--guide", str(GUIDE), "-o", str(tmp_path / "o.png")]))
    assert "note" not in capsys.readouterr().err
    assert probe_image(ref16).bits == 16 and probe_image(GUIDE).bits == 8


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_cli_says_that_only_the_first_frame_or_page_is_edited(tmp_path, capsys, fmt):
    """An animated GIF or a multi-page TIFF: its first frame was edited and the rest dropped without a word."""
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "green", "blue")]
    ref = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(ref, format=fmt, save_all=True, append_images=frames[1:])
    assert probe_image(ref).frames == 3 and probe_image(GUIDE).frames == 1
    check_inputs(parser().parse_args(["edit", str(ref), "--guide", str(GUIDE), "-o", str(tmp_path / "o.png")]))
    err = capsys.readouterr().err
    assert f"note: {ref} holds 3 frames or pages; only the first is edited" in err
    check_inputs(parser().parse_args(["edit", str(GUIDE), "--guide", str(ref), "-o", str(tmp_path / "o.png")]))
    assert "only the first is used" in capsys.readouterr().err
    frames[0].save(ref, format=fmt)
    check_inputs(parser().parse_args(["edit", str(ref), "--guide", str(GUIDE), "-o", str(tmp_path / "o.png")]))
    assert "note" not in capsys.readouterr().err


# --- 2. masks: colour first, alpha only for a uniform layer -----------------------------------------

def _square(h=40, w=50) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[10:30, 15:35] = True
    return m


def test_opaque_rgba_mask_is_read_by_its_colour_not_its_alpha(tmp_path):
    """White on black, opaque: used to be read by its (all-opaque) alpha, which edited everything."""
    sq = _square()
    rgba = np.zeros((*sq.shape, 4), np.uint8)
    rgba[sq, :3] = 255
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "mask.png")
    m = user_mask(tmp_path / "mask.png", sq.shape)
    assert np.array_equal(m > 0.5, sq)
    assert np.array_equal(user_mask(rgba, sq.shape) > 0.5, sq)  # the same rule for API arrays


@pytest.mark.parametrize("colour", [0, 255])
def test_uniform_layer_on_transparency_is_read_by_its_alpha(tmp_path, colour):
    sq = _square()
    rgba = np.zeros((*sq.shape, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[sq, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "layer.png")
    assert np.array_equal(user_mask(tmp_path / "layer.png", sq.shape) > 0.5, sq)


@pytest.mark.parametrize("kind", ["black", "transparent", "black-rgba"])
def test_mask_with_nothing_to_edit_is_an_error(tmp_path, kind):
    shape = (40, 50)
    a = {"black": np.zeros(shape, np.uint8), "transparent": np.full((*shape, 4), (255, 255, 255, 0), np.uint8),
         "black-rgba": np.full((*shape, 4), (0, 0, 0, 255), np.uint8)}[kind]
    Image.fromarray(a).save(tmp_path / "m.png")
    with pytest.raises(FATError, match="nothing to edit") as e:
        user_mask(tmp_path / "m.png", shape)
    assert e.value.exit_code == EXIT_INPUT


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_mask_array_is_an_error(bad):
    m = _square().astype(np.float32)
    m[0, 0] = bad
    with pytest.raises(FATError, match="NaN or infinite") as e:
        user_mask(m, m.shape)
    assert e.value.exit_code == EXIT_INPUT


def test_all_black_mask_through_the_cli_exits_3_and_writes_nothing(small_ref, models_dir, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    w, h = Image.open(small_ref).size
    Image.new("L", (w, h), 0).save(tmp_path / "mask.png")
    out = tmp_path / "out" / "o.png"
    code, err = cli(edit_argv(small_ref, out, "--mask", tmp_path / "mask.png"), capsys)
    assert code == EXIT_INPUT and "nothing to edit" in err
    assert not out.parent.exists() or listing(out.parent) == []


# --- 3. image bombs and decoder errors ---------------------------------------------------------------

@pytest.fixture
def no_decoding(monkeypatch):
    """Any decode fails the test: the refusal must come from the header alone."""
    def decoded(*_a, **_k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    monkeypatch.setattr(cv2, "imdecode", decoded)
    monkeypatch.setattr(cv2, "imread", decoded)


@pytest.mark.parametrize("size, real", [((60000, 60000), False), ((12000, 12000), True), ((131232, 160), True)],
                         ids=["60000x60000-header", "144-megapixel-bomb", "131232x160-strip"])
def test_image_bombs_are_refused_from_the_header_before_decoding(tmp_path, no_decoding, size, real):
    data = png_of_zeros(*size, idat=None if real else b"x")
    assert len(data) < 500_000
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    for source in (path, data):
        t = time.perf_counter()
        with pytest.raises(FATError) as e:
            load_photo(source)
        assert time.perf_counter() - t < 2
        assert e.value.exit_code == EXIT_INPUT and "megapixels" in str(e.value)
        assert f"{MAX_PIXELS / 1e6:g} megapixels and {MAX_SIDE} pixels a side" in str(e.value)
    assert str(path) in str(e.value) or "image bytes" in str(e.value)


def test_image_bomb_is_refused_by_the_cli_before_anything_loads(tmp_path, no_models, capsys):
    (tmp_path / "bomb.png").write_bytes(png_of_zeros(60000, 60000, idat=b"x"))
    code, err = cli(edit_argv(tmp_path / "bomb.png", tmp_path / "o.png"), capsys)
    assert code == EXIT_INPUT and "bomb.png" in err and "megapixels" in err
    assert listing(tmp_path) == ["bomb.png", "no-models"]


def test_broken_png_syntax_error_becomes_a_clear_error(tmp_path):
    data = bytearray(png_of_zeros(20, 10))
    data[20] ^= 0xFF  # inside IHDR: PIL raises SyntaxError (bad checksum)
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    with pytest.raises(FATError) as e:
        load_photo(path)
    assert e.value.exit_code == EXIT_INPUT and str(path) in str(e.value) and "a damaged PNG file" in str(e.value)


@pytest.mark.parametrize("exc", [SyntaxError("broken"), struct.error("unpack"), ValueError("bad"), KeyError("k"),
                                 ZeroDivisionError("z"), IndexError("i"), EOFError(), OSError("decoder error -2"),
                                 Image.DecompressionBombError("Image size (999999999 pixels) exceeds limit")])
def test_every_decoder_exception_becomes_a_fat_error_naming_the_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (30, 20), (90, 80, 70)).save(path)

    def fail(*_a, **_k):
        raise exc

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(FATError) as e:
        load_photo(path)
    assert e.value.exit_code == EXIT_INPUT and str(path) in str(e.value)


def test_opencv_errors_on_16bit_files_become_fat_errors(tmp_path, monkeypatch):
    path = write16(tmp_path / "in16.png", gradient16())

    def fail(*_a, **_k):
        raise cv2.error("OpenCV(4) imdecode: can't read data")

    monkeypatch.setattr(cv2, "imdecode", fail)
    with pytest.raises(FATError) as e:
        load_photo(path)
    assert e.value.exit_code == EXIT_INPUT and str(path) in str(e.value)


def test_unknown_formats_and_ghostscript_formats_are_refused(tmp_path):
    eps = tmp_path / "x.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    (tmp_path / "x.txt").write_text("hello")
    for path in (eps, tmp_path / "x.txt"):
        with pytest.raises(FATError, match="not a readable image") as e:
            load_photo(path)
        assert e.value.exit_code == EXIT_INPUT


def _with_idat_length(data: bytes, length: int) -> bytes:
    """The PNG with its first IDAT chunk's length field replaced (the chunk then runs past the file's end)."""
    at = data.index(b"IDAT") - 4
    return data[:at] + struct.pack(">I", length) + data[at + 4:]


def test_png_chunk_longer_than_the_file_is_refused_at_once(tmp_path):
    """Found by the fuzzer: OpenCV allocated and zeroed the 3.7 GB a damaged 16-bit PNG's IDAT claimed (6 s)."""
    data = _with_idat_length(cv2.imencode(".png", gradient16()[..., ::-1])[1].tobytes(), 0xDCB807C7)
    t = time.perf_counter()
    with pytest.raises(FATError, match="truncated") as e:
        load_photo(data)
    assert e.value.exit_code == EXIT_INPUT and time.perf_counter() - t < 1


def test_damaged_length_fields_do_not_allocate_what_they_claim(tmp_path):
    """Found by the fuzzer: PIL read a damaged IDAT length's 2 GB from the file object at once (MemoryError)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 24), 7, np.uint8)).convert("P").save(buf, "PNG")
    path = tmp_path / "long-idat.png"
    path.write_bytes(_with_idat_length(buf.getvalue(), 0x7FFFFFFF))
    code = ("import resource, sys; from engine.errors import FATError; from engine.io.images import load_photo; "
            "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024; "
            "resource.setrlimit(resource.RLIMIT_AS, (size + (512 << 20),) * 2)\n"
            "try:\n    load_photo(sys.argv[1]); print('ok')\nexcept FATError as e:\n    print('FATError', e)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=PROJECT,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.split()[0] in ("ok", "FATError"), out.stderr[-2000:]


# --- 4. truncated files --------------------------------------------------------------------------------

def _encoded(kind: str) -> bytes:
    photo = np.asarray(Image.open(GUIDE).convert("RGB").resize((240, 300)))
    if kind == "png16":
        return cv2.imencode(".png", cv2.cvtColor(photo.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))[1].tobytes()
    buf = io.BytesIO()
    fmt, kw = {"jpeg": ("JPEG", {"quality": 90}), "jpeg-progressive": ("JPEG", {"progressive": True}),
               "png": ("PNG", {}), "tiff": ("TIFF", {}), "webp": ("WEBP", {"quality": 90})}[kind]
    Image.fromarray(photo).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["jpeg", "jpeg-progressive", "png", "png16", "tiff"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_files_are_refused_not_edited_with_a_grey_half(tmp_path, kind, keep):
    data = _encoded(kind)
    load_photo(data)  # whole: fine
    path = tmp_path / f"cut.{kind[:4]}"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(FATError) as e:
        load_photo(path)
    assert e.value.exit_code == EXIT_INPUT and str(path) in str(e.value)
    assert "truncated" in str(e.value) and "re-export or re-download" in str(e.value)


def test_truncated_jpeg_through_the_cli_exits_3_leaving_nothing(small_ref, models_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    buf = io.BytesIO()
    Image.open(small_ref).save(buf, "JPEG", quality=92)
    ref = tmp_path / "in" / "cut.jpg"
    ref.parent.mkdir()
    ref.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    before = sha(ref)
    out = tmp_path / "out" / "o.png"
    code, err = cli(edit_argv(ref, out, "--debug-dir", tmp_path / "out" / "dbg"), capsys)
    assert code == EXIT_INPUT and "truncated" in err and str(ref) in err
    assert sha(ref) == before and listing(ref.parent) == ["cut.jpg"]
    assert not out.parent.exists() or listing(out.parent) == []


# --- 5. output paths: refused before the edit ----------------------------------------------------------

@pytest.mark.parametrize("case", ["parent-is-a-file", "grandparent-is-a-file", "output-is-a-folder",
                                  "sidecar-is-a-folder", "name-too-long"])
def test_unusable_output_paths_are_refused_before_the_edit(tmp_path, no_models, capsys, case):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "o.json").mkdir()
    out = {"parent-is-a-file": tmp_path / "file.txt" / "o.png",
           "grandparent-is-a-file": tmp_path / "file.txt" / "sub" / "o.png", "output-is-a-folder": tmp_path / "dir.png",
           "sidecar-is-a-folder": tmp_path / "o.png", "name-too-long": tmp_path / ("x" * 240 + ".png")}[case]
    before = listing(tmp_path)
    code, err = cli(edit_argv(REF, out), capsys)
    assert code == EXIT_USAGE, err  # 2, before the edit (which would stop at 5 here: no models)
    assert str(out.with_suffix("")) in err and "choose another -o path" in err
    assert listing(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused_before_the_edit(tmp_path, no_models, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = cli(edit_argv(REF, ro / "o.png"), capsys)
        assert code == EXIT_USAGE and "cannot write into" in err
    finally:
        ro.chmod(0o755)


def test_debug_dir_that_is_a_file_is_refused_before_the_edit(tmp_path, no_models, capsys):
    (tmp_path / "dbg").write_text("a file")
    out = tmp_path / "o.png"
    code, err = cli(edit_argv(REF, out, "--debug-dir", tmp_path / "dbg"), capsys)
    assert code == EXIT_USAGE and "--debug-dir" in err and "not a folder" in err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert (tmp_path / "dbg").read_text() == "a file"


def test_debug_pictures_may_not_replace_an_input_or_the_result(tmp_path, no_models, capsys):
    ref = tmp_path / "crops.png"
    Image.open(REF).save(ref)
    code, err = cli(edit_argv(ref, tmp_path / "sub" / "o.png", "--debug-dir", tmp_path), capsys)
    assert code == EXIT_USAGE and "overwrite the input" in err
    code, err = cli(edit_argv(REF, tmp_path / "d" / "before-after.png", "--debug-dir", tmp_path / "d"), capsys)
    assert code == EXIT_USAGE and "overwrite the result" in err


# --- 6. API inputs -------------------------------------------------------------------------------------

def test_api_takes_encoded_image_bytes_under_the_same_limits(tmp_path):
    data = REF.read_bytes()
    assert np.array_equal(load_photo(data).rgb, load_photo(REF).rgb)
    assert np.array_equal(load_photo(bytearray(data)).rgb, load_photo(memoryview(data)).rgb)
    for bad, text in ((b"not an image at all", "not a readable image"), (data[:2000], "truncated"),
                      (b"", "not a readable image"), (data[:10], "truncated")):
        with pytest.raises(FATError, match=text) as e:
            load_photo(bad)
        assert e.value.exit_code == EXIT_INPUT


def test_bytes_through_edit_are_an_image_not_a_type_error(dlib_backbone):
    from engine import edit

    r = edit(REF.read_bytes(), guide=GUIDE.read_bytes(), iterations=0, backbone=dlib_backbone)
    assert r.image.shape[:2] == Image.open(REF).size[::-1]
    with pytest.raises(FATError) as e:
        edit(b"\x89PNG garbage", guide=GUIDE, iterations=0, backbone=dlib_backbone)
    assert e.value.exit_code == EXIT_INPUT
    with pytest.raises(FATError) as e:
        edit(42, guide=GUIDE, iterations=0, backbone=dlib_backbone)
    assert e.value.exit_code == EXIT_USAGE and "is not an image" in str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_image_arrays_are_refused(bad):
    a = np.full((20, 30, 3), 100.0)
    a[3, 4, 1] = bad
    with pytest.raises(FATError, match="NaN or infinite") as e:
        load_photo(a)
    assert e.value.exit_code == EXIT_INPUT


def test_16bit_gray_pil_image_keeps_its_16_bits(tmp_path):
    gray = (np.arange(40 * 60).reshape(40, 60) * 27).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray)
    im = Image.open(tmp_path / "g16.png")
    assert im.mode == "I;16"
    photo = load_photo(im)
    assert photo.dtype == np.uint16 and np.array_equal(to_native(photo)[..., 0], gray)
    assert np.array_equal(load_photo(tmp_path / "g16.png").rgb, photo.rgb)
    with pytest.raises(FATError, match="32-bit"):
        load_photo(Image.fromarray(gray.astype(np.int32)))


@pytest.mark.parametrize("mode, ext", [("L", ".png"), ("L", ".jpg"), ("L", ".tif"), ("LA", ".png"), ("1", ".png"),
                                       ("I;16", ".png"), ("I;16", ".tif")])
def test_gray_photos_are_saved_gray(tmp_path, mode, ext):
    """A grayscale file comes back grayscale, in its depth (GIMP keeps a gray image gray; an RGB result tripled it)."""
    gray = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)
    path = tmp_path / "in.png"
    if mode == "I;16":
        cv2.imwrite(str(path), gray.astype(np.uint16) * 257)
    elif mode == "LA":
        Image.fromarray(np.dstack([gray, np.full_like(gray, 200)]), "LA").save(path)
    else:
        Image.fromarray(gray).convert(mode).save(path)
    photo = load_photo(path)
    assert photo.gray
    out = tmp_path / f"out{ext}"
    save_photo(photo, photo.rgb, out)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.ndim == 2 or (mode == "LA" and back.shape[2] == 2) or Image.open(out).mode == "LA"
    assert Image.open(out).mode in ("L", "LA", "I;16", "I;16B") and (back.dtype == np.uint16) == (mode == "I;16")
    if ext != ".jpg":
        expected = np.asarray(Image.open(path).convert("L") if mode in ("1", "LA") else Image.open(path))
        got = np.asarray(Image.open(out).convert("L") if mode == "LA" else Image.open(out))
        assert np.array_equal(got, expected)
    assert not load_photo(np.dstack([gray] * 3)).gray  # RGB stays RGB, whatever its pixels


def fake_profile(space: bytes) -> bytes:
    """An ICC profile's header naming a colour space (what the writer checks), padded to the header's size."""
    return bytes(16) + space + bytes(108)


@pytest.mark.parametrize("kind, profile, ext, kept", [
    ("rgb", "srgb", ".png", True), ("rgb", "srgb", ".jpg", True), ("rgb", "srgb", ".webp", True),
    ("rgb", b"GRAY", ".png", False), ("rgb", b"CMYK", ".jpg", False), ("gray", b"GRAY", ".png", True),
    ("gray", b"GRAY", ".jpg", True), ("gray", b"GRAY", ".webp", False), ("gray", "srgb", ".png", False),
    ("rgb16", b"GRAY", ".png", False), ("rgb16", "srgb", ".png", True), ("gray16", b"GRAY", ".png", True),
])
def test_a_profile_is_written_only_over_the_pixels_it_describes(tmp_path, kind, profile, ext, kept):
    """A CMYK JPEG's profile was written into the RGB result, a gray one onto RGB pixels: colour-managed viewers
    refuse such a file or misread its colours."""
    from PIL import ImageCms

    icc = (ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() if profile == "srgb"
           else fake_profile(profile))
    gray = (np.arange(24 * 32).reshape(24, 32) % 250).astype(np.uint8)
    array = {"rgb": np.dstack([gray, gray // 2, gray]), "gray": gray,
             "rgb16": np.dstack([gray, gray // 2, gray]).astype(np.uint16) * 257,
             "gray16": gray.astype(np.uint16) * 257}[kind]
    photo = load_photo(array)
    photo.icc = icc
    out = tmp_path / f"o{ext}"
    save_photo(photo, photo.rgb, out)
    written = Image.open(out).info.get("icc_profile")
    assert (written == icc) if kept else not written


def test_cmyk_is_read_through_its_own_profile_and_written_untagged_rgb(tmp_path):
    """Pillow's plain CMYK -> RGB ignores the file's profile (a print file's colours shift by ~47 levels on a
    portrait); LittleCMS reads it. The CMYK profile cannot describe the RGB result, so none is written."""
    from PIL import ImageCms

    from tests.gimp_env import CHROOT

    rgb = Image.open(REF).convert("RGB")
    rgb.thumbnail((160, 160))
    plain = tmp_path / "plain.jpg"  # no profile: Pillow's conversion, as before
    rgb.convert("CMYK").save(plain, quality=95)
    photo = load_photo(plain)
    assert photo.icc is None and np.array_equal(photo.rgb8(), np.asarray(Image.open(plain).convert("RGB")))
    damaged = tmp_path / "damaged.jpg"  # a profile that says CMYK but is not one: the plain conversion
    rgb.convert("CMYK").save(damaged, quality=95, icc_profile=fake_profile(b"CMYK"))
    assert np.array_equal(load_photo(damaged).rgb8(), photo.rgb8()) and load_photo(damaged).icc is None
    profile = CHROOT / "usr/share/color/icc/ghostscript/ps_cmyk.icc"  # Debian's (the GIMP tests' chroot)
    if not profile.exists():
        pytest.skip("no CMYK ICC profile here (the GIMP tests' Debian chroot has one)")
    cmyk_icc = profile.read_bytes()
    to_cmyk = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(cmyk_icc)),
                                      "RGB", "CMYK")
    cmyk = Image.new("CMYK", rgb.size)
    rgb.load()
    to_cmyk.transform.apply(rgb.getim(), cmyk.getim())  # (apply() fails writing this old profile back)
    managed = tmp_path / "managed.jpg"
    cmyk.save(managed, quality=95, icc_profile=cmyk_icc)
    photo = load_photo(managed)
    original = np.asarray(rgb, np.float32)
    assert np.abs(photo.rgb - original).mean() < 8  # Pillow's plain conversion: ~47
    assert np.abs(np.asarray(Image.open(managed).convert("RGB"), np.float32) - original).mean() > 20
    save_photo(photo, photo.rgb, tmp_path / "o.jpg")
    assert Image.open(tmp_path / "o.jpg").mode == "RGB" and not Image.open(tmp_path / "o.jpg").info.get("icc_profile")


def test_a_black_and_white_photos_change_is_made_gray():
    """kept_monochrome: the change's luma in every channel where the photo is black and white (within a level, as
    a B&W photo through a colour pipeline); a colour photo's result is left as it is."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (600, 40)).astype(np.uint8)
    bw = np.dstack([gray, gray, np.clip(gray.astype(int) + 1, 0, 255).astype(np.uint8)])  # within a level
    photo = load_photo(bw)
    assert monochrome(photo.rgb) and not photo.gray
    edited = photo.rgb.copy()
    edited[100:120, 10:30] += np.array([40.0, -10.0, 5.0], np.float32)  # a pink patch
    out = kept_monochrome(photo, edited)
    change = out - photo.rgb
    assert np.array_equal(out[:100], photo.rgb[:100])  # untouched pixels stay as they were
    assert np.allclose(change[100:120, 10:30], 0.299 * 40 - 0.587 * 10 + 0.114 * 5, atol=1e-3)
    colour = bw.copy()
    colour[590, 5] = (200, 10, 10)  # one colour pixel in the last band of rows
    photo = load_photo(colour)
    assert not monochrome(photo.rgb)
    assert kept_monochrome(photo, edited) is edited


def test_a_colour_guides_mouth_in_a_black_and_white_photo_is_gray(small_ref, models_dir, tmp_path, monkeypatch):
    """Mode A too: the guide's colour lips, laid in a B&W photo saved as RGB JPEG, come back as its grays."""
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    ref = tmp_path / "bw.jpg"
    Image.open(small_ref).convert("L").convert("RGB").save(ref, quality=95)
    out = tmp_path / "o.png"
    assert cli_main(edit_argv(ref, out)) == 0
    after, before = np.asarray(Image.open(out), np.int16), np.asarray(Image.open(ref), np.int16)
    assert (after.max(-1) == after.min(-1)).all() and (np.abs(after - before).max(-1) > 10).sum() > 100


@pytest.mark.parametrize("array, result", [
    (np.full((8, 9, 3), 200.0), 200.0), (np.full((8, 9, 3), 255.3), 255.0), (np.full((8, 9, 3), -0.2), "0..1"),
    (np.full((8, 9, 3), 300.0), "outside 0..255"), (np.full((8, 9, 3), -5.0), "outside 0..255"),
    (np.full((8, 9, 3), 0.8), "0..1"), (np.full((8, 9, 3), 77, np.int64), 77.0),
    (np.full((8, 9, 3), 4000, np.int32), "give uint16"), (np.ones((8, 9, 3), bool), "not pixels"),
    (np.full((8, 9, 2), 128, np.uint8), 128.0), (np.full((8, 9, 5), 1, np.uint8), "shape"),
    (np.zeros((0, 9, 3), np.uint8), "empty"), (np.zeros(5, np.uint8), "shape"),
])
def test_arrays_follow_the_documented_rule(array, result):
    if isinstance(result, str):
        with pytest.raises(FATError, match=result) as e:
            load_photo(array)
        assert e.value.exit_code == EXIT_INPUT
    else:
        photo = load_photo(array)
        assert photo.rgb.shape == (8, 9, 3) and np.all(photo.rgb == result)
        assert (photo.alpha is not None) == (array.shape[-1] == 2)


@pytest.mark.parametrize("source", [42, [[1, 2], [3, 4]], None, {"a": 1}])
def test_values_that_are_no_image_source_are_a_usage_error(source):
    with pytest.raises(FATError, match="is not an image") as e:
        load_photo(source)
    assert e.value.exit_code == EXIT_USAGE


def test_fifo_as_image_path_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    assert _returns_within(lambda: _raises(load_photo, tmp_path / "pipe.png"), 10) == "not a regular file"


# --- 7. the bridge trusts its request no further than its folder ---------------------------------------

def _raw_file(path: Path, array: np.ndarray) -> str:
    path.write_bytes(np.ascontiguousarray(array).tobytes())
    return str(path)


@pytest.fixture
def request_folder(tmp_path) -> Path:
    """A private request folder like the plug-in's: reference, guide and mask raws, a valid request."""
    d = tmp_path / "req"
    d.mkdir()
    ref = np.full((6, 8, 4), 100, np.uint8)
    raws = {"reference": raw_image(_raw_file(d / "reference.raw", ref), 8, 6, "RGBA8"),
            "guide": raw_image(_raw_file(d / "guide.raw", np.full((5, 7, 4), 9, np.uint16)), 7, 5, "RGBA16"),
            "mask": raw_image(_raw_file(d / "mask.raw", np.zeros((6, 8), np.uint8)), 8, 6, "Y8")}
    _write_request(d, make_request(raws["reference"], raws["guide"], str(d / "result.raw"),
                                   {"iterations": 0, "backbone": "dlib-resnet"}, raws["mask"]))
    return d


def _write_request(folder: Path, request: dict | str | bytes) -> Path:
    path = folder / "request.json"
    if isinstance(request, dict):
        request = json.dumps(request)
    path.write_bytes(request if isinstance(request, bytes) else request.encode("utf-8", "surrogatepass"))
    return path


def _request(folder: Path) -> dict:
    return json.loads((folder / "request.json").read_text())


def _bridge(path: Path, capsys) -> tuple[int, dict]:
    code = bridge.main([str(path)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, json.loads(out.out.strip().splitlines()[-1])


def _refused(folder: Path, request: dict | str, capsys, text: str = "bad request") -> str:
    code, event = _bridge(_write_request(folder, request), capsys)
    assert code == EXIT_INPUT and event["event"] == "error" and event["exit_code"] == EXIT_INPUT
    assert text in event["message"], event["message"]
    return event["message"]


def test_bridge_output_outside_the_request_folder_is_refused(request_folder, tmp_path, capsys):
    unrelated = tmp_path / "precious.txt"
    unrelated.write_text("keep me")
    for output in (str(unrelated), str(request_folder / ".." / "precious.txt"), "../precious.txt",
                   str(request_folder / "sub" / "result.raw")):
        req = {**_request(request_folder), "output": output}
        assert "request's own folder" in _refused(request_folder, req, capsys)
    assert unrelated.read_text() == "keep me"


@pytest.mark.parametrize("key", ["reference", "guide", "mask"])
def test_bridge_output_may_not_be_an_input_raw_or_the_request(request_folder, capsys, key):
    req = _request(request_folder)
    raw = Path(req[key]["raw"])
    before = sha(raw)
    assert "input files" in _refused(request_folder, {**req, "output": str(raw)}, capsys)
    assert sha(raw) == before
    assert "input files" in _refused(request_folder, {**req, "output": "request.json"}, capsys)


@pytest.mark.parametrize("kind", ["symlink", "folder", "fifo"])
def test_bridge_output_that_exists_and_is_not_a_regular_file_is_refused(request_folder, tmp_path, capsys, kind):
    out = request_folder / "result.raw"
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    {"symlink": lambda: out.symlink_to(target), "folder": out.mkdir, "fifo": lambda: os.mkfifo(out)}[kind]()
    assert "not a regular file" in _refused(request_folder, _request(request_folder), capsys)
    assert target.read_text() == "keep me"


def test_bridge_output_rule_accepts_what_the_plugin_sends(request_folder):
    req = parse_request(_request(request_folder), request_folder / "request.json")
    assert req.output == request_folder / "result.raw"
    (request_folder / "result.raw").write_bytes(b"old result")  # a regular file of its own folder: replaced
    parse_request({**_request(request_folder), "output": "result.raw"}, request_folder / "request.json")


def _raises(fn, *args) -> str:
    try:
        fn(*args)
    except FATError as e:
        assert e.exit_code == EXIT_INPUT
        return "not a regular file" if "not a regular file" in str(e) else str(e)
    return "no error"


def _returns_within(fn, seconds: float):
    """fn() in a daemon thread: a hang fails the test instead of blocking the run."""
    box = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert box, f"still blocked after {seconds} s"
    return box[0]


@pytest.mark.parametrize("key", ["reference", "guide", "mask"])
def test_bridge_fifo_raw_input_is_refused_without_hanging(request_folder, capsys, key):
    req = _request(request_folder)
    fifo = request_folder / f"{key}.fifo"
    os.mkfifo(fifo)
    req[key]["raw"] = str(fifo)
    path = _write_request(request_folder, req)
    code = _returns_within(lambda: bridge.main([str(path)]), 10)
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == EXIT_INPUT and "not a regular file" in event["message"]
    assert not (request_folder / "result.raw").exists()


@pytest.mark.parametrize("change, text", [
    (lambda d: d.joinpath("reference.raw").open("ab").write(b"\0"), "holds 193 bytes, expected 192"),
    (lambda d: d.joinpath("guide.raw").write_bytes(d.joinpath("guide.raw").read_bytes()[:-1]), "expected 280"),
    (lambda d: None, None),
])
def test_bridge_raw_files_of_the_wrong_size_are_refused(request_folder, capsys, change, text):
    change(request_folder)
    req = parse_request(_request(request_folder), request_folder / "request.json")
    if text is None:
        assert bridge.read_raw(req.guide).shape == (5, 7, 4) and bridge.read_raw(req.mask).shape == (6, 8)
        return
    with pytest.raises(FATError, match=text) as e:
        [bridge.read_raw(r) for r in (req.reference, req.guide)]
    assert e.value.exit_code == EXIT_INPUT


@pytest.mark.parametrize("request_text", [
    "[1, 2, 3]", '"a string"', "42", "null", "{", "[" * 100_000 + "]" * 100_000, "x" * (2 << 20),
    b"\xff\xfe{}", '{"version": true}', '{"version": 1.5}', '{"version": 1, "reference": "r"}',
    "WIDTH 4.0", "WIDTH 1e400", "WIDTH NaN", "WIDTH -1", "WIDTH 99999999999999999999", "WIDTH [8]", "FORMAT 8",
    "FORMAT []", "OUTPUT 7", "OUTPUT ''", 'OUTPUT "a\\u0000b"', 'OUTPUT "\\ud800"', "OUTPUT {}", "RAW []",
    'RAW "\\ud800x"', 'OPTIONS "region=mouth"', "OPTIONS []", "EXTRA 1",
])
def test_malformed_requests_exit_3_with_bad_request(request_folder, capsys, request_text):
    good = _request(request_folder)
    if isinstance(request_text, str) and request_text.split(" ", 1)[0].isupper():
        key, value = request_text.split(" ", 1)
        value = {"''": '""'}.get(value, value)
        req = json.loads(json.dumps(good))
        target = {"WIDTH": (req["reference"], "width"), "FORMAT": (req["guide"], "format"), "OUTPUT": (req, "output"),
                  "RAW": (req["mask"], "raw"), "OPTIONS": (req, "options"), "EXTRA": (req, "extra")}[key]
        target[0][target[1]] = "@@VALUE@@"
        request_text = json.dumps(req).replace('"@@VALUE@@"', value)
    _refused(request_folder, request_text, capsys)


def test_request_that_is_a_fifo_or_missing_is_refused(tmp_path, capsys):
    os.mkfifo(tmp_path / "request.json")
    code = _returns_within(lambda: bridge.main([str(tmp_path / "request.json")]), 10)
    assert code == EXIT_INPUT and "not a regular file" in capsys.readouterr().out
    assert bridge.main([str(tmp_path / "missing.json")]) == EXIT_INPUT


def test_huge_raw_sizes_are_refused_before_reading(request_folder, capsys):
    req = _request(request_folder)
    req["reference"].update(width=60000, height=60000)
    assert "megapixels" in _refused(request_folder, req, capsys, text="limit")


# --- 8. Ctrl-C while the engine starts ---------------------------------------------------------------

def _default_sigint() -> None:
    """A test run started in the background ignores SIGINT, and so would the engine (Python keeps SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("delay", [0.2, 0.5, 1.0, 2.0])
def test_ctrl_c_while_the_engine_starts_is_cancelled_exit_6(small_ref, models_dir, tmp_path, delay):
    """SIGINT during torch's import (first ~2 s) or the first steps: "cancelled", exit 6, no traceback."""
    env = {**os.environ, "FAT_MODELS_DIR": str(models_dir), "PYTHONPATH": str(PROJECT)}
    out = tmp_path / "o.png"
    argv = edit_argv(small_ref, out)
    argv[argv.index("--iterations") + 1] = "5000"
    proc = subprocess.Popen([sys.executable, "-m", "engine", *argv], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    time.sleep(delay)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "cancelled" in err, err
    assert proc.returncode == EXIT_CANCELLED, err
    assert not out.exists()


def test_ctrl_c_inside_an_extension_import_is_cancelled_not_internal(monkeypatch, capsys, tmp_path):
    """onnxruntime's pybind11 init turns a KeyboardInterrupt into ImportError('initialization failed')."""
    import builtins

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "engine.api":
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as e:
                raise ImportError("initialization failed") from e
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code = cli_main(edit_argv(REF, tmp_path / "o.png"))
    assert code == EXIT_CANCELLED and "cancelled" in capsys.readouterr().err


# --- options through the CLI (engine/options.py): regressions ------------------------------------------

@pytest.mark.parametrize("extra, text", [
    (["--box", "nan", "0", "10", "10"], "finite"), (["--box", "0", "0", "inf", "10"], "finite"),
    (["--seed", "-1", "--init", "noise"], "--seed"), (["--seed", str(2**63)], "--seed"),
    (["--seed", str(2**64 + 1)], "--seed"), (["--seed", "1e30"], "--seed"),
])
def test_cli_refuses_non_finite_boxes_and_out_of_range_seeds(tmp_path, no_models, capsys, extra, text):
    code, err = cli(edit_argv(REF, tmp_path / "o.png", *extra), capsys)
    assert code == EXIT_USAGE and text in err
    assert not (tmp_path / "o.png").exists()
