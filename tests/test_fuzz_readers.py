"""Mutation fuzzing of every weights reader: a damaged file must load or raise FATError.

Anything else is a bug a user would meet as a traceback, a crash without a message
(exit 139), a hang or the machine running out of memory. Each reader gets seed files
written by tests/weightfiles.py (tiny widths, so a case takes milliseconds) and a
deterministic stream of mutations: bit flips, interesting values (0, 0xff, 0x7f,
0x80, extreme ints and floats), random bytes, truncation, chunk duplication and
deletion. Three quarters of the mutations land on "structure" bytes (those equal
in two seeds with different random weights: headers, sizes, names), where parsers
make decisions; the rest land anywhere.

Cases run in a worker process so that a segfault, a hang or runaway memory is
reported with the case that caused it (then a fresh worker goes on from the next
case). Reproduce one case with `FAT_FUZZ_ONLY=<reader>:<case> pytest
tests/test_fuzz_readers.py`. CI runs 500 cases per reader; FAT_FUZZ_CASES=5000 runs
the long version, FAT_FUZZ_REPORT=file.jsonl keeps every failure.

Not measured here: the memory of the child process in which the MatConvNet v5 reader
runs scipy (export/isolate.py); that child is capped (RLIMIT_DATA) by the reader itself.
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests import fuzzing
from tests.fuzzing import emit, limit_address_space, run_case, worker_args

CASES = int(os.environ.get("FAT_FUZZ_CASES", "500"))
WORKERS = 2  # the cases of one reader are split over this many worker processes
HANG_S = float(os.environ.get("FAT_FUZZ_HANG_S", "5"))  # one case taking longer is a hang
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
MEMORY_GROWTH = 1 << 30  # peak RSS growth over the worker's baseline that counts as a failure
SEED = 20240611
READERS = ("caffe", "torch7", "matconvnet", "matconvnet-v73", "pytorch", "keras", "targz", "dlib", "pytorch-legacy")
SEED_FILE = {  # weightfiles.WRITERS layout -> seed of each reader
    "caffe": "caffe", "torch7": "torch7", "matconvnet": "matconvnet", "matconvnet-v73": "matconvnet-v73",
    "pytorch": "pytorch", "keras": "keras", "targz": "caffe",
}
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80"] + [struct.pack(fmt, v) for fmt, v in (
    ("<i", 0), ("<i", -1), ("<i", 2**31 - 1), ("<i", -2**31), ("<I", 2**32 - 1), ("<i", 1 << 20), ("<i", 255),
    ("<q", 2**63 - 1), ("<q", -2**63), ("<q", -1), ("<q", 1 << 40), ("<q", 1 << 32), (">i", 2**31 - 1),
    (">q", 1 << 40), (">I", 2**32 - 1), ("<d", 1e308), ("<d", float("nan")), ("<f", float("inf")),
    ("<d", -1.0), ("<H", 0xFFFF), ("<h", -32768))]


# --- seed files -------------------------------------------------------------------------------------------

def _tiny_state(seed: int) -> dict[str, np.ndarray]:
    from tests.weightfiles import random_state

    return random_state(widths=(2, 2, 2, 2, 2), fc_width=4, seed=seed)


def write_seed(reader: str, folder: Path, seed: int = 0) -> list[Path]:
    """The reader's seed files in `folder`; the first one is the file that gets mutated."""
    folder.mkdir(parents=True, exist_ok=True)
    if reader == "dlib":
        return [write_tiny_dat(folder / "dlib_face_recognition_resnet_model_v1.dat", seed)]
    if reader == "pytorch-legacy":  # torch.save's pre-1.6 format: read without mmap, so fuzzed on its own
        import torch

        path = folder / "vgg_face_dag.pth"
        torch.save({k: torch.from_numpy(v) for k, v in _tiny_state(seed).items()}, path,
                   _use_new_zipfile_serialization=False)
        return [path]
    from tests.weightfiles import WRITERS

    files = WRITERS[SEED_FILE[reader]](_tiny_state(seed), folder)
    if reader != "targz":
        return files
    archive = folder / "vgg_face_caffe.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in files:
            info = tar.gettarinfo(f, arcname=f"vgg_face_caffe/{f.name}")
            info.mtime = 0  # the same bytes for every seed but the weights
            with open(f, "rb") as fh:
                tar.addfile(info, fh)
    return [archive]


