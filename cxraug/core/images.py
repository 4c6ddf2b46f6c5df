"""The one place that decodes and encodes image files.

`decode_displayed(data, keep=...)` is the one decode-orient-reduce path (file inspection in
`collect` and image loading in `preprocess` both use it): header checks, displayed size after
EXIF orientation, and libjpeg DCT reduction chosen by one rule (`choose_reduce`). With
`colour=True` it also hands back a colour file's BGR pixels, before they are reduced to gray
(`preprocess` looks for colour marks in them).

`read_gray(path)` returns a grayscale float32 image in [0, 1] with EXIF orientation applied,
or raises `ImageError` whose `.reason` is the short text stored in the manifest. It copes with
8/16-bit, grayscale/RGB/RGBA/palette PNG, CMYK and EXIF-rotated JPEG, TIFF, BMP and WebP, and
checks a file's header (JPEG, PNG, TIFF, BMP, WebP, DICOM; read by cxraug.core.imageheader)
*before* decoding so that an enormous image is refused in bounded memory. DICOM files (bytes
128-131 "DICM") are decoded by `cxraug.core.dicom` (Modality LUT, VOI LUT, MONOCHROME1;
`Decoded.dicom` holds their facts).

Conversions (documented because they change pixel values):
- colour -> gray: ITU-R BT.601 luma (OpenCV COLOR_BGR2GRAY);
- alpha (an alpha channel, or a PNG tRNS transparency chunk): composited over black (X-ray
  backgrounds are dark);
- 16-bit: divided by 2**b - 1 where b is the image's effective bit depth rounded up to 10, 12,
  14 or 16 bits (12-bit detectors stored in 16-bit containers are common in radiography);
- palette: expanded to RGB by libpng, then luma.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxraug.core import dicom
from cxraug.core.dicom import DicomFacts, PatientKey
from cxraug.core.errors import ImageError
from cxraug.core.fsutil import atomic_write_bytes
from cxraug.core.imageheader import ImageInfo, check_complete, displayed_size, png_trns, probe
from cxraug.core.settings import above, setting

DEFAULT_MAX_MEGAPIXELS = 150.0  # ~12,000 x 12,000: far above any X-ray, far below memory limits
#: Files above this are refused before they are read (a 150 MP 16-bit TIFF is ~430 MiB).
DEFAULT_MAX_FILE_MB = 512.0


def max_megapixels_setting() -> Any:
    """The `max_megapixels` field of every config that decodes source images (one help text)."""
    return setting(DEFAULT_MAX_MEGAPIXELS,
                   "Refuse images above this many megapixels, from their header (before "
                   "decoding).", bounds=above(0))  # fmt: skip


def max_file_mb_setting() -> Any:
    """The `max_file_mb` field of every config that reads source files (one help text)."""
    return setting(DEFAULT_MAX_FILE_MB,
                   "Refuse files above this many MiB before reading them (FIFOs and devices are "
                   "always refused, unread).", bounds=above(0))  # fmt: skip
MIN_SIDE = 16
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".bmp", ".webp")


def looks_like_image_name(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def _not_regular(mode: int) -> str:
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    return f"{kind}, not an image file; point the row at a regular file"


def read_bytes(path: Path, max_file_mb: float = DEFAULT_MAX_FILE_MB) -> bytes:
    """The whole file, or ImageError: only regular files (a symlink is followed; a FIFO, a
    device such as /dev/zero or a socket is refused without being read) of at most
    `max_file_mb` MiB, so one odd file can neither hang a batch nor exhaust its memory."""
    p = Path(path)
    limit = int(max_file_mb * 2**20)
    try:
        st = os.stat(p)  # follows symlinks: what would be read
    except FileNotFoundError:
        raise ImageError("dangling symbolic link" if p.is_symlink() else "file not found") from None
    except OSError as e:
        raise ImageError(f"unreadable ({e.strerror or e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(_not_regular(st.st_mode))
    too_big = (f"larger than the {max_file_mb:g} MiB limit; raise --max-file-mb if this really "
               "is an image")  # fmt: skip
    if st.st_size > limit:
        raise ImageError(f"file is {st.st_size / 2**20:.1f} MiB, {too_big}")
    try:
        # O_NONBLOCK: should a FIFO be swapped in after the stat, opening it does not block
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError(f"unreadable ({e.strerror or e})") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # the same race, checked on what was opened
            raise ImageError(_not_regular(os.fstat(fd).st_mode))
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (block := os.read(fd, min(1 << 24, limit + 1 - size))):
            chunks.append(block)
            size += len(block)
    except OSError as e:
        raise ImageError(f"unreadable ({e.strerror or e})") from e
    finally:
        os.close(fd)
    if size > limit:  # grew after the stat
        raise ImageError(f"file is over {max_file_mb:g} MiB, {too_big}")
    data = b"".join(chunks)
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def _to_gray01(arr: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/uint16/float array in OpenCV channel order -> (H, W) float32 in [0, 1]."""
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        alpha = arr[:, :, -1]
        arr = arr[:, :, :-1]
    if arr.ndim == 3 and arr.shape[2] == 3:
        gray = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    elif arr.ndim == 3:
        gray = arr[:, :, 0]
    else:
        gray = arr
    if gray.dtype == np.uint8:
        scale = 255.0
    elif gray.dtype == np.uint16:
        bits = max(8, int(gray.max()).bit_length())
        scale = float(2 ** next(b for b in (8, 10, 12, 14, 16) if b >= bits) - 1)
    else:  # float TIFF: stretch its own range
        g = gray.astype(np.float32)
        lo, hi = float(np.nanmin(g)), float(np.nanmax(g))
        if not np.isfinite([lo, hi]).all():
            raise ImageError("floating-point image contains NaN or Inf")
        gray, scale = g - lo, (hi - lo) or 1.0
    out = gray.astype(np.float32) / np.float32(scale)
    if alpha is not None:
        amax = 255.0 if alpha.dtype == np.uint8 else 65535.0
        out *= alpha.astype(np.float32) / np.float32(amax)
    return out


