"""Load and save photos without losing what the user had: bit depth, alpha,
EXIF orientation and ICC profile. I/O lives here, at the edge.

Pixels are handed around as `Photo.rgb`: float32 H x W x 3 in 0..255 whatever the
file's depth (16-bit values are divided by 257), so the maths is depth-agnostic;
`Photo.to_native` goes back to the file's dtype.

A photo is the user's file and any of its bytes may be wrong, so decoding is guarded:
the size in the header is checked against engine/io/paths.py's limits before a pixel is
decoded, every decoder exception becomes a FATError naming the file, and a truncated
file is refused rather than edited with a grey lower half. PIL decodes (its loaders
raise on truncated data, where OpenCV's JPEG reader pads silently); OpenCV decodes
only the 16-bit pixels PIL cannot hold.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from engine.errors import EXIT_INPUT, EXIT_USAGE, FATError
from engine.io.files import atomic_write
from engine.io.paths import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE, check_image_size, check_output_type, open_regular

ORIENTATION_TAG = 0x0112
DECODE_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "GIF", "BMP", "PPM", "TGA", "SUN", "JPEG2000", "AVIF")
I16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
GRAY_MODES = ("1", "L", "LA", "La")  # 8-bit (or 1-bit) gray files: kept gray (Photo.gray)
# a photo whose colour channels differ by at most this (0..255 units) anywhere is black and white (monochrome()):
# its edits stay so, whatever the container (a B&W photo saved as RGB JPEG decodes with R = G = B)
MONOCHROME_SPREAD = 1.0
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's and libjpeg's RGB -> gray
EIGHT_BIT_TYPES = (".jpg", ".jpeg", ".webp")  # containers with 8 bits a channel: 16-bit results are scaled down
NO_ALPHA_TYPES = (".jpg", ".jpeg")
# zlib level of 8-bit PNG results (Pillow; lossless at every level): level 1 writes a 2 MP photo in 0.12 s where
# Pillow's default 6 takes 0.46 s (a tenth of a warm VGG-Face edit), for a file 16 % larger. 16-bit ones go through
# OpenCV, whose default (level 1, run-length strategy) is faster still
PNG_COMPRESS_LEVEL = 1


@dataclass
class Photo:
    rgb: np.ndarray  # float32 H x W x 3, 0..255
    alpha: np.ndarray | None = None  # native dtype H x W, untouched by edits
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))
    icc: bytes | None = None
    path: Path | None = None
    gray: bool = False  # the file or array had one colour channel (and maybe alpha): saved with one again

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


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says (probe_image): enough for the checks made before an edit."""

    width: int
    height: int
    bits: int  # 8 or 16 per channel
    alpha: bool
    format: str
    frames: int = 1  # an animation's frames or a multi-page file's pages: the first is the one edited


ImageSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | Image.Image


def from_array(a: np.ndarray, what: str = "image array") -> Photo:
    """A Photo from an array, by one fixed rule (the API's arrays come from anywhere).

    Shapes: H x W (gray) or H x W x 1/2/3/4 (gray, gray + alpha, RGB, RGBA). uint8 and uint16 keep
    their depth; other integers must hold 0..255 (8-bit values in a wider type); bool is refused.
    Floats are 0..255 values, alpha too: NaN or inf is refused, values within half a level outside
    0..255 are clipped (rounding), anything further out is refused, and so is an array whose values
    all lie in 0..1 (a 0..1 image would be edited as black: multiply it by 255 first).
    """
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise FATError(f"{what} has shape {a.shape}; expected H x W (gray) or H x W x 3 (RGB) or 4 (RGBA).",
                       EXIT_INPUT)
    check_image_size(a.shape[1], a.shape[0], what)
    a, dtype = _native_values(a, what)
    gray = a.shape[2] < 3
    if gray:  # gray (+ alpha) -> RGB (+ alpha)
        a = np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:]], axis=2)
    scale = 257.0 if dtype == np.uint16 else 1.0
    alpha = None if a.shape[2] < 4 else (a[..., 3] if a.dtype.kind == "u" else np.rint(a[..., 3])).astype(dtype)
    return Photo((a[..., :3].astype(np.float32) / scale), alpha, np.dtype(dtype), gray=gray)