class _DatWriter:
    """dlib's DNN serialization (see export/dlib_dat.py) for a network of tiny layers."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.buf = bytearray()
        self.rng = rng

    def int(self, v: int) -> None:
        body = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little") if v else b""
        self.buf += bytes([len(body) | (0x80 if v < 0 else 0)]) + body

    def string(self, s: str) -> None:
        self.int(len(s))
        self.buf += s.encode("latin-1")

    def float(self, x: float) -> None:
        m, e = np.frexp(x)
        self.int(int(m * 2**53))
        self.int(int(e) - 53)

    def bool(self, b: bool = False) -> None:
        self.buf += b"\x01" if b else b"\x00"

    def tensor(self, dims: tuple[int, int, int, int]) -> None:
        self.int(2)
        for d in dims:
            self.int(d)
        self.buf += self.rng.standard_normal(int(np.prod(dims))).astype("<f4").tobytes()

    def alias(self, dims: tuple[int, int, int, int]) -> None:
        self.int(1)
        for d in dims:
            self.int(d)

    def details(self, kind: str) -> None:
        if kind == "con":
            self.string("con_5")
            self.tensor((1, 6, 1, 1))
            for v in (2, 1, 2, 1, 1, 0, 0):  # num_filters, nr, nc, strides, paddings
                self.int(v)
            self.alias((2, 1, 1, 2))
            self.alias((1, 2, 1, 1))
            for _ in range(4):
                self.float(1.0)
            self.bool(True)
        elif kind == "affine":
            self.string("affine_")
            self.tensor((1, 4, 1, 1))
            self.alias((1, 2, 1, 1))
            self.alias((1, 2, 1, 1))
            self.int(1)
        elif kind in ("max_pool", "avg_pool"):
            self.string(kind + "_2")
            for v in (3, 3, 2, 2, 0, 0):
                self.int(v)
        elif kind == "fc":
            self.string("fc_3")
            self.int(2)
            self.int(4)
            self.tensor((1, 10, 1, 1))
            self.alias((4, 2, 1, 1))
            self.alias((1, 2, 1, 1))
            self.int(1)  # no bias
            for _ in range(4):
                self.float(1.0)
        else:
            self.string({"relu": "relu_", "add_prev": "add_prev"}[kind])

    def net(self, kinds: list[str], top: int) -> None:
        if top == 1:  # the bottom add_layer: the input layer and the first convolution
            self.int(3)
            self.string("input_rgb_image_sized")
            for m in (122.782, 117.001, 104.298):
                self.float(m)
            self.int(150)
            self.int(150)
            self.details(kinds[1])
            self.tail()
            self.int(1)
        elif kinds[top] == "marker":
            self.int(1)
            self.net(kinds, top - 1)
        else:
            self.int(2)
            self.net(kinds, top - 1)
            self.details(kinds[top])
            self.tail()

    def tail(self) -> None:
        for _ in range(3):
            self.bool()
        for _ in range(3):
            self.tensor((0, 0, 0, 0))


def write_tiny_dat(path: Path, seed: int = 0) -> Path:
    """A .dat with the layer sequence of dlib's face-recognition ResNet but 2-channel layers."""
    from export.dlib_backbone import expected_kinds

    w = _DatWriter(np.random.default_rng(seed))
    w.int(1)
    w.string("loss_metric_2")
    w.float(0.04)
    w.float(0.6)
    kinds = expected_kinds()
    w.net(kinds, len(kinds) - 1)
    path.write_bytes(bytes(w.buf))
    return path


def structure_positions(reader: str, folder: Path) -> np.ndarray:
    """Byte offsets equal in two seeds with different weights: headers, sizes and names."""
    a = write_seed(reader, folder / "a", 0)[0].read_bytes()
    b = write_seed(reader, folder / "b", 1)[0].read_bytes()
    if len(a) != len(b):
        return np.arange(0)
    same = np.frombuffer(a, np.uint8) == np.frombuffer(b, np.uint8)
    return np.flatnonzero(same)


# --- mutations --------------------------------------------------------------------------------------------

def _position(rng: np.random.Generator, n: int, structure: np.ndarray) -> int:
    if len(structure) and rng.random() < 0.75:
        return int(structure[rng.integers(len(structure))]) % max(n, 1)
    return int(rng.integers(max(n, 1)))


