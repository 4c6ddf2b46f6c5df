"""DICOM files made in code for the tests (pydicom writes them; no patient data anywhere).

`dicom_bytes` writes a single-frame radiograph (or, with `pixels=None`, an object without pixel
data such as a structured report); `jpeg_lossless` is an independent JPEG process-14 encoder
(pydicom has none), so a compressed file can be made without any codec package.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    generate_uid,
)

PATIENT_ID = "PAT-0042-CLEAR"
PATIENT_NAME = "Doe^Jane^Clearname"


def dicom_bytes(pixels: np.ndarray | None, *, bits_stored: int | None = None,
                sop_class: str = DigitalXRayImageStorageForPresentation,
                syntax: str = ExplicitVRLittleEndian, frames: int = 1,
                **attrs: Any) -> bytes:  # fmt: skip
    """A DICOM Part 10 file: `pixels` (H, W) uint8/uint16 (or (F, H, W), or (H, W, 3) RGB)
    as stored values, MONOCHROME2 unless `attrs` say otherwise; `attrs` are set last (None
    deletes an attribute). Patient: PATIENT_ID / PATIENT_NAME unless given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "DX", PATIENT_ID, PATIENT_NAME
    ds.ViewPosition = "PA"
    if pixels is not None:
        colour = pixels.ndim == 3 and pixels.shape[-1] == 3
        ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        ds.SamplesPerPixel = 3 if colour else 1
        ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        if colour:
            ds.PlanarConfiguration = 0
        ds.BitsAllocated = 8 * pixels.dtype.itemsize
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for k, v in attrs.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    if syntax == JPEGLosslessSV1:
        assert pixels is not None
        ds.PixelData = encapsulate([jpeg_lossless(pixels, int(ds.BitsStored))])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicom(path: Path, pixels: np.ndarray | None, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dicom_bytes(pixels, **kw))
    return path


def sr_bytes() -> bytes:
    """A Basic Text structured report: a DICOM object without pixel data."""
    return dicom_bytes(None, sop_class=BasicTextSRStorage, Modality="SR", ViewPosition=None)


def ct_bytes(pixels: np.ndarray) -> bytes:
    """A CT slice (Hounsfield units through rescale)."""
    return dicom_bytes(pixels, sop_class=CTImageStorage, Modality="CT", ViewPosition=None,
                       RescaleSlope=1, RescaleIntercept=-1024)  # fmt: skip


def jpeg_lossless(img: np.ndarray, precision: int) -> bytes:
    """ITU T.81 process 14 (lossless, SOF3) of a gray (H, W) image: predictor 1 (the left
    neighbour; the one above in the first column; 2**(P-1) first), one Huffman table coding
    every difference category 0..16 in 5 bits, differences modulo 2**16 (T.81 H.1.2)."""
    x = img.astype(np.int64)
    h, w = x.shape
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:], pred[1:, 0], pred[1:, 1:] = x[0, :-1], x[:-1, 0], x[1:, :-1]
    diff = (x - pred) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff)  # -32767 .. 32768
    bits: list[str] = []
    for d in diff.ravel().tolist():
        s = abs(d).bit_length()
        bits.append(format(s, "05b"))
        if 0 < s < 16:  # category 16 (d = 32768) carries no extra bits
            bits.append(format(d if d > 0 else d + (1 << s) - 1, f"0{s}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # pad with 1-bits
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)  # byte stuffing
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5: symbol k has code k
    dht = bytes([0x00, *counts, *range(17)])
    sof = bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, predictor 1, Se 0, Al 0

    def seg(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    return b"\xff\xd8" + seg(0xC4, dht) + seg(0xC3, sof) + seg(0xDA, sos) + bytes(data) + \
        b"\xff\xd9"  # fmt: skip
