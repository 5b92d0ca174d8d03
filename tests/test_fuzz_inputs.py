"""Mutation fuzzing of what a user hands the engine: photo files and GIMP bridge requests.

Every case must either succeed or raise FATError. Anything else is a bug a user would meet
as a traceback (exit 70), a crash without a message (exit 139), or a hang.

- images: small seed files (PNG 8/16-bit, RGBA, palette; JPEG baseline with EXIF and ICC,
  progressive; TIFF 8-bit LZW and 16-bit RGBA; WebP lossy and lossless; GIF; BMP) made with
  PIL and OpenCV, mutated (bit flips, interesting values, header integers, random bytes,
  truncation, duplicated and deleted slices, splices; PNG chunks re-checksummed half the
  time so mutations reach the decoders), fed to engine.io.images.load_photo as a path or as
  bytes. A decoded photo must be finite, within the size limits, 8 or 16 bits.
- bridge: a valid request with real raw files in a private folder, mutated as JSON (type
  swaps, missing and unknown keys, huge numbers, NaN, deep nesting, odd paths: other folders,
  the inputs themselves, FIFOs, devices, links) and as text (cuts, flips, nesting, size,
  invalid UTF-8), with raw files of odd sizes or kinds, fed to bridge.read_request (which calls
  protocol.parse_request), bridge.read_raw and EditOptions.from_mapping: the bridge's whole
  path up to the edit.

Cases are seeded (case N is the same input on every run) and run in worker processes, so a
segfault or a hang is reported with its case and a fresh worker goes on. CI runs 2000 cases a
target (about 10 s in all on 2 cores); FAT_FUZZ_CASES=5000 or more is the long run;
FAT_FUZZ_ONLY=images:17,42 reruns cases; FAT_FUZZ_REPORT=file.jsonl keeps every failure;
FAT_FUZZ_HANG_S sets the hang limit (5 s).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import time
import zlib
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests import fuzzing
from tests.fuzzing import emit, limit_address_space, run_case, worker_args

CASES = int(os.environ.get("FAT_FUZZ_CASES", "2000"))
HANG_S = float(os.environ.get("FAT_FUZZ_HANG_S", "5"))
WORKERS = 2
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
SEED = 20261129
TARGETS = ("images", "bridge")
INTS = [0, 1, 255, 256, 0x7FFF, 0xFFFF, 65536, 60000, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20, 131232]


# --- image seeds and mutations ----------------------------------------------------------------------------

def _picture(h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = np.dstack([x * 10, y * 12, (x + y) * 5]).astype(np.float64)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def image_seeds() -> list[tuple[str, bytes]]:
    """Small files of every kind load_photo meets, made with PIL and OpenCV."""
    import cv2
    from PIL import Image, ImageCms

    rgb = _picture()
    rgba = np.dstack([rgb, (np.arange(rgb.shape[1]) * 10 % 256).astype(np.uint8)[None].repeat(rgb.shape[0], 0)])
    rgb16 = rgb.astype(np.uint16) * 257 + 3

    def pil(array: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
        buf = io.BytesIO()
        im = Image.fromarray(array)
        (im.convert(mode) if mode else im).save(buf, fmt, **kw)
        return buf.getvalue()

    def ocv(ext: str, array: np.ndarray) -> bytes:
        code = cv2.COLOR_RGBA2BGRA if array.ndim == 3 and array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        return cv2.imencode(ext, cv2.cvtColor(array, code) if array.ndim == 3 else array)[1].tobytes()

    exif = Image.Exif()
    exif[0x0112] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    palette.save(buf, "PNG", transparency=3)
    return [
        ("png-rgb8", pil(rgb, "PNG")), ("png-rgba8", pil(rgba, "PNG")), ("png-rgb16", ocv(".png", rgb16)),
        ("png-gray16", ocv(".png", rgb16[..., 0])), ("png-palette", buf.getvalue()),
        ("jpeg-exif-icc", pil(rgb, "JPEG", quality=90, exif=exif, icc_profile=icc)),
        ("jpeg-progressive", pil(rgb, "JPEG", progressive=True)),
        ("tiff-lzw", pil(rgb, "TIFF", compression="tiff_lzw")),
        ("tiff-rgba16", ocv(".tif", np.dstack([rgb16, rgb16[..., :1]]))),
        ("webp-lossy", pil(rgb, "WEBP", quality=80)), ("webp-lossless", pil(rgba, "WEBP", lossless=True)),
        ("gif", pil(rgb, "GIF")), ("bmp", pil(rgb, "BMP")),
    ]


def fix_png_crcs(data: bytearray) -> None:
    """Recompute every chunk's CRC, so that a mutation inside a chunk reaches the decoder."""
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:end])) & 0xFFFFFFFF)
        pos = end + 4


