"""Which published format is this file? By content first, then by name."""

from __future__ import annotations

import os
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import EXIT_INPUT, FATError
from engine.io import scratch
from export import formats

# Members worth extracting from the publishers' archives (vgg_face_*.tar.gz).
ARCHIVE_MEMBERS = formats.archive_members()
ARCHIVES = (".tar.gz", ".tgz", ".tar")
UNPACK_PREFIX = "fat-export-unpacked-"


def sniff(path: Path) -> str:
    """A format name of export/formats (or "dlib") for a single file, or raise FATError."""
    if not path.exists():
        raise FATError(f"{path}: no such file. Check the path (see README, 'VGG-Face weights').", EXIT_INPUT)
    if path.is_dir():
        raise FATError(f"{path}: is a folder; pass the weights file itself.", EXIT_INPUT)
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError as e:
        raise FATError(f"{path}: cannot read ({e.strerror}). Check the file's permissions.", EXIT_INPUT) from None
    name = path.name.lower()
    if not head:
        raise FATError(f"{path}: the file is empty (an interrupted download?). Download it again.", EXIT_INPUT)
    found = formats.by_content(head, name) or formats.by_name(name)
    if found is not None:
        return found.name
    if name.endswith(".dat"):
        return "dlib"
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
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise FATError(f"{path}: archive is damaged or incomplete ({e}). Download it again.", EXIT_INPUT) from None


def is_archive(path: Path) -> bool:
    return Path(path).name.endswith(ARCHIVES) and Path(path).is_file()


@contextmanager
def unpacked_sources(sources: list[Path]) -> Iterator[tuple[str, list[Path]]]:
    """resolve_sources() with archives unpacked into a temp folder that is removed however the block ends
    (a 550 MB model left in /tmp by every export was the old behaviour)."""
    archives = [Path(s) for s in sources if is_archive(s)]
    if not archives:
        yield resolve_sources(sources)
        return
    with scratch.scratch_dir(UNPACK_PREFIX) as workdir:
        try:
            yield resolve_sources(sources, workdir)
        except FATError as e:
            if len(archives) != 1 or str(workdir) not in e.message:
                raise
            # The unpacked path is gone when the user reads this: name the archive and its member.
            message = e.message.replace(f"{workdir}{os.sep}", f"{archives[0]}, member ")
            raise FATError(message, e.exit_code) from None


def resolve_sources(sources: list[Path], workdir: Path | None = None) -> tuple[str, list[Path]]:
    """Expand archives (into `workdir`, which the caller removes) and check that all sources are one format.

    Without a workdir an archive is unpacked into a new temp folder that nobody removes:
    use unpacked_sources() instead.
    """
    files: list[Path] = []
    for s in sources:
        s = Path(s)
        if is_archive(s):
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
