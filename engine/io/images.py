"""Load and save photos without losing what the user had: bit depth, alpha,
EXIF orientation and ICC profile. I/O lives here, at the edge.

Pixels are handed around as `Photo.rgb`: float32 H x W x 3 in 0..255 whatever the
file's depth (16-bit values are divided by 257), so the maths is depth-agnostic;
`Photo.to_native` goes back to the file's dtype.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import EXIT_INPUT, EXIT_USAGE, FATError
from engine.io.files import atomic_write
from engine.io.paths import check_output_type

ORIENTATION_TAG = 0x0112


@dataclass
class Photo:
    rgb: np.ndarray  # float32 H x W x 3, 0..255
    alpha: np.ndarray | None = None  # native dtype H x W, untouched by edits
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))
    icc: bytes | None = None
    path: Path | None = None

    @property
    def scale(self) -> float:
        """Native units per 0..255 unit."""
        return 257.0 if self.dtype == np.uint16 else 1.0

    @property
    def size(self) -> tuple[int, int]:
        """(h, w), like every size in the engine."""
        return self.rgb.shape[0], self.rgb.shape[1]

    def rgb8(self) -> np.ndarray:
        return np.clip(np.rint(self.rgb), 0, 255).astype(np.uint8)


def from_array(a: np.ndarray) -> Photo:
    """A Photo from an H x W x 3/4 uint8/uint16/float array (float in 0..255)."""
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise FATError(f"image array has shape {a.shape}; expected H x W x 3 (RGB) or 4 (RGBA).", EXIT_INPUT)
    dtype = a.dtype if a.dtype in (np.uint8, np.uint16) else np.dtype(np.uint8)
    scale = 257.0 if dtype == np.uint16 else 1.0
    alpha = a[..., 3].astype(dtype) if a.shape[2] == 4 else None
    return Photo((a[..., :3].astype(np.float32) / scale), alpha, np.dtype(dtype))


def _orientation_and_icc(path: Path) -> tuple[int, bytes | None]:
    """EXIF orientation and ICC profile from the file's header (one open, pixels not decoded)."""
    try:
        with Image.open(path) as im:
            icc = im.info.get("icc_profile")
            try:
                return int(im.getexif().get(ORIENTATION_TAG, 1)), icc
            except ValueError:  # damaged EXIF: keep the profile, assume upright
                return 1, icc
    except (UnidentifiedImageError, OSError):
        return 1, None


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: np.swapaxes(x, 0, 1), 6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
           7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1], 8: lambda x: np.swapaxes(x, 0, 1)[::-1]}
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def load_photo(source: str | Path | np.ndarray | Image.Image) -> Photo:
    """Path, PIL image or numpy array -> Photo (EXIF orientation applied)."""
    if isinstance(source, Image.Image):
        im = ImageOps.exif_transpose(source)
        icc = im.info.get("icc_profile")
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        photo = from_array(np.asarray(im))
        photo.icc = icc
        return photo
    if isinstance(source, np.ndarray):
        return from_array(source)
    path = Path(source)
    if not path.exists():
        raise FATError(f"{path}: no such image file.", EXIT_INPUT)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if raw is None:
        # OpenCV lacks some formats (e.g. GIF, some WebP); PIL may read them at 8 bits.
        try:
            with Image.open(path) as im:
                photo = load_photo(im)
        except (UnidentifiedImageError, OSError) as e:
            raise FATError(f"{path}: not a readable image ({e}). Use PNG, JPEG, TIFF or WebP.", EXIT_INPUT) from None
        photo.path = path
        return photo
    if raw.dtype not in (np.uint8, np.uint16):
        raise FATError(f"{path}: {raw.dtype} pixels are not supported; save as 8- or 16-bit.", EXIT_INPUT)
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
    elif raw.shape[2] == 4:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA)
    else:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    orientation, icc = _orientation_and_icc(path)
    photo = from_array(_apply_orientation(raw, orientation))
    photo.path, photo.icc = path, icc
    return photo


def to_native(photo: Photo, rgb: np.ndarray | None = None) -> np.ndarray:
    """H x W x 3/4 array in the photo's own dtype (RGB[A])."""
    rgb = photo.rgb if rgb is None else rgb
    info = np.iinfo(photo.dtype)
    out = np.clip(np.rint(rgb * photo.scale), 0, info.max).astype(photo.dtype)
    if photo.alpha is not None:
        out = np.concatenate([out, photo.alpha[..., None]], axis=2)
    return out


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    """Insert an iCCP chunk after IHDR (OpenCV cannot write one)."""
    body = b"ICC Profile\x00\x00" + zlib.compress(icc)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body
    chunk += struct.pack(">I", zlib.crc32(b"iCCP" + body) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def save_photo(photo: Photo, rgb: np.ndarray, out: Path) -> None:
    """Write atomically in the photo's depth, with its alpha and ICC profile."""
    out = Path(out)
    native = to_native(photo, rgb)
    check_output_type(out)
    ext = out.suffix.lower()

    def write(tmp: Path) -> None:
        if photo.dtype == np.uint16 or (ext in (".tif", ".tiff") and photo.dtype != np.uint8):
            code = cv2.COLOR_RGBA2BGRA if native.shape[2] == 4 else cv2.COLOR_RGB2BGR
            ok, buf = cv2.imencode(ext, cv2.cvtColor(native, code))
            if not ok:
                raise FATError(f"{out}: cannot encode a 16-bit image as {ext}; use .png or .tif.", EXIT_USAGE)
            data = buf.tobytes()
            if ext == ".png" and photo.icc:
                data = _png_with_icc(data, photo.icc)
            tmp.write_bytes(data)
            return
        im = Image.fromarray(native, "RGBA" if native.shape[2] == 4 else "RGB")
        if ext in (".jpg", ".jpeg") and im.mode == "RGBA":
            im = im.convert("RGB")  # JPEG has no alpha
        kwargs = {"quality": 95, "subsampling": 0} if ext in (".jpg", ".jpeg") else {}
        if photo.icc:
            kwargs["icc_profile"] = photo.icc
        im.save(tmp, format=Image.registered_extensions()[ext], **kwargs)

    atomic_write(out, write)
