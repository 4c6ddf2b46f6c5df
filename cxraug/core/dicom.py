"""DICOM radiographs -> the gray [0, 1] pixels every other format gives (through pydicom).

`cxraug.core.images` hands this module the files whose bytes 128-131 read "DICM" (DICOM Part
10), so every reader of image files (collect's file check, preprocess, export, any source kind)
gets the same decode. The grey pipeline runs in the order PS3.4 Annex N gives and radiology
viewers apply:

    stored values      BitsStored respected (pydicom masks the unused high bits, e.g. overlay
                       planes, and sign-extends signed pixels; masked again here)
    -> Modality LUT    RescaleSlope/RescaleIntercept, or the first Modality LUT Sequence item
    -> VOI LUT         the first window (WindowCenter/WindowWidth with its VOILUTFunction:
                       LINEAR, LINEAR_EXACT or SIGMOID), else the first VOI LUT Sequence item,
                       else the whole range the stored bits map to (like a 16-bit PNG's rule);
                       `DicomFacts.voi` says which, and how many there were
    -> polarity        MONOCHROME1 or PresentationLUTShape INVERSE: inverted ONCE, so bone is
                       bright. A DX object states MONOCHROME1 *and* INVERSE for one inversion
                       (PS3.3 C.8.11.1.1: INVERSE "shall be used if MONOCHROME1"), never two.

Refused, with the reason stored in the manifest: objects without pixel data (structured reports,
presentation states: `NotAnImage`, which collect records as `excluded`), multi-frame and colour
objects (`NotAnImage`), compressed pixel data whose decoder is not installed (the message says
`pip install 'cxraug[dicom]'`), truncated or corrupt files. Whether a radiograph suits the task
(CT/MR modality, a lateral view) is the collect rules' decision (cxraug.prep.sources).

Privacy: no header value leaves this module except the facts in `DicomFacts`: the modality and
view (upper-case codes, sanitised), whether BurnedInAnnotation is YES, which VOI transform was
used, and the patient id as a salted HMAC (`patient_hash`; the salt lives in the workspace).
Reasons never quote pydicom's messages, which may echo header bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.core.errors import ImageError, InputError
from cxraug.core.fsutil import create_once

DICOM_EXTRA = "pip install 'cxraug[dicom]'"
#: Objects that are not images: structured reports, presentation states, key object notes...
_NON_IMAGE_MODALITIES = {"SR": "structured report (SR)", "PR": "presentation state (PR)",
                         "KO": "key object selection (KO)", "DOC": "document (DOC)"}  # fmt: skip


class NotAnImage(ImageError):
    """A readable DICOM object cxraug leaves out by design (no pixel data, several frames,
    colour): `collect` records it as `excluded`, not `error`."""


@dataclass(frozen=True)
class PatientKey:
    """How to turn a header into a patient id: which attribute, hashed with which salt."""

    salt: bytes
    tag: str = "PatientID"  # a keyword, or a tag written gggg,eeee


@dataclass(frozen=True)
class DicomFacts:
    """The only header-derived values that leave this module."""

    modality: str  # e.g. "DX", "CR" ("" when absent)
    view: str  # ViewPosition, e.g. "PA", "AP", "LL" ("" when absent)
    burned_in: bool  # BurnedInAnnotation == YES: text burned into the pixels
    voi: str  # the VOI transform applied, e.g. "window 1 of 3", "VOI LUT 1 of 1", "no VOI"
    patient: str = ""  # patient_hash of the PatientKey's attribute ("" = absent, or not asked)


def _pydicom() -> Any:
    """pydicom, imported on first use (about 0.4 s): `cxraug --help` and PNG-only runs skip it."""
    import pydicom

    return pydicom


def patient_hash(value: str, salt: bytes) -> str:
    """`dicom-` + 16 hex digits of HMAC-SHA256(salt, value): equal ids stay equal (the split
    keeps a patient on one side), the clear id cannot be recovered without the salt."""
    return "dicom-" + hmac.new(salt, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def load_salt(path: Path) -> bytes:
    """The workspace's salt if it has one, else a new random one (saved by `save_salt` once a
    DICOM patient id was hashed with it). Its value is never printed."""
    if not path.exists():
        return secrets.token_bytes(32)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise InputError(f"{path} is not a cxraug patient salt (64 hex digits); restore it from "
                         "a backup, or delete it to make a new one (a new salt gives every "
                         "DICOM patient a new hashed id at the next collect --force)")  # fmt: skip
    return bytes.fromhex(text)


def save_salt(path: Path, salt: bytes) -> None:
    """Store `salt` at `path` unless a salt is there already (created once, atomically,
    readable by the owner only); InputError if that one differs."""
    if create_once(path, salt.hex().encode("ascii") + b"\n").strip() != salt.hex().encode():
        raise InputError(f"{path} changed while collect ran; run collect again")


def parse_tag(text: str) -> Any:
    """A DICOM attribute named by keyword (`PatientID`, `OtherPatientIDs`) or as `gggg,eeee` /
    `(gggg,eeee)` -> pydicom's BaseTag; InputError saying how to write it otherwise."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    t = text.strip()
    m = re.fullmatch(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?", t)
    if m:
        return Tag(int(m.group(1), 16), int(m.group(2), 16))
    num = tag_for_keyword(t) if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", t) else None
    if num is None:
        raise InputError(f"--patient-tag {text!r} is not a DICOM attribute; give a keyword such "
                         "as PatientID or OtherPatientIDs, or a tag such as 0010,0020")  # fmt: skip
    return Tag(num)


def _cs(value: object) -> str:
    """A code string (Modality, ViewPosition...) reduced to what such a code may hold."""
    return re.sub(r"[^A-Z0-9 _]", "", str(value or "").upper()).strip()[:16]


def _read(data: bytes, header_only: bool) -> Any:
    try:
        with warnings.catch_warnings():  # pydicom warns about every oddity of real files
            warnings.simplefilter("ignore")
            return _pydicom().dcmread(io.BytesIO(data), stop_before_pixels=header_only)
    except Exception as e:  # noqa: BLE001 - any parse failure is this file's error
        raise ImageError(f"corrupt DICOM ({type(e).__name__} while reading the header)") from None


def header_size(data: bytes) -> tuple[int | None, int | None, int | None, int | None]:
    """(columns, rows, samples per pixel, bits stored) from the header, without the pixels:
    what `cxraug.core.imageheader.probe` needs to refuse a huge image in bounded memory."""
    ds = _read(data, header_only=True)
    vals = [ds.get(k) for k in ("Columns", "Rows", "SamplesPerPixel", "BitsStored")]
    return tuple(int(v) if isinstance(v, int) else None for v in vals)  # type: ignore[return-value]


def _refuse_non_images(ds: Any) -> None:
    modality = _cs(ds.get("Modality"))
    if "PixelData" not in ds:
        sop = str(getattr(ds.get("SOPClassUID"), "name", ""))
        kind = _NON_IMAGE_MODALITIES.get(modality) or next(
            (f"{k} object" for k in ("SR", "Presentation State", "Key Object") if k in sop), "")
        if kind:
            raise NotAnImage(f"not an image: a DICOM {kind}, without pixel data")
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise NotAnImage("floating-point DICOM pixel data (a parametric map), not a "
                             "radiograph")  # fmt: skip
        raise ImageError("truncated or incomplete DICOM: no pixel data after the header")
    frames = ds.get("NumberOfFrames")
    n = int(frames) if frames not in (None, "") else 1
    if n > 1:
        raise NotAnImage(f"multi-frame DICOM ({n} frames); cxraug reads single radiographs: "
                         "save the frame you want as a file of its own")  # fmt: skip
    pi = _cs(ds.get("PhotometricInterpretation"))
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or pi not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotAnImage(f"colour DICOM ({pi or 'photometric interpretation not stated'}); only "
                         "grey radiographs (MONOCHROME1/MONOCHROME2) are used")  # fmt: skip


def _stored_values(ds: Any) -> np.ndarray:
    """(H, W) int64 stored values with BitsStored respected."""
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import get_expected_length

    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is not None and ts.is_compressed:
        try:
            available = get_decoder(ts).is_available
        except NotImplementedError:
            raise ImageError(f"DICOM compressed as {ts.name}, which pydicom cannot decode; "
                             "re-save it uncompressed (e.g. dcmdjpeg)") from None  # fmt: skip
        if not available:
            raise ImageError(f"DICOM compressed as {ts.name}: its decoder is not installed; "
                             f"install the optional decoders: {DICOM_EXTRA}")  # fmt: skip
    else:
        have, want = len(ds.PixelData), get_expected_length(ds)
        if have < want:
            raise ImageError(f"truncated DICOM (pixel data {have} of {want} bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(ds.pixel_array)
    except Exception as e:  # noqa: BLE001 - a decoder failure on one file is its error
        raise ImageError(f"corrupt DICOM pixel data ({type(e).__name__} in the decoder)") from None
    bits = int(ds.BitsStored)
    arr = arr.astype(np.int64) & ((1 << bits) - 1)  # (H, W)
    if int(ds.get("PixelRepresentation", 0)) == 1:  # two's complement in `bits` bits
        arr = np.where(arr >= 1 << (bits - 1), arr - (1 << bits), arr)
    return arr


def _modality(stored: np.ndarray, ds: Any) -> tuple[np.ndarray, float, float]:
    """Modality LUT: (values, lo, hi) with [lo, hi] the range the stored bits map to."""
    from pydicom.pixels import apply_modality_lut

    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    smin, smax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if ds.get("ModalityLUTSequence"):
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return apply_modality_lut(stored, ds).astype(np.float64), 0.0, float(2**depth - 1)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    icpt = float(ds.get("RescaleIntercept", 0) or 0)
    lo, hi = sorted((smin * slope + icpt, smax * slope + icpt))
    return stored * slope + icpt, lo, hi


def window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2-3: a window of the modality values -> [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    # LINEAR: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 1; else linear between
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _first(value: Any) -> tuple[float, int]:
    """(first value, how many) of a DS element that may hold several (a MultiValue)."""
    vals = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return float(vals[0]), len(vals)


def _voi(values: np.ndarray, ds: Any, lo: float, hi: float) -> tuple[np.ndarray, str]:
    """VOI LUT: the values -> [0, 1], and which transform was used."""
    from pydicom.pixels import apply_voi

    luts = ds.get("VOILUTSequence") or []
    n_luts = f", {len(luts)} VOI LUT(s) not used" if luts else ""
    wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
    if wc not in (None, "") and ww not in (None, ""):
        (center, n), (width, _) = _first(wc), _first(ww)
        function = _cs(ds.get("VOILUTFunction") or "LINEAR").replace(" ", "_")
        if width >= 1.0 or (width > 0 and function != "LINEAR"):
            return window(values, center, width, function), f"window 1 of {n}{n_luts}"
    if luts:
        depth = int(luts[0].LUTDescriptor[2])
        out = apply_voi(np.rint(values).astype(np.int64), ds, 0)
        return out.astype(np.float64) / float(2**depth - 1), f"VOI LUT 1 of {len(luts)}"
    return (values - lo) / ((hi - lo) or 1.0), "no VOI (the stored bits' full range)"


def _patient(ds: Any, key: PatientKey | None) -> str:
    if key is None:
        return ""
    elem = ds.get(parse_tag(key.tag))
    value = "" if elem is None or elem.value is None else str(elem.value).strip()
    return patient_hash(value, key.salt) if value else ""


def decode(data: bytes, patient: PatientKey | None = None) -> tuple[np.ndarray, DicomFacts]:
    """A DICOM Part 10 file -> ((H, W) float32 gray in [0, 1], bone bright; its facts).
    Raises ImageError (NotAnImage for objects left out by design) with the manifest reason."""
    ds = _read(data, header_only=False)
    _refuse_non_images(ds)
    try:
        values, lo, hi = _modality(_stored_values(ds), ds)
        gray, voi = _voi(values, ds, lo, hi)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed LUT or value: this file's error, told
        # without pydicom's message (it may quote header values)
        raise ImageError(f"unusable DICOM grey transforms ({type(e).__name__}); check its "
                         "rescale, window and LUT attributes") from None
    inverse = _cs(ds.get("PresentationLUTShape")) == "INVERSE"
    if _cs(ds.PhotometricInterpretation) == "MONOCHROME1" or inverse:
        gray = 1.0 - gray
    facts = DicomFacts(modality=_cs(ds.get("Modality")), view=_cs(ds.get("ViewPosition")),
                       burned_in=_cs(ds.get("BurnedInAnnotation")) == "YES", voi=voi,
                       patient=_patient(ds, patient))  # fmt: skip
    return np.clip(gray, 0.0, 1.0).astype(np.float32), facts