def _pos(rng: np.random.Generator, n: int) -> int:
    """Half the mutations land in the first 128 bytes: headers, where decoders take their decisions."""
    if n <= 1:
        return 0
    return int(rng.integers(min(n, 128))) if rng.random() < 0.5 else int(rng.integers(n))


def mutate_bytes(data: bytearray, rng: np.random.Generator, other: bytes) -> str:
    """One random mutation in place; returns what it did."""
    n, pos = len(data), _pos(rng, len(data))
    op = int(rng.integers(8))
    if op == 0:
        for _ in range(int(rng.integers(1, 5))):
            if data:
                data[_pos(rng, n)] ^= 1 << int(rng.integers(8))
        return "bitflip"
    if op == 1:
        value = bytes([int(rng.choice([0, 0xFF, 0x7F, 0x80, 1]))])
        data[pos:pos + 1] = value
        return f"byte {value.hex()}@{pos}"
    if op == 2:
        fmt = str(rng.choice([">I", "<I", ">H", "<H"]))
        v = int(rng.choice(INTS)) & (0xFFFF if "H" in fmt else 0xFFFFFFFF)
        data[pos:pos + struct.calcsize(fmt)] = struct.pack(fmt, v)
        return f"int {fmt}{v}@{pos}"
    if op == 3:
        k = int(rng.integers(1, 9))
        data[pos:pos + k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
        return f"random {k}@{pos}"
    if op == 4:
        del data[int(rng.integers(max(n, 1))):]
        return "truncate"
    size = int(rng.integers(1, max(2, n // 3)))
    if op == 5:
        at = int(rng.integers(max(n, 1)))
        data[at:at] = bytes(data[pos:pos + size])
        return f"duplicate {size}@{pos}->{at}"
    if op == 6:
        del data[pos:pos + size]
        return f"delete {size}@{pos}"
    cut = int(rng.integers(max(n, 1)))
    data[cut:] = other[int(rng.integers(max(len(other), 1))):]
    return f"splice@{cut}"


def image_case(seeds: list[tuple[str, bytes]], case: int) -> tuple[bytes, str]:
    """Case `case` of the images target: the same bytes on every run."""
    rng = np.random.default_rng([SEED, 0, case])
    name, seed = seeds[case % len(seeds)]
    other = seeds[int(rng.integers(len(seeds)))][1]
    data = bytearray(seed)
    done = [mutate_bytes(data, rng, other)]
    while rng.random() < 0.35 and len(done) < 4:
        done.append(mutate_bytes(data, rng, other))
    if name.startswith("png") and rng.random() < 0.5:
        fix_png_crcs(data)
        done.append("crc")
    return bytes(data), f"{name}: {', '.join(done)}"


def run_image_case(data: bytes, case: int, folder: Path) -> None:
    from engine.io.images import load_photo
    from engine.io.paths import MAX_PIXELS

    if case % 2:
        photo = load_photo(data)
    else:
        path = folder / "case.img"
        path.write_bytes(data)
        photo = load_photo(path)
    h, w = photo.size
    assert photo.rgb.shape == (h, w, 3) and photo.rgb.dtype == np.float32 and 0 < h * w <= MAX_PIXELS
    assert np.isfinite(photo.rgb).all() and photo.dtype in (np.uint8, np.uint16)
    assert photo.alpha is None or (photo.alpha.shape == (h, w) and photo.alpha.dtype == photo.dtype)


# --- bridge requests and mutations ------------------------------------------------------------------------

RAWS = {"reference": ((6, 8), "RGBA8", np.uint8, 4), "guide": ((5, 7), "RGBA16", np.uint16, 4),
        "mask": ((6, 8), "Y8", np.uint8, 1)}


def _nested(depth: int, leaf: object = 1) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def weird_value(rng: np.random.Generator, folder: Path) -> object:
    """A value of the wrong type, size or meaning."""
    choices = [None, True, False, 0, -1, 1, 7, 1.5, 4.0, 2**31, 2**63, 10**30, -10**30, math.nan, math.inf, -math.inf,
               "", "x", "RGBA8", "Y8", "RGBA16", "mouth", "a" * 10_000, [], {}, [1, 2, 3, 4], [0, 0, 10, 10],
               {"identity": 1}, {"attribute_layers.b35_3": [1]}, "\ud800", "a\x00b", "/dev/zero", "/dev/stdin", "/",
               ".", "..", str(folder), str(folder / "reference.raw"), str(folder / "request.json"),
               str(folder.parent / "elsewhere.raw"), "../elsewhere.raw", str(folder / "fifo"), str(folder / "dir"),
               str(folder / "link"), {"raw": "x", "width": 1, "height": 1, "format": "Y8"}]
    pick = int(rng.integers(len(choices) + 2))
    if pick == len(choices):
        return _nested(int(rng.integers(2, 400)))
    if pick == len(choices) + 1:
        return {"a": _nested(int(rng.integers(2, 400)), {"b": 2})}
    return choices[pick]


def _key_paths(request: dict) -> list[tuple]:
    paths = [(k,) for k in request]
    for k, v in request.items():
        if isinstance(v, dict):
            paths += [(k, sub) for sub in v]
    return paths


def mutate_request(request: dict, rng: np.random.Generator, folder: Path) -> str:
    """One structural mutation of the request dict, or of the files it names; returns what it did."""
    from engine.options import EditOptions

    op = int(rng.integers(7))
    paths = _key_paths(request)
    path = paths[int(rng.integers(len(paths)))]
    parent = request if len(path) == 1 else request[path[0]]
    if op == 0:
        del parent[path[-1]]
        return f"drop {'.'.join(path)}"
    if op in (1, 2):
        parent[path[-1]] = value = weird_value(rng, folder)
        return f"set {'.'.join(path)}={str(value)[:30]!r}"
    if op == 3:
        names = [f.name for f in EditOptions.__dataclass_fields__.values()] + ["colour"]
        name = names[int(rng.integers(len(names)))]
        if not isinstance(request.get("options"), dict):
            request["options"] = {}
        request["options"][name] = value = weird_value(rng, folder)
        return f"option {name}={str(value)[:30]!r}"
    if op == 4:
        target = (request, f"extra{int(rng.integers(3))}") if rng.random() < 0.5 else (parent, "unknown")
        target[0][target[1]] = 1
        return "unknown key"
    key = list(RAWS)[int(rng.integers(3))]
    raw = folder / f"{key}.raw"
    regular = raw.is_file() and not raw.is_symlink()
    if op == 5 and regular:
        data = raw.read_bytes()
        k = int(rng.choice([-100, -2, -1, 1, 2, 3, 4096]))
        raw.write_bytes(data[:k] if k < 0 else data + b"\x07" * k)
        return f"{key}.raw size {k:+d}"
    kind = str(rng.choice(["fifo", "dir", "devzero", "missing", "other-raw"]))
    _remove(raw)
    if kind == "fifo":
        os.mkfifo(raw)
    elif kind == "dir":
        raw.mkdir()
    elif kind == "devzero":
        raw.symlink_to("/dev/zero")
    elif kind == "other-raw":
        raw.symlink_to(folder / ("guide.raw" if key != "guide" else "reference.raw"))
    return f"{key}.raw is {kind}"


def mutate_text(text: str, rng: np.random.Generator) -> tuple[bytes, str]:
    data = text.encode("utf-8", "surrogatepass")
    op = int(rng.integers(6))
    if op == 0:
        return data[:int(rng.integers(len(data) + 1))], "cut"
    if op == 1:
        b = bytearray(data)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return bytes(b), "flip"
    if op == 2:
        depth = int(rng.choice([50, 999, 1001, 5000, 100_000]))
        return b"[" * depth + data + b"]" * depth, f"nest {depth}"
    if op == 3:
        at = int(rng.integers(len(data) + 1))
        return data[:at] + bytes(rng.integers(0, 256, 4, dtype=np.uint8)) + data[at:], "insert"
    if op == 4:
        return data + b" " * ((1 << 20) + 1 - len(data)), "over 1 MiB"
    return data.replace(b'"', b"'", 1), "quote"


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        p.rmdir()
    elif p.exists() or p.is_symlink():
        p.unlink()


def _fresh_folder(folder: Path) -> None:
    """The plug-in's private folder as it writes it: the raw files, and a FIFO, a folder and a link to aim at."""
    for p in folder.glob("*"):
        _remove(p)
    for key, ((h, w), _, dtype, channels) in RAWS.items():
        shape = (h, w, channels) if channels > 1 else (h, w)
        (folder / f"{key}.raw").write_bytes(np.full(shape, 100, dtype).tobytes())
    os.mkfifo(folder / "fifo")
    (folder / "dir").mkdir()
    (folder / "link").symlink_to(folder.parent / "elsewhere.raw")


def bridge_case(folder: Path, case: int) -> tuple[Path, str]:
    """Write case `case` of the bridge target into `folder`; returns the request path and what was done."""
    from engine.frontends.protocol import make_request, raw_image

    rng = np.random.default_rng([SEED, 1, case])
    _fresh_folder(folder)
    raws = {k: raw_image(str(folder / f"{k}.raw"), w, h, fmt) for k, ((h, w), fmt, _, _) in RAWS.items()}
    request = make_request(raws["reference"], raws["guide"], str(folder / "result.raw"),
                           {"region": "mouth", "iterations": 3}, raws["mask"])
    done = [mutate_request(request, rng, folder)]
    while rng.random() < 0.4 and len(done) < 4:
        done.append(mutate_request(request, rng, folder))
    text = json.dumps(request)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.25:
        data, what = mutate_text(text, rng)
        done.append(what)
    path = folder / "request.json"
    path.write_bytes(data)
    return path, ", ".join(done)


def run_bridge_case(path: Path) -> None:
    from engine.frontends import bridge
    from engine.options import EditOptions

    req = bridge.read_request(path)
    for raw in (req.reference, req.guide, req.mask):
        if raw is not None:
            pixels = bridge.read_raw(raw)
            assert pixels.shape[:2] == (raw.height, raw.width)
    assert req.output.parent.resolve() == path.parent.resolve()
    EditOptions.from_mapping(req.options, "request options")


SELFTEST = ["ok", "FATError", "ValueError", "segfault", "hang", "ok"]


def run_selftest_case(case: int) -> None:
    """Each way a case can end, for the harness's own test."""
    from engine.errors import FATError

    what = SELFTEST[case]
    if what == "FATError":
        raise FATError("refused", 3)
    if what == "ValueError":
        raise ValueError("a bug")
    if what == "segfault":
        os.kill(os.getpid(), 11)
    if what == "hang":
        time.sleep(3600)


# --- worker process ---------------------------------------------------------------------------------------

def worker(target: str, folder: Path, cases: list[int]) -> None:
    """Run the cases in this process, one JSON line per event on stdout."""
    seeds = image_seeds() if target == "images" else []  # "selftest": the harness's own check
    for _name, data in seeds:  # every seed loads as it is (and this warms the imports up)
        run_image_case(data, 1, folder)
    (folder / "req").mkdir(exist_ok=True)
    emit(event="ready")
    for case in cases:
        if target == "images":
            data, what = image_case(seeds, case)
            call = partial(run_image_case, data, case, folder)
        elif target == "bridge":
            path, what = bridge_case(folder / "req", case)
            call = partial(run_bridge_case, path)
        else:
            what = SELFTEST[case]
            call = partial(run_selftest_case, case)
        outcome = run_case(case, what, call)
        if outcome is not None:
            emit(event="done", case=case, outcome=outcome)


def _worker_main() -> None:
    target, folder, cases = worker_args()
    import cv2  # noqa: F401 - its mappings count in the baseline

    limit_address_space(4 << 30)  # a guard for the machine: a runaway allocation fails (reported), never swaps
    worker(target, folder, cases)


# --- the harness (tests/fuzzing.py) -----------------------------------------------------------------------

def run_cases(target: str, folder: Path, cases: list[int], hang_s: float = HANG_S) -> tuple[list[dict], Counter]:
    """Run `cases`, starting a fresh worker after a crash or a hang (named with its case)."""
    return fuzzing.run_cases("tests.test_fuzz_inputs", target, folder, cases, env=WORKER_ENV, hang_s=hang_s)


@pytest.mark.parametrize("target, cases", fuzzing.selected(TARGETS, CASES),
                         ids=[t for t, _ in fuzzing.selected(TARGETS, CASES)])
def test_fuzzed_inputs_load_or_raise_fat_error(target, cases, tmp_path):
    outcomes = fuzzing.check("tests.test_fuzz_inputs", "target", target, tmp_path, cases, env=WORKER_ENV,
                             hang_s=HANG_S, workers=WORKERS)
    assert outcomes["ok"] > 0 and sum(n for k, n in outcomes.items() if k.startswith("FATError")) > 0


def test_image_seeds_cover_the_decoders_and_load():
    """The seeds are what the mutations start from: each must load, at its own depth."""
    from engine.io.images import load_photo

    seeds = dict(image_seeds())
    depth = {name: load_photo(data).dtype.itemsize * 8 for name, data in seeds.items()}
    assert {n for n, d in depth.items() if d == 16} == {"png-rgb16", "png-gray16", "tiff-rgba16"}
    assert load_photo(seeds["png-rgba8"]).alpha is not None and load_photo(seeds["jpeg-exif-icc"]).icc
    assert load_photo(seeds["jpeg-exif-icc"]).size == (24, 20)  # EXIF orientation 6 applied


def test_the_harness_names_the_case_of_a_crash_a_hang_or_a_bug(tmp_path):
    failures, outcomes = run_cases("selftest", tmp_path, list(range(len(SELFTEST))), hang_s=1.5)
    assert outcomes == {"ok": 2, "FATError 3": 1}
    assert [(f["case"], f["error"].split(" (")[0].split(":")[0]) for f in failures] == [
        (2, "ValueError"), (3, "process died"), (4, "hang")]
    assert "exit -11" in failures[1]["error"]


def test_mutations_are_deterministic(tmp_path):
    seeds = image_seeds()
    assert [image_case(seeds, i) for i in range(20)] == [image_case(seeds, i) for i in range(20)]
    (tmp_path / "a").mkdir()
    first = [bridge_case(tmp_path / "a", i)[1] for i in range(20)]
    assert first == [bridge_case(tmp_path / "a", i)[1] for i in range(20)]