def mutate_once(data: bytearray, rng: np.random.Generator, structure: np.ndarray) -> str:
    """Apply one random mutation in place; returns what it did."""
    n = len(data)
    pos = _position(rng, n, structure)
    op = int(rng.integers(6))
    if op == 0:
        for _ in range(int(rng.integers(1, 5))):
            p = _position(rng, n, structure)
            data[p] ^= 1 << int(rng.integers(8))
        return "bitflip"
    if op == 1:
        value = INTERESTING[int(rng.integers(len(INTERESTING)))]
        data[pos:pos + len(value)] = value[:n - pos] if pos + len(value) > n else value
        return f"interesting {value.hex()}@{pos}"
    if op == 2:
        k = int(rng.integers(1, 9))
        data[pos:pos + k] = rng.integers(0, 256, min(k, n - pos), dtype=np.uint8).tobytes()
        return f"random@{pos}"
    if op == 3:
        del data[pos:]
        return f"truncate@{pos}"
    size = int(rng.integers(1, max(2, min(4096, n // 4))))
    if op == 4:
        at = _position(rng, n, structure)
        data[at:at] = bytes(data[pos:pos + size])
        return f"duplicate {size}@{pos}->{at}"
    del data[pos:pos + size]
    return f"delete {size}@{pos}"


def mutate(seed_bytes: bytes, reader: str, case: int, structure: np.ndarray) -> tuple[bytes, str]:
    """Case `case` of `reader`: the same bytes on every run and machine."""
    rng = np.random.default_rng([SEED, READERS.index(reader), case])
    data = bytearray(seed_bytes)
    done = [mutate_once(data, rng, structure)]
    while rng.random() < 0.3 and len(done) < 4 and data:
        done.append(mutate_once(data, rng, structure))
    return bytes(data), ", ".join(done)


# --- the call under test ----------------------------------------------------------------------------------

def run_reader(reader: str, files: list[Path], workdir: Path) -> None:
    """Read and check canonically (what export does before building the network)."""
    if reader == "dlib":
        from export.dlib_backbone import load_canonical as load_dlib

        load_dlib(files[0])
        return
    from export.detect import resolve_sources
    from export.vggface import load_canonical

    if reader == "targz":
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        load_canonical(*resolve_sources(files, workdir))
    else:
        load_canonical(*resolve_sources(files))


# --- worker process ---------------------------------------------------------------------------------------

def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def worker(reader: str, folder: Path, cases: list[int]) -> None:
    """Run the cases in this process and report each on stdout (JSON lines)."""
    from engine.errors import FATError

    seed_files = write_seed(reader, folder / "seed")
    structure = structure_positions(reader, folder / "structure")
    seed_bytes = seed_files[0].read_bytes()
    case_dir = folder / "case"
    shutil.rmtree(case_dir, ignore_errors=True)
    shutil.copytree(folder / "seed", case_dir)
    files = [case_dir / f.name for f in seed_files]
    try:  # the unmutated seed must load (and this warms the imports up)
        run_reader(reader, files, folder / "work")
    except FATError:
        if reader != "dlib":  # the tiny .dat has dlib's layer sequence but not its layer sizes
            raise
    baseline = _peak_rss()
    emit(event="ready")
    for case in cases:
        data, what = mutate(seed_bytes, reader, case, structure)
        files[0].write_bytes(data)
        outcome = run_case(case, what, partial(run_reader, reader, files, folder / "work"))
        if outcome is None:
            continue
        grown = _peak_rss() - baseline
        if grown > MEMORY_GROWTH:
            emit(event="fail", case=case, what=what, error=f"memory grew by {grown / 2**30:.1f} GB", where="")
            return  # the peak only grows: a fresh worker measures the next cases
        emit(event="done", case=case, what=what, outcome=outcome)


def _worker_main() -> None:
    reader, folder, cases = worker_args()
    import torch  # noqa: F401 - imported first so that its mappings count in the baseline

    # A guard for the machine: a case allocating far more than a weights file needs fails
    # with MemoryError (reported) instead of swapping; the 1 GB growth check is the real test.
    limit_address_space(6 << 30)
    worker(reader, folder, cases)


# --- the harness (tests/fuzzing.py) -----------------------------------------------------------------------

@pytest.mark.parametrize("reader, cases", fuzzing.selected(READERS, CASES),
                         ids=[r for r, _ in fuzzing.selected(READERS, CASES)])
def test_damaged_files_load_or_raise_fat_error(reader, cases, tmp_path):
    fuzzing.check("tests.test_fuzz_readers", "reader", reader, tmp_path, cases, env=WORKER_ENV, hang_s=HANG_S,
                  workers=WORKERS)


def test_seed_writers_are_deterministic_but_for_the_weights(tmp_path):
    """The mutations aim at structure bytes; that needs seeds that differ only in their weights."""
    for reader in ("torch7", "matconvnet", "dlib"):
        assert len(structure_positions(reader, tmp_path / reader)) > 1000, reader


def test_tiny_dat_seed_parses(tmp_path):
    from export.dlib_backbone import expected_kinds
    from export.dlib_dat import read_dat

    net = read_dat(write_tiny_dat(tmp_path / "tiny.dat"))
    assert [layer.kind for layer in net.layers] == expected_kinds()
