"""Which published format is this file? By content first, then by name."""

from __future__ import annotations

import tarfile
import tempfile
import zipfile
from pathlib import Path

from engine.errors import EXIT_INPUT, FATError

FORMATS = ("caffe", "torch7", "matconvnet", "pytorch", "keras", "dlib")
# Members worth extracting from the publishers' archives (vgg_face_*.tar.gz).
ARCHIVE_MEMBERS = (".caffemodel", ".prototxt", ".t7", ".mat")


def sniff(path: Path) -> str:
    """Return one of FORMATS for a single file, or raise FATError."""
    if not path.exists():
        raise FATError(f"{path}: no such file. Check the path (see README, 'VGG-Face weights').", EXIT_INPUT)
    if path.is_dir():
        raise FATError(f"{path}: is a folder; pass the weights file itself.", EXIT_INPUT)
    with open(path, "rb") as f:
        head = f.read(128)
    name = path.name.lower()
    if not head:
        raise FATError(f"{path}: the file is empty (an interrupted download?). Download it again.", EXIT_INPUT)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "matconvnet" if name.endswith(".mat") else "keras"
    if head.startswith(b"MATLAB ") or name.endswith(".mat"):  # v5, or v7.3 (HDF5 after a 512-byte header)
        return "matconvnet"
    if head.startswith(b"PK\x03\x04") or name.endswith((".pth", ".pt")):
        return "pytorch"
    if name.endswith((".caffemodel", ".prototxt")):
        return "caffe"
    if name.endswith(".t7"):
        return "torch7"
    if name.endswith(".dat"):
        return "dlib"
    if name.endswith((".h5", ".hdf5")):
        return "keras"
    raise FATError(f"{path}: unrecognised weights format. Supported: Caffe (.caffemodel [+ .prototxt]), "
                   "Torch7 (.t7), MatConvNet (.mat), PyTorch (.pth), Keras (.h5), dlib (.dat), "
                   "or the publishers' .tar.gz archives.", EXIT_INPUT)


def unpack_archive(path: Path, workdir: Path) -> list[Path]:
    """Extract the model files from a publisher's archive into workdir."""
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(ARCHIVE_MEMBERS)]
            if not members:
                raise FATError(f"{path}: archive holds no model file ({', '.join(ARCHIVE_MEMBERS)}).", EXIT_INPUT)
            out = []
            for m in members:
                m.name = Path(m.name).name  # flatten; never write outside workdir
                tar.extract(m, workdir, filter="data")
                out.append(workdir / m.name)
            return out
    except (tarfile.TarError, EOFError, OSError) as e:
        raise FATError(f"{path}: archive is damaged or incomplete ({e}). Download it again.", EXIT_INPUT) from None


def resolve_sources(sources: list[Path], workdir: Path | None = None) -> tuple[str, list[Path]]:
    """Expand archives and check that all sources are one format."""
    files: list[Path] = []
    for s in sources:
        s = Path(s)
        if s.name.endswith((".tar.gz", ".tgz", ".tar")) and s.is_file():
            workdir = workdir or Path(tempfile.mkdtemp(prefix="fat-export-"))
            files += unpack_archive(s, workdir)
        elif s.suffix == ".zip" and zipfile.is_zipfile(s):
            raise FATError(f"{s}: unpack the zip first and pass the model file inside.", EXIT_INPUT)
        else:
            files.append(s)
    formats = {sniff(f) for f in files}
    if len(formats) != 1:
        raise FATError(f"sources are of different formats ({', '.join(sorted(formats))}); pass one model "
                       "(for Caffe: the .caffemodel and optionally its .prototxt).", EXIT_INPUT)
    return formats.pop(), files
