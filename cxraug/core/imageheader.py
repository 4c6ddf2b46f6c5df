"""What an image file's header says, read before any pixel is decoded (for cxraug.core.images,
the one decoder): the format from its signature (`probe`; JPEG, PNG, TIFF, BMP, WebP, DICOM;
GIF and anything else refused with a reason), the stored size, channels, bit depth and EXIF
orientation, the size as displayed (`displayed_size`), a PNG's tRNS transparency chunk, and
whether a JPEG or PNG is complete. A header is enough to refuse an enormous image in bounded
memory; nothing here decodes pixels.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cxraug.core import dicom
from cxraug.core.errors import ImageError


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says, before any pixel is decoded."""

    format: str  # "JPEG", "PNG", "TIFF", "BMP", "WEBP", "DICOM"
    width: int | None
    height: int | None
    channels: int | None  # components in the file (PNG: after palette expansion is not applied)
    bit_depth: int | None
    orientation: int = 1  # EXIF orientation tag (1 = upright)


def _sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        raise ImageError("GIF is not supported; convert it to PNG")
    if len(data) > 132 and data[128:132] == b"DICM":
        return "DICOM"
    raise ImageError("not an image (unrecognised file signature)")


def _exif_orientation(exif: bytes) -> int:
    """Orientation tag (0x0112) from a TIFF-structured EXIF block, 1 if absent or malformed."""
    try:
        endian = {b"II": "<", b"MM": ">"}[exif[:2]]
        (ifd,) = struct.unpack(endian + "I", exif[4:8])
        (n,) = struct.unpack(endian + "H", exif[ifd : ifd + 2])
        for i in range(n):
            off = ifd + 2 + 12 * i
            tag, _typ, _cnt = struct.unpack(endian + "HHI", exif[off : off + 8])
            if tag == 0x0112:
                (val,) = struct.unpack(endian + "H", exif[off + 8 : off + 10])
                return val if 1 <= val <= 8 else 1
    except (KeyError, struct.error, IndexError):
        pass
    return 1


def _jpeg_info(data: bytes) -> ImageInfo:
    i, orientation = 2, 1
    width = height = channels = depth = None
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan
            break
        (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
        seg = data[i + 4 : i + 2 + seg_len]
        if marker == 0xE1 and seg[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(seg[6:])
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(seg) >= 6:
            depth = seg[0]
            height, width = struct.unpack(">HH", seg[1:5])
            channels = seg[5]
        i += 2 + seg_len
    if width is None:
        raise ImageError("corrupt JPEG (no frame header)")
    return ImageInfo("JPEG", width, height, channels, depth, orientation)


def _png_info(data: bytes) -> ImageInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageError("corrupt PNG (no IHDR header)")
    width, height, depth, ctype = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    return ImageInfo("PNG", width, height, channels, depth)


def png_trns(data: bytes) -> bytes | None:
    """The tRNS chunk's payload (transparency without an alpha channel), None if absent.

    tRNS must come before the first IDAT, so only the chunks up to it are walked."""
    i = 8
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        ctype = data[i + 4 : i + 8]
        if ctype == b"tRNS":
            return data[i + 8 : i + 8 + length]
        if ctype in (b"IDAT", b"IEND"):
            return None
        i += 12 + length
    return None


def _tiff_info(data: bytes) -> ImageInfo:
    """Width/height/samples/bits from the first IFD (enough to refuse a huge TIFF early)."""
    endian = "<" if data[:2] == b"II" else ">"
    tags: dict[int, int] = {}
    try:
        (ifd,) = struct.unpack(endian + "I", data[4:8])
        (n,) = struct.unpack(endian + "H", data[ifd : ifd + 2])
        for k in range(n):
            off = ifd + 2 + 12 * k
            tag, typ, _cnt = struct.unpack(endian + "HHI", data[off : off + 8])
            if tag in (256, 257, 258, 277, 274):  # width, height, bits, samples, orientation
                fmt = endian + ("H" if typ == 3 else "I")
                size = 2 if typ == 3 else 4
                (tags[tag],) = struct.unpack(fmt, data[off + 8 : off + 8 + size])
    except struct.error as e:
        raise ImageError("corrupt TIFF (unreadable first directory)") from e
    if 256 not in tags or 257 not in tags:
        raise ImageError("corrupt TIFF (no width/height tags)")
    return ImageInfo("TIFF", tags[256], tags[257], tags.get(277, 1), tags.get(258),
                     tags.get(274, 1))  # fmt: skip


def _bmp_info(data: bytes) -> ImageInfo:
    if len(data) < 30:
        raise ImageError("corrupt BMP (header too short)")
    (hdr,) = struct.unpack("<I", data[14:18])
    if hdr == 12:  # OS/2 BITMAPCOREHEADER
        w, h, _planes, bits = struct.unpack("<HHHH", data[18:26])
    else:
        w, h, _planes, bits = struct.unpack("<iiHH", data[18:30])
    return ImageInfo("BMP", abs(w), abs(h), None, bits)  # negative height = top-down rows


def _webp_info(data: bytes) -> ImageInfo:
    chunk = data[12:16]
    try:
        if chunk == b"VP8X":  # extended: 24-bit canvas size minus one
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
        elif chunk == b"VP8L":  # lossless: 14-bit sizes minus one after the 0x2f signature
            (bits,) = struct.unpack("<I", data[21:25])
            w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif chunk == b"VP8 ":  # lossy: key frame start code, then 14-bit sizes
            w, h = (v & 0x3FFF for v in struct.unpack("<HH", data[26:30]))
        else:
            return ImageInfo("WEBP", None, None, None, None)
    except struct.error as e:
        raise ImageError("corrupt WebP (header too short)") from e
    return ImageInfo("WEBP", w, h, None, 8)


def probe(data: bytes) -> ImageInfo:
    """Format and size from the header alone (no decoding).

    width/height are as stored; a JPEG/TIFF with `orientation` 5-8 displays them swapped."""
    fmt = _sniff(data)
    if fmt == "JPEG":
        return _jpeg_info(data)
    if fmt == "PNG":
        return _png_info(data)
    if fmt == "TIFF":
        return _tiff_info(data)
    if fmt == "BMP":
        return _bmp_info(data)
    if fmt == "DICOM":
        return ImageInfo("DICOM", *dicom.header_size(data))
    return _webp_info(data)


def check_complete(fmt: str, data: bytes) -> None:
    # libjpeg pads a truncated JPEG with grey and only warns; we refuse it instead.
    if fmt == "JPEG":
        t = data.rstrip(b"\x00\r\n \t")
        # EOI at the end, or within the last 4 KiB (some writers append junk after it).
        # rfind's -1 must fail too: a small file has len(t) - 4096 < -1.
        eoi = t.rfind(b"\xff\xd9")
        if not t.endswith(b"\xff\xd9") and (eoi < 0 or eoi < len(t) - 4096):
            raise ImageError("truncated JPEG (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in data[-64:]:
        raise ImageError("truncated PNG (no IEND chunk)")


def displayed_size(info: ImageInfo) -> tuple[int | None, int | None]:
    """(width, height) as displayed: EXIF orientations 5-8 rotate the stored image by 90 deg."""
    if info.width is not None and info.height is not None and 5 <= info.orientation <= 8:
        return info.height, info.width
    return info.width, info.height