def decode_gray(
    data: bytes, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, reduce: int = 1
) -> tuple[np.ndarray, ImageInfo, int]:
    """Decode bytes to (gray float32 [0,1] (H, W), header info, reduction actually applied).

    `reduce` in {1, 2, 4, 8} asks libjpeg to decode a JPEG directly at 1/reduce size (DCT
    scaling: much faster and smaller for huge files); other formats ignore it (returns 1).
    """
    gray, _, info, applied, _ = _decode(data, max_megapixels, reduce, colour=False)
    return gray, info, applied


def _decode(
    data: bytes, max_megapixels: float, reduce: int, colour: bool,
    patient: PatientKey | None = None,
) -> tuple[np.ndarray, np.ndarray | None, ImageInfo, int, DicomFacts | None]:
    """decode_gray, plus with `colour` the (H, W, 3) BGR pixels the gray image was reduced
    from (None for a grey file): the same decode, so that the editorial-mark detector
    (cxraug.prep.marks) sees colour marks without a second decode. A JPEG in colour is then
    DCT-reduced in colour too and reduced to gray by the same luma as at full size. A DICOM
    file also gives its facts (cxraug.core.dicom; the patient id hashed with `patient`)."""
    info = probe(data)
    if info.width is not None and info.height is not None:
        mp = info.width * info.height / 1e6
        if mp > max_megapixels:
            raise ImageError(
                f"image is {info.width}x{info.height} ({mp:.0f} MP), above the "
                f"{max_megapixels:.0f} MP limit; downscale it or raise --max-megapixels"
            )
        if info.width == 0 or info.height == 0:
            raise ImageError(f"image has zero size ({info.width}x{info.height})")
    check_complete(info.format, data)
    if info.format == "DICOM":
        gray, facts = dicom.decode(data, patient)
        return _usable(gray, 1), None, info, 1, facts
    buf = np.frombuffer(data, dtype=np.uint8)
    trns = png_trns(data) if info.format == "PNG" and info.channels in (1, 3) else None
    applied = 1
    reduced_flags = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                     8: cv2.IMREAD_REDUCED_GRAYSCALE_8}  # fmt: skip
    if colour and info.channels == 3:
        reduced_flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                         8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip
    if info.format == "JPEG" and reduce in reduced_flags and info.channels in (1, 3):
        arr = cv2.imdecode(buf, reduced_flags[reduce])
        applied = reduce
    elif info.format == "PNG" and (info.channels in (2, 4) or trns is not None):
        # keep alpha (IMREAD_UNCHANGED; libpng turns a palette/RGB tRNS chunk into an alpha
        # channel); PNG carries no EXIF orientation in practice
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.ndim == 2 and trns is not None and len(trns) >= 2:
            # gray + tRNS: libpng via OpenCV drops it; pixels equal to the key are transparent
            key = struct.unpack(">H", trns[:2])[0]
            arr = np.where(arr == key, 0, arr).astype(arr.dtype)
    else:
        # ANYDEPTH keeps 16 bit; not UNCHANGED, so OpenCV applies the EXIF orientation
        arr = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if arr is None:
        raise ImageError(f"corrupt or unsupported {info.format} data (decoder failed)")
    gray = _usable(_to_gray01(arr), applied)
    bgr = arr[:, :, :3] if colour and arr.ndim == 3 and arr.shape[2] >= 3 else None
    return gray, bgr, info, applied, None