def _native_values(a: np.ndarray, what: str) -> tuple[np.ndarray, np.dtype]:
    """(values, the dtype they are saved in) by from_array's rule."""
    if a.dtype in (np.uint8, np.uint16):
        return a, a.dtype
    if a.dtype.kind not in "uif":
        raise FATError(f"{what}: {a.dtype} values are not pixels; give uint8, uint16 or 0..255 float values.",
                       EXIT_INPUT)
    if a.dtype.kind in "ui":
        low, high = int(a.min()), int(a.max())
        if low < 0 or high > 255:
            raise FATError(f"{what}: {a.dtype} values {low}..{high} are outside 0..255; give uint16 for 16-bit "
                           "pixels.", EXIT_INPUT)
        return a.astype(np.uint8), np.dtype(np.uint8)
    if not np.isfinite(a).all():
        raise FATError(f"{what}: holds NaN or infinite values; give finite 0..255 pixel values.", EXIT_INPUT)
    low, high = float(a.min()), float(a.max())
    if low < -0.5 or high > 255.5:
        raise FATError(f"{what}: float values {low:g}..{high:g} are outside 0..255 (floats are read as 0..255).",
                       EXIT_INPUT)
    if high <= 1.0:
        raise FATError(f"{what}: all float values lie in 0..1; floats are read as 0..255, so multiply by 255 first.",
                       EXIT_INPUT)
    return np.clip(a, 0, 255).astype(np.float32), np.dtype(np.uint8)


def _decode_formats() -> tuple[str, ...]:
    """PIL's loaders we use: the photo formats (not EPS, which runs Ghostscript, nor the rarer ones)."""
    Image.init()
    return tuple(f for f in DECODE_FORMATS if f in Image.OPEN)


def _unreadable(name: str, e: BaseException) -> FATError:
    """A decoder's exception, whatever its type, as the user's error: the file is at fault, not the engine."""
    text = (str(e) or type(e).__name__).splitlines()[0][:200]
    if "truncated" in text.lower():
        return FATError(f"{name}: the file is truncated (cut short); re-export or re-download it.", EXIT_INPUT)
    if isinstance(e, UnidentifiedImageError):
        return FATError(f"{name}: not a readable image (not a format the engine reads, or a damaged header); "
                        "use PNG, JPEG, TIFF or WebP.", EXIT_INPUT)
    return FATError(f"{name}: not a readable image ({type(e).__name__}: {text}); re-export it as PNG, JPEG, TIFF "
                    "or WebP.", EXIT_INPUT)


def _too_large(name: str, e: BaseException) -> FATError:
    count = re.search(r"\((\d+) pixels\)", str(e))
    size = f"{int(count.group(1)) / 1e6:,.0f} megapixels" if count else "too large"
    return FATError(f"{name}: the image is {size}; the limit is {MAX_PIXELS / 1e6:g} megapixels and {MAX_SIDE} "
                    "pixels a side. Scale it down first.", EXIT_INPUT)


def _damaged(stream: BinaryIO, name: str) -> FATError | None:
    """A file that starts like one of our formats but that PIL could not open: say which format is damaged."""
    stream.seek(0)
    prefix = stream.read(16)
    for fmt in _decode_formats():
        try:
            accepted = Image.OPEN[fmt][1] is not None and Image.OPEN[fmt][1](prefix)
        except Exception:  # a loader's test on a short prefix
            accepted = False
        if accepted:
            return FATError(f"{name}: a damaged {fmt} file (its header cannot be read); re-export or re-download it.",
                            EXIT_INPUT)
    return None


def _open_pil(stream: BinaryIO, name: str) -> Image.Image:
    """PIL's lazy open: the header only (format, size, mode, EXIF, ICC), no pixel decoded yet."""
    try:
        im = Image.open(stream, formats=_decode_formats())
    except Image.DecompressionBombError as e:  # PIL's own limit, far above ours, hit while parsing the header
        raise _too_large(name, e) from None
    except MemoryError:
        raise
    except UnidentifiedImageError as e:
        raise _damaged(stream, name) or _unreadable(name, e) from None
    except Exception as e:
        raise _unreadable(name, e) from None
    try:
        check_image_size(im.width, im.height, name)
    except BaseException:
        im.close()
        raise
    return im


def _loaded(im: Image.Image, name: str) -> Image.Image:
    """Decode every pixel; PIL raises on truncated data (ImageFile.LOAD_TRUNCATED_IMAGES stays False)."""
    try:
        im.load()
    except MemoryError:
        raise
    except Exception as e:
        raise _unreadable(name, e) from None
    return im


