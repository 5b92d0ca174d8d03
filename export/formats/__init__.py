"""The published VGG-Face weight formats, in one registry (standard library only:
install.py reads the file names to look for from here).

Each reader module (loaded only when used) turns one downloaded file into
`RawWeights`: arrays keyed by the canonical names (conv1_1.weight ... fc8.bias) in
the torch layout, plus the channel order the network was trained on;
export/canonical.py does the rest. A new format is one `Format` entry here and its
reader module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    reader: str  # module with read(files) -> RawWeights
    extensions: tuple[str, ...]  # lower-case file-name endings, after the magic bytes are tried
    magic: tuple[bytes, ...] = ()  # file starts; checked first
    downloads: tuple[str, ...] = ()  # the publishers' file names (install.py looks for them)
    archive_members: tuple[str, ...] = ()  # what to extract from a publisher's .tar.gz


HDF5 = b"\x89HDF\r\n\x1a\n"
FORMATS: tuple[Format, ...] = (
    Format("matconvnet", "export.formats.matconvnet", (".mat",), (b"MATLAB ",), ("vgg_face.mat",
           "vgg_face_matconvnet.tar.gz"), (".mat",)),  # v5, or v7.3 (HDF5 after a 512-byte header)
    Format("keras", "export.formats.keras_h5", (".h5", ".hdf5"), (HDF5,), ("rcmalli_vggface_tf_vgg16.h5",)),
    Format("pytorch", "export.formats.pytorch_pth", (".pth", ".pt"), (b"PK\x03\x04",), ("vgg_face_dag.pth",)),
    Format("caffe", "export.formats.caffe", (".caffemodel", ".prototxt"), (),
           ("VGG_FACE.caffemodel", "vgg_face_caffe.tar.gz"), (".caffemodel", ".prototxt")),
    Format("torch7", "export.formats.torch7", (".t7",), (), ("VGG_FACE.t7", "vgg_face_torch.tar.gz"), (".t7",)),
)
BY_NAME = {f.name: f for f in FORMATS}


def by_content(head: bytes, name: str) -> Format | None:
    """The format whose magic bytes the file starts with (an HDF5 .mat is MatConvNet v7.3, not Keras)."""
    for f in FORMATS:
        if any(head.startswith(m) for m in f.magic):
            return BY_NAME["matconvnet"] if f.magic == (HDF5,) and name.endswith(".mat") else f
    return None


def by_name(name: str) -> Format | None:
    return next((f for f in FORMATS if name.endswith(f.extensions)), None)


def download_names() -> tuple[str, ...]:
    return tuple(n for f in FORMATS for n in f.downloads)


def archive_members() -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for f in FORMATS for m in f.archive_members))


def reader(name: str):
    return importlib.import_module(BY_NAME[name].reader)