def _usable(gray: np.ndarray, applied: int) -> np.ndarray:
    """`gray`, unless it is too small or flat (ImageError); `applied`: its DCT reduction."""
    h, w = gray.shape
    if min(h, w) * applied < MIN_SIDE:
        raise ImageError(f"too small ({w * applied}x{h * applied}; need {MIN_SIDE} px per side)")
    if float(gray.max()) - float(gray.min()) < 1e-6:
        raise ImageError(f"flat constant image (every pixel = {float(gray.flat[0]):.3f})")
    return gray


def choose_reduce(crop_w: int, crop_h: int, size: int) -> int:
    """Largest JPEG DCT reduction k in (8, 4, 2) that leaves the crop >= 2*size per side."""
    for k in (8, 4, 2):
        if min(crop_w, crop_h) / k >= 2 * size:
            return k
    return 1


Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive


@dataclass(frozen=True)
class Decoded:
    gray: np.ndarray  # (h, w) float32 in [0, 1], maybe DCT-reduced
    info: ImageInfo
    width: int  # displayed size in original pixels (header, or decoded size x reduction)
    height: int
    reduced: int  # JPEG reduction applied (1 = none)
    colour: np.ndarray | None = None  # (h, w, 3) BGR that `gray` came from, when asked for
    dicom: DicomFacts | None = None  # a DICOM file's facts (modality, view, patient hash...)


def decode_displayed(
    data: bytes,
    *,
    keep: int | None = None,
    crop: Box | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    colour: bool = False,
    patient: PatientKey | None = None,
) -> Decoded:
    """Decode bytes to gray [0, 1] with the displayed (EXIF-oriented) size. With `keep`, a JPEG
    is decoded at the largest DCT reduction that leaves `crop` (default: the whole image)
    >= 2 x `keep` pixels per side. With `colour`, `Decoded.colour` keeps the BGR pixels of a
    colour file (None for a grey one). `patient`: how a DICOM file's patient id is hashed."""
    info = probe(data)
    W, H = displayed_size(info)
    k = 1
    if keep is not None and info.format == "JPEG" and W and H:
        cw, ch = (crop[2] - crop[0], crop[3] - crop[1]) if crop else (W, H)
        k = choose_reduce(cw, ch, keep)
    gray, bgr, info, applied, facts = _decode(data, max_megapixels, k, colour, patient)
    if W is None or H is None:
        H, W = (s * applied for s in gray.shape)
    return Decoded(gray, info, W, H, applied, bgr, facts)


def read_gray(
    path: Path, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, reduce: int = 1
) -> tuple[np.ndarray, ImageInfo, int]:
    """`decode_gray` of a file; file-level problems (missing, empty, dir) raise ImageError too."""
    return decode_gray(read_bytes(path), max_megapixels=max_megapixels, reduce=reduce)


def read_gray_u8(path: Path) -> np.ndarray:
    """A saved image as the 8-bit gray pixels a viewer shows (used to score what is saved)."""
    gray, _, _ = read_gray(path)
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def encode_png_gray(img_u8: np.ndarray) -> bytes:
    if img_u8.dtype != np.uint8 or img_u8.ndim != 2:
        raise ValueError(f"expected (H, W) uint8, got {img_u8.shape} {img_u8.dtype}")
    ok, buf = cv2.imencode(".png", img_u8)
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()


def write_png_gray(path: Path, img_u8: np.ndarray) -> None:
    """Write an 8-bit grayscale PNG atomically."""
    atomic_write_bytes(Path(path), encode_png_gray(img_u8))


def write_png_rgb(path: Path, img_rgb_u8: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image (e.g. a contact sheet) as PNG, atomically."""
    if img_rgb_u8.dtype != np.uint8 or img_rgb_u8.ndim != 3 or img_rgb_u8.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {img_rgb_u8.shape} {img_rgb_u8.dtype}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img_rgb_u8, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError("PNG encoding failed")
    atomic_write_bytes(Path(path), buf.tobytes())


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] float image(s) -> uint8 (the quantisation applied when images are saved)."""
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def encode_image(arr: np.ndarray, suffix: str, *, jpeg_quality: int = 92) -> bytes:
    """Encode (H, W) or (H, W, 3|4) pixels in OpenCV channel order (BGR[A]) as PNG (uint8 or
    uint16) or JPEG (uint8) bytes; used to write demo and test images in several formats."""
    suffix = suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"cannot encode {suffix!r}; use .png or .jpg")
    if arr.dtype not in (np.uint8, np.uint16) or (suffix != ".png" and arr.dtype != np.uint8):
        raise ValueError(f"cannot encode {arr.dtype} as {suffix}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix != ".png" else []
    ok, buf = cv2.imencode(suffix, arr, params)
    if not ok:
        raise ImageError(f"{suffix} encoding failed")
    return buf.tobytes()