def _bits(im: Image.Image) -> int:
    """8 or 16, from the header (PIL opens 16-bit colour as 8-bit modes; the raw mode tells)."""
    rawmodes = " ".join(str(t.args) for t in (getattr(im, "tile", None) or ()))
    ppm16 = im.format == "PPM" and any(isinstance(v, int) and v > 255 for t in im.tile for v in t.args[1:])
    return 16 if im.mode in I16_MODES or ";16" in rawmodes or ppm16 else 8


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # damaged EXIF: keep the pixels, assume upright
        return 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: np.swapaxes(x, 0, 1), 6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
           7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1], 8: lambda x: np.swapaxes(x, 0, 1)[::-1]}
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _pil_native(im: Image.Image, name: str) -> np.ndarray:
    """Decoded PIL pixels as uint8 RGB(A) or gray (+ alpha), or uint16 gray."""
    if im.mode in I16_MODES:
        return np.asarray(im).astype(np.uint16)
    if im.mode in ("I", "F") or im.mode.startswith(("I;", "F;")):
        raise FATError(f"{name}: {im.mode!r} pixels (32-bit integer or float) are not supported; save it as 8- or "
                       "16-bit.", EXIT_INPUT)
    gray = im.mode in GRAY_MODES
    try:
        return np.asarray(im.convert(("LA" if gray else "RGBA") if _has_alpha(im) else ("L" if gray else "RGB")))
    except MemoryError:
        raise
    except Exception as e:  # e.g. a colour space PIL cannot convert
        raise _unreadable(name, e) from None


@contextmanager
def _quiet_opencv():
    """OpenCV logs its decoders' complaints on stderr; the FATError says it better."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _check_png_chunks(data: bytes, name: str) -> None:
    """Every chunk must fit in the file: OpenCV's PNG reader allocates (and zeroes) what a chunk's length
    says before reading it, so 75 damaged bytes could make it take 4 GB and seconds."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        pos += 12 + length
        if pos > len(data):
            raise FATError(f"{name}: the file is truncated (cut short) or damaged (its {kind!r} chunk runs past the "
                           "end); re-export or re-download it.", EXIT_INPUT)
        if kind == b"IEND":
            return


def _opencv_native(stream: BinaryIO, im: Image.Image, name: str) -> np.ndarray:
    """16-bit pixels PIL cannot hold (colour, or PGM) decoded by OpenCV, as RGB(A) or gray."""
    stream.seek(0)
    data = stream.read()
    if im.format == "PNG":
        _check_png_chunks(data, name)
    buf = np.frombuffer(data, np.uint8)
    try:
        with _quiet_opencv():
            raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:
        raise _unreadable(name, e) from None
    if raw is None or raw.shape[:2] != (im.height, im.width) or raw.dtype not in (np.uint8, np.uint16):
        _loaded(im, name)  # PIL's reason (a truncated file) is the better message
        raise FATError(f"{name}: this {im.format} file's 16-bit pixels cannot be decoded; re-export it as a 16-bit "
                       "PNG or TIFF.", EXIT_INPUT)
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA if raw.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return raw


def _photo_from_pil(im: Image.Image, name: str, stream: BinaryIO | None = None) -> Photo:
    """Pixels by PIL (whose loaders raise on truncated data), 16-bit colour by OpenCV; EXIF orientation applied."""
    check_image_size(im.width, im.height, name)
    if stream is not None and _bits(im) == 16 and im.mode not in I16_MODES:
        native = _opencv_native(stream, im, name)
    else:
        native = _pil_native(_loaded(im, name), name)
    orientation, icc = _orientation(im), im.info.get("icc_profile")  # after decoding: PNG keeps EXIF at the end
    icc = icc if isinstance(icc, bytes) and icc else None
    if im.mode == "CMYK":
        native, icc = _cmyk_as_srgb(im, icc, native)
    photo = from_array(_apply_orientation(native, orientation), name)
    photo.icc = icc
    return photo


def icc_space(icc: bytes | None) -> str | None:
    """The colour space an ICC profile describes ('RGB', 'GRAY', 'CMYK', ...), from its header (bytes 16-19)."""
    return icc[16:20].decode("latin-1").strip() if icc and len(icc) >= 128 else None


def _cmyk_as_srgb(im: Image.Image, icc: bytes | None, plain: np.ndarray) -> tuple[np.ndarray, bytes | None]:
    """A CMYK file's pixels as sRGB through its own profile where LittleCMS reads it (Pillow's plain conversion,
    `plain`, ignores it: a print file's colours shift), and no profile: its CMYK one cannot describe RGB pixels (it
    was written into the RGB result, which colour-managed viewers then refuse or misread)."""
    if icc_space(icc) == "CMYK":
        try:
            srgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
            return np.asarray(srgb), None
        except (ImageCms.PyCMSError, OSError, ValueError):  # a damaged profile: the plain conversion
            pass
    return plain, None


