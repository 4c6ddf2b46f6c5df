"""cxraug.core.images: every format and failure the decoder promises, on files made in the test.

Expected pixels come from the array the file was made from (lossless formats) or from an
independent formula (luma weights, alpha compositing, Pillow's own conversions), never from
cxraug.core.images itself.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cxraug.core.errors import ImageError
from cxraug.core.imageheader import probe
from cxraug.core.images import (
    decode_gray,
    encode_png_gray,
    read_gray,
    read_gray_u8,
    to_uint8,
    write_png_gray,
    write_png_rgb,
)


def ramp(h: int = 40, w: int = 64) -> np.ndarray:
    """(h, w) uint8 with a horizontal ramp and an off-centre bright block (asymmetric)."""
    a = np.tile(np.linspace(0, 250, w).astype(np.uint8), (h, 1))
    a[4:12, 6:20] = 255
    return a


def pil_bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def gray(data: bytes, **kw: int) -> np.ndarray:
    g, _, _ = decode_gray(data, **kw)
    assert g.dtype == np.float32 and g.ndim == 2
    return g


# ---- formats that must decode ------------------------------------------------------------


def test_png_8bit_gray_is_exact() -> None:
    a = ramp()
    g = gray(pil_bytes(Image.fromarray(a), "PNG"))
    np.testing.assert_array_equal(g, a.astype(np.float32) / 255)


def test_png_16bit_full_range_and_12bit_container() -> None:
    a16 = (np.linspace(0, 65535, 40 * 64).reshape(40, 64)).astype(np.uint16)
    ok, buf = cv2.imencode(".png", a16)
    assert ok
    np.testing.assert_allclose(gray(buf.tobytes()), a16 / 65535.0, atol=1e-6)
    # 12-bit detector data (0..4095) in a 16-bit container: full white is 4095, not 65535
    a12 = (np.linspace(0, 4095, 40 * 64).reshape(40, 64)).astype(np.uint16)
    ok, buf = cv2.imencode(".png", a12)
    g = gray(buf.tobytes())
    np.testing.assert_allclose(g, a12 / 4095.0, atol=1e-6)
    assert g.max() == pytest.approx(1.0)


def test_rgb_uses_bt601_luma() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    g = gray(pil_bytes(Image.fromarray(rgb, "RGB"), "PNG"))
    # independent formula: ITU-R BT.601 luma on R, G, B in that order
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    # OpenCV rounds in fixed point: within 0.6 LSB (BT.709 weights would miss by ~20 LSB)
    np.testing.assert_allclose(g, expected, atol=0.6 / 255)
    # a pure-red / pure-blue image tells R from B (channel order mistakes show here)
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    red[0, 0] = 0  # not constant
    assert gray(pil_bytes(Image.fromarray(red), "PNG"))[5, 5] == pytest.approx(0.299, abs=1 / 255)


def test_rgba_alpha_composited_over_black() -> None:
    rgb = np.full((24, 24, 3), 200, np.uint8)
    alpha = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (24, 1))
    g = gray(pil_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"))
    np.testing.assert_allclose(g, (200 / 255) * (alpha / 255.0), atol=1e-6)


def test_gray_alpha_png() -> None:
    a = ramp()
    la = Image.merge("LA", [Image.fromarray(a), Image.fromarray(np.full_like(a, 128))])
    g = gray(pil_bytes(la, "PNG"))
    np.testing.assert_allclose(g, a / 255.0 * (128 / 255.0), atol=1e-6)


def test_palette_png_and_palette_with_transparency() -> None:
    a = ramp()
    p = Image.fromarray(a).convert("P")
    expected = np.asarray(p.convert("L"), np.float32) / 255  # Pillow's own expansion
    np.testing.assert_allclose(gray(pil_bytes(p, "PNG")), expected, atol=1e-6)
    white = int(np.asarray(p)[6, 8])  # palette index of the bright block
    g = gray(pil_bytes(p, "PNG", transparency=white))
    assert g[6, 8] == 0.0  # transparent white -> black background
    np.testing.assert_allclose(g[20:], expected[20:], atol=1e-6)  # rest untouched


def test_gray_and_rgb_png_with_trns_key() -> None:
    a = ramp()
    g = gray(pil_bytes(Image.fromarray(a), "PNG", transparency=255))
    assert g[6, 8] == 0.0 and g[30, 30] == pytest.approx(a[30, 30] / 255)
    rgb = np.dstack([a, a, a])
    g = gray(pil_bytes(Image.fromarray(rgb), "PNG", transparency=(255, 255, 255)))
    assert g[6, 8] == 0.0 and g[30, 30] == pytest.approx(a[30, 30] / 255, abs=1 / 255)


def test_grayscale_jpeg_close_to_source() -> None:
    a = ramp()
    g = gray(pil_bytes(Image.fromarray(a), "JPEG", quality=98))
    assert np.abs(g * 255 - a).max() <= 8  # JPEG loss only


def test_cmyk_jpeg_matches_pillow_conversion() -> None:
    rgb = np.dstack([ramp(), 255 - ramp(), np.full((40, 64), 90, np.uint8)])
    cmyk = Image.fromarray(rgb).convert("CMYK")
    data = pil_bytes(cmyk, "JPEG", quality=100)
    assert probe(data).channels == 4
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32) / 255
    np.testing.assert_allclose(gray(data), ref, atol=3 / 255)


@pytest.mark.parametrize("orientation,k", [(6, -1), (3, 2)])
def test_exif_orientation_applied(orientation: int, k: int) -> None:
    a = ramp()
    ex = Image.Exif()
    ex[0x0112] = orientation
    data = pil_bytes(Image.fromarray(a), "JPEG", quality=100, exif=ex.tobytes())
    info = probe(data)
    assert info.orientation == orientation and (info.width, info.height) == (64, 40)
    # exact: the same libjpeg decode without orientation, rotated by numpy
    raw = cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    )
    np.testing.assert_array_equal(gray(data), np.rot90(raw, k).astype(np.float32) / 255)
    # and close to the rotated source array (orientation 6 = rotate 90 degrees clockwise)
    assert np.abs(gray(data) * 255 - np.rot90(a, k)).max() <= 6
    # DCT-reduced decode is rotated as well
    g2, _, applied = decode_gray(data, reduce=2)
    assert applied == 2 and g2.shape == np.rot90(a, k)[::2, ::2].shape


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255.0), (np.uint16, 65535.0)])
def test_tiff_8_and_16_bit(dtype: type, scale: float) -> None:
    a = (np.linspace(0, scale, 40 * 64).reshape(40, 64)).astype(dtype)
    data = pil_bytes(Image.fromarray(a), "TIFF")
    info = probe(data)
    assert (info.format, info.width, info.height) == ("TIFF", 64, 40)
    np.testing.assert_allclose(gray(data), a / scale, atol=1e-6)


@pytest.mark.parametrize(
    "fmt,kw", [("BMP", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 90})]
)
def test_bmp_and_webp_sizes_from_header(fmt: str, kw: dict[str, object]) -> None:
    data = pil_bytes(Image.fromarray(ramp()).convert("RGB"), fmt, **kw)
    info = probe(data)
    assert (info.format, info.width, info.height) == (fmt, 64, 40)
    assert gray(data).shape == (40, 64)


def test_jpeg_reduce_scales_size() -> None:
    a = np.tile(ramp(), (4, 4))  # (160, 256)
    data = pil_bytes(Image.fromarray(a), "JPEG", quality=95)
    for k in (2, 4, 8):
        g, info, applied = decode_gray(data, reduce=k)
        assert applied == k and g.shape == (-(-160 // k), 256 // k)
    _, _, applied = decode_gray(pil_bytes(Image.fromarray(a), "PNG"), reduce=4)
    assert applied == 1  # PNG has no DCT scaling


# ---- failures, with the exact reasons stored in the manifest -----------------------------


def reason_of(path: Path) -> str:
    with pytest.raises(ImageError) as ei:
        read_gray(path)
    return ei.value.reason


def test_file_level_failures(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert reason_of(tmp_path / "empty.png") == "empty file (0 bytes)"
    (tmp_path / "text.png").write_text("hello, I am not a picture\n")
    assert reason_of(tmp_path / "text.png") == "not an image (unrecognised file signature)"
    (tmp_path / "x.png").mkdir()
    assert reason_of(tmp_path / "x.png") == "is a directory, not an image file"
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    assert reason_of(tmp_path / "link.png") == "dangling symbolic link"
    assert reason_of(tmp_path / "missing.png") == "file not found"


@pytest.mark.parametrize("frac", [0.3, 0.7, 0.97])
def test_truncated_jpeg(frac: float) -> None:
    data = pil_bytes(Image.fromarray(np.tile(ramp(), (3, 3))), "JPEG", quality=90)
    with pytest.raises(ImageError) as ei:
        decode_gray(data[: int(len(data) * frac)])
    assert ei.value.reason == "truncated JPEG (no end-of-image marker)"


def test_truncated_png() -> None:
    rng = np.random.default_rng(1)
    data = pil_bytes(Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)), "PNG")
    with pytest.raises(ImageError) as ei:
        decode_gray(data[: len(data) // 2])
    assert ei.value.reason == "truncated PNG (no IEND chunk)"


def test_too_small_and_constant() -> None:
    with pytest.raises(ImageError) as ei:
        decode_gray(encode_png_gray(np.zeros((1, 1), np.uint8)))
    assert ei.value.reason == "too small (1x1; need 16 px per side)"
    with pytest.raises(ImageError) as ei:
        decode_gray(encode_png_gray(np.full((32, 32), 128, np.uint8)))
    assert ei.value.reason == "flat constant image (every pixel = 0.502)"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def test_enormous_header_refused_before_decoding() -> None:
    # a valid-looking PNG whose IHDR claims 100000 x 100000 (10 gigapixels) with a tiny IDAT
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + png_chunk(b"IEND", b"")
    )
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as ei:
            decode_gray(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "100000x100000 (10000 MP), above the 150 MP limit" in ei.value.reason
    assert peak < 5_000_000  # refused from the header: nothing near 10 GB was allocated


def test_enormous_tiff_header_refused() -> None:
    data = bytearray(pil_bytes(Image.fromarray(ramp()), "TIFF"))
    # patch ImageWidth/ImageLength in the first IFD to 60000
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    for k in range(n):
        off = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", data[off : off + 4])
        if tag in (256, 257):
            fmt = "<H" if typ == 3 else "<I"
            data[off + 8 : off + 8 + struct.calcsize(fmt)] = struct.pack(fmt, 60000)
    with pytest.raises(ImageError, match="60000x60000 .* above the 150 MP limit"):
        decode_gray(bytes(data))


def test_gif_refused_with_advice_and_a_broken_dicom_is_an_error() -> None:
    gif = pil_bytes(Image.fromarray(ramp()), "GIF")
    with pytest.raises(ImageError) as ei:
        decode_gray(gif)
    assert ei.value.reason == "GIF is not supported; convert it to PNG"
    # DICOM files are decoded (tests/test_dicom.py); a header that ends early is this error
    dicom = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + b"\x00" * 64
    with pytest.raises(ImageError) as ei:
        decode_gray(dicom)
    assert "DICOM" in ei.value.reason


def test_jpeg_without_frame_header() -> None:
    with pytest.raises(ImageError) as ei:
        decode_gray(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9")
    assert ei.value.reason == "corrupt JPEG (no frame header)"


# ---- encoders -----------------------------------------------------------------------------


def test_png_roundtrip_and_to_uint8(tmp_path: Path) -> None:
    a = ramp()
    write_png_gray(tmp_path / "a.png", a)
    np.testing.assert_array_equal(read_gray_u8(tmp_path / "a.png"), a)
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 1.0, 2.0])), [0, 128, 255, 255])
    rgb = np.dstack([a, 255 - a, a // 2])
    write_png_rgb(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png").convert("RGB")), rgb)
    with pytest.raises(ValueError, match="expected"):
        encode_png_gray(a.astype(np.float32))


# ---- real data ----------------------------------------------------------------------------


@pytest.mark.realdata
def test_every_original_decodes_at_its_stated_size(cxr_data: Path) -> None:
    with open(cxr_data / "SOURCES.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["path"].startswith("originals/")]
    assert len(rows) == 10
    for r in rows:
        g, info, _ = read_gray(cxr_data / r["path"])
        assert g.shape == (int(r["orig_height"]), int(r["orig_width"])), r["path"]
        assert info.format == r["format"]
        assert 0.0 <= g.min() < g.max() <= 1.0
