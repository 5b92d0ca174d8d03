"""Safe reading of HDF5 weight files (Keras .h5, MatConvNet v7.3)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from export.formats.common import bad_file, file_size

H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)  # what h5py raises on a damaged file
DEFLATE_MAX_RATIO = 1032  # zlib cannot expand data more than this


def h5_member(group: h5py.Group, name: str, path: Path) -> h5py.Group | h5py.Dataset:
    """group[name], refusing links to other files (they would read any file on this machine)."""
    link = group.get(name, getlink=True)
    if link is None:
        raise bad_file(path, f"has no {name!r} in {group.name}")
    if isinstance(link, h5py.ExternalLink):
        raise bad_file(path, f"{group.name}/{name} is a link to another file ({link.filename}); a weights file "
                             "must hold its own data", "Use the file from its publisher.")
    return group[name]


def h5_read(ds: object, path: Path, refs: bool = False) -> np.ndarray:
    """A dataset's values, refusing data stored outside the file and sizes the file cannot hold.

    HDF5 lets a dataset's bytes live in other local files (external storage, virtual
    datasets): exporting such a file would copy those files into the ONNX.
    """
    if not isinstance(ds, h5py.Dataset):
        raise bad_file(path, f"{getattr(ds, 'name', ds)} is not a dataset")
    if ds.external is not None or ds.is_virtual:
        raise bad_file(path, f"dataset {ds.name} keeps its data outside the file (HDF5 "
                             f"{'virtual dataset' if ds.is_virtual else 'external storage'}); refusing to read "
                             "other files", "Use the weights file from its publisher.")
    if refs != (h5py.check_ref_dtype(ds.dtype) is not None) or (not refs and ds.dtype.kind not in "fiub"):
        raise bad_file(path, f"dataset {ds.name} has type {ds.dtype}, expected {'references' if refs else 'numbers'}")
    filtered = ds.id.get_create_plist().get_nfilters() > 0
    stored = min(ds.id.get_storage_size(), file_size(path))
    if ds.nbytes > stored * (DEFLATE_MAX_RATIO if filtered else 1):
        raise bad_file(path, f"dataset {ds.name} declares {ds.nbytes} bytes but the file stores {stored} for it "
                             "(damaged or truncated)")
    return ds[()]