def _decode(stream: BinaryIO, name: str) -> Photo:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about damaged EXIF and big images: checked and said here
        with _open_pil(stream, name) as im:
            return _photo_from_pil(im, name, stream)


def _read_file(path: Path) -> bytes:
    """The whole file, read once: decoders then seek in memory, and a damaged length field that asks for
    gigabytes gets the bytes that exist (a file object would allocate what was asked first)."""
    with open_regular(path, "image") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise FATError(f"{path}: the file is {size / 2**30:.1f} GB; image files over {MAX_FILE_BYTES / 2**30:g} GB "
                           f"are not read (the limit is {MAX_PIXELS / 1e6:g} megapixels).", EXIT_INPUT)
        return f.read()


def probe_image(path: Path, what: str = "image") -> ImageInfo:
    """Size, depth and alpha from the header alone (cheap: nothing decoded); refuses what load_photo would
    refuse by its header (unknown format, over the size limits)."""
    with open_regular(path, what) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open_pil(f, f"{path} ({what})") as im:
            return ImageInfo(im.width, im.height, _bits(im), _has_alpha(im), im.format or "", _frames(im))


def _frames(im: Image.Image) -> int:
    """How many frames or pages the file holds (PIL walks their headers); 1 where that cannot be told."""
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # a damaged later frame: the first is still what is edited
        return 1


def load_photo(source: ImageSource) -> Photo:
    """Path, encoded file bytes, PIL image or numpy array -> Photo (EXIF orientation applied).

    Whatever is wrong with the input, the answer is a FATError naming it: exit 3 for a file or
    array that is not a usable image (unknown format, damaged, truncated, over the size limits of
    engine/io/paths.py, checked from the header before decoding), exit 2 for a value that is no
    image source at all.
    """
    if isinstance(source, np.ndarray):
        return from_array(source)
    if isinstance(source, Image.Image):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _photo_from_pil(source, "PIL image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), "image bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        photo = _decode(io.BytesIO(_read_file(path)), str(path))
        photo.path = path
        return photo
    raise FATError(f"{source!r:.40} ({type(source).__name__}) is not an image: give a file path, the bytes of an "
                   "image file, a PIL image or an H x W x 3 array.", EXIT_USAGE)


def mask_channels(source: ImageSource) -> tuple[np.ndarray, np.ndarray | None]:
    """A mask image or array -> (colour H x W x 3 or H x W, alpha H x W or None), both 0..1 (the rule that
    picks between them is engine/face/masks.py user_mask's). Files, bytes and PIL images are read like
    photos; arrays: uint8 / 255, uint16 / 65535, bool as 0/1, other values / 255 when any is above 1."""
    if not isinstance(source, np.ndarray):
        photo = load_photo(source)
        alpha = None if photo.alpha is None else photo.alpha.astype(np.float32) / float(np.iinfo(photo.dtype).max)
        return photo.rgb / 255.0, alpha
    a = source
    if a.dtype.kind not in "buif":
        raise FATError(f"mask array of {a.dtype} values; give uint8, uint16, bool or float values.", EXIT_INPUT)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
        raise FATError(f"mask array has shape {a.shape}; expected H x W, or H x W x 3 / 4.", EXIT_INPUT)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise FATError("mask array holds NaN or infinite values; give values in 0..1 or 0..255.", EXIT_INPUT)
    m = a.astype(np.float32)
    m /= {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(a.dtype, 255.0 if m.max() > 1.0 else 1.0)
    if m.ndim == 2:
        return m, None
    has_alpha = m.shape[2] in (2, 4)
    colour = m[..., :-1] if has_alpha else m
    return (colour[..., 0] if colour.shape[2] == 1 else colour), (m[..., -1] if has_alpha else None)


def monochrome(rgb: np.ndarray, rows: int = 512) -> bool:
    """Whether an H x W x 3 image is black and white (its channels within MONOCHROME_SPREAD everywhere), in row
    bands: a 100-megapixel photo's spread at once would take over a gigabyte."""
    for top in range(0, rgb.shape[0], rows):
        band = rgb[top:top + rows]
        if float((band.max(axis=2) - band.min(axis=2)).max(initial=0.0)) > MONOCHROME_SPREAD:
            return False
    return True


def luma(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 (0..255) -> H x W gray by LUMA, the one gray every black-and-white rule here uses."""
    return np.asarray(rgb, np.float32) @ np.asarray(LUMA, np.float32)


def kept_monochrome(photo: Photo, image: np.ndarray) -> np.ndarray:
    """The edited image, whose change is made gray (its luma) where the photo is black and white: a bank example's
    or a guide's colour pixels tinted a B&W portrait's lips pink (a user trial). Pixels the edit left alone stay
    byte for byte; elsewhere in a colour photo nothing changes."""
    if not (photo.gray or monochrome(photo.rgb)):
        return image
    return photo.rgb + luma(image - photo.rgb)[..., None]


def to_native(photo: Photo, rgb: np.ndarray | None = None, gray: bool = False) -> np.ndarray:
    """H x W x 3/4 array in the photo's own dtype (RGB[A]); with `gray`, H x W x 1/2 (its luma[, alpha])."""
    rgb = photo.rgb if rgb is None else rgb
    if gray:
        rgb = luma(rgb)[..., None]
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


def save_notes(bits: int, alpha: bool, out: Path) -> list[str]:
    """What saving a `bits`-deep image (with alpha or not) as `out` cannot keep, in words (empty: nothing).
    The CLI says it before the edit; save_photo returns it."""
    ext, notes = Path(out).suffix.lower(), []
    if bits == 16 and ext in EIGHT_BIT_TYPES:
        notes.append(f"{out}: {ext} holds 8 bits a channel, so the 16-bit result is scaled to 8 bits "
                     "(save as .png or .tif to keep 16).")
    if alpha and ext in NO_ALPHA_TYPES:
        notes.append(f"{out}: JPEG has no alpha channel, so the transparency is dropped (save as .png, .tif or "
                     ".webp to keep it).")
    return notes


def _as_8bit(photo: Photo) -> Photo:
    """The same photo at 8 bits: rgb is already in 0..255 units; alpha is scaled, never clipped."""
    alpha = None if photo.alpha is None else np.rint(photo.alpha / 257.0).astype(np.uint8)
    return replace(photo, alpha=alpha, dtype=np.dtype(np.uint8))


def save_photo(photo: Photo, rgb: np.ndarray, out: Path) -> list[str]:
    """Write atomically in the photo's depth, with its alpha and ICC profile, as far as the container holds them:
    16 bits go to .png/.tif; .jpg/.webp get them scaled to 8 bits (OpenCV would clip them: a white picture). A gray
    photo is written gray (but 16-bit gray with alpha as RGBA, which OpenCV's writers need, and WebP as RGB, its
    only kind). Returns save_notes(): what the container could not keep."""
    out = Path(out)
    check_output_type(out)
    ext = out.suffix.lower()
    notes = save_notes(16 if photo.dtype == np.uint16 else 8, photo.alpha is not None, out)
    if photo.dtype == np.uint16 and ext in EIGHT_BIT_TYPES:
        photo = _as_8bit(photo)
    native = to_native(photo, rgb, photo.gray and not (photo.dtype == np.uint16 and photo.alpha is not None))

    def write(tmp: Path) -> None:
        if photo.dtype == np.uint16:
            code = {4: cv2.COLOR_RGBA2BGRA, 3: cv2.COLOR_RGB2BGR}.get(native.shape[2])
            # OpenCV's PNG default: level 1, run-length
            ok, buf = cv2.imencode(ext, native[..., 0] if code is None else cv2.cvtColor(native, code))
            if not ok:
                raise FATError(f"{out}: cannot encode a 16-bit image as {ext}; use .png or .tif.", EXIT_USAGE)
            data = buf.tobytes()
            if ext == ".png" and icc_space(photo.icc) == ("GRAY" if native.shape[2] < 3 else "RGB"):
                data = _png_with_icc(data, photo.icc)
            tmp.write_bytes(data)
            return
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[native.shape[2]]
        im = Image.fromarray(native[..., 0] if mode == "L" else native, mode)
        if ext in NO_ALPHA_TYPES and im.mode in ("RGBA", "LA"):
            im = im.convert(im.mode[:-1])
        if ext == ".webp" and im.mode in ("L", "LA"):  # WebP holds colour only
            im = im.convert("RGBA" if im.mode == "LA" else "RGB")
        kwargs = ({"quality": 95, "subsampling": 0} if ext in (".jpg", ".jpeg") else
                  {"compress_level": PNG_COMPRESS_LEVEL} if ext == ".png" else {})
        # the profile only where it describes the pixels written (a gray one on RGB pixels is refused or misread)
        if icc_space(photo.icc) == ("GRAY" if im.mode in ("L", "LA") else "RGB"):
            kwargs["icc_profile"] = photo.icc
        im.save(tmp, format=Image.registered_extensions()[ext], **kwargs)

    atomic_write(out, write)
    return notes
