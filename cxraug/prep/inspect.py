"""File inspection for `cxraug collect` (runs in worker processes): hash, measure and fully
decode every candidate file, and compute the difference hash that finds near-duplicates.

One bad file never stops a batch: `inspect_file` returns its reason instead of raising. A DICOM
file also brings its facts (cxraug.core.dicom: modality, view, the salted patient hash) and the
collect rules' verdict on them (`cxraug.prep.sources.dicom_verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from cxraug.core.dicom import DicomFacts, NotAnImage, PatientKey
from cxraug.core.errors import ImageError
from cxraug.core.fsutil import sha256_bytes
from cxraug.core.imageheader import displayed_size, probe
from cxraug.core.images import (
    DEFAULT_MAX_FILE_MB,
    DEFAULT_MAX_MEGAPIXELS,
    decode_displayed,
    read_bytes,
)
from cxraug.core.parallel import run_parallel
from cxraug.prep.sources import dicom_verdict

IN_PROCESS_BELOW = 64  # files; below this a process pool costs more than it saves
#: A fast decode check keeps >= 2 x this many pixels per side (JPEG DCT reduction).
CHECK_SIDE = 64


@dataclass(frozen=True)
class FileCheck:
    """What inspecting one file found; `error` is the manifest reason when it is unusable."""

    sha256: str = ""
    width: int | None = None
    height: int | None = None
    error: str = ""
    dhash: bytes = b""  # 32 bytes: 16 rows x 16 left/right brightness comparisons
    excluded: bool = False  # `error` is why the file is left out by design, not a fault
    dicom: DicomFacts | None = None  # what a DICOM file's header says
    unexpected: str = ""  # the exception type when the decoder raised one (not an ImageError)


def difference_hash(gray: np.ndarray) -> bytes:
    """256-bit dHash of a (H, W) image: is each cell of a 16x17 area-mean grid brighter than its
    left neighbour. 64-bit dHash is too coarse for chest X-rays (all look alike at 8x9)."""
    g = cv2.resize(gray.astype(np.float32), (17, 16), interpolation=cv2.INTER_AREA)  # (16, 17)
    return np.packbits(g[:, 1:] > g[:, :-1]).tobytes()


def inspect_file(path: str | Path, fast_decode: bool = True,
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                 max_file_mb: float = DEFAULT_MAX_FILE_MB,
                 patient: PatientKey | None = None) -> FileCheck:  # fmt: skip
    """Hash, measure and fully decode one file; never raises (one bad file never stops a batch).
    `patient`: how a DICOM file's patient id is hashed."""
    try:
        data = read_bytes(Path(path), max_file_mb)
    except ImageError as e:
        return FileCheck(error=e.reason)
    sha = sha256_bytes(data)
    width = height = None
    try:
        width, height = displayed_size(probe(data))  # known even if decoding fails below
        d = decode_displayed(data, keep=CHECK_SIDE if fast_decode else None,
                             max_megapixels=max_megapixels, patient=patient)  # fmt: skip
        verdict = dicom_verdict(d.dicom) if d.dicom is not None else ""
        return FileCheck(sha, d.width, d.height, verdict, difference_hash(d.gray),
                         excluded=bool(verdict), dicom=d.dicom)  # fmt: skip
    except NotAnImage as e:
        return FileCheck(sha, width, height, e.reason, excluded=True)
    except ImageError as e:
        return FileCheck(sha, width, height, e.reason)
    except Exception as e:  # noqa: BLE001 - a decoder crash on one file is that file's error
        return FileCheck(sha, width, height, f"decoder failed ({type(e).__name__}: {e})",
                         unexpected=type(e).__name__)  # fmt: skip


def inspect_files(paths: list[Path], *, workers: int = 2, fast_decode: bool = True,
                  max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                  max_file_mb: float = DEFAULT_MAX_FILE_MB,
                  show_progress: bool = True,
                  patient: PatientKey | None = None) -> list[FileCheck]:  # fmt: skip
    """inspect_file over paths (same order), in `workers` processes, with a progress bar."""
    fn = partial(inspect_file, fast_decode=fast_decode, max_megapixels=max_megapixels,
                 max_file_mb=max_file_mb, patient=patient)
    return run_parallel(fn, [str(p) for p in paths], workers=workers,
                        what="inspecting images", show=show_progress,
                        serial_below=IN_PROCESS_BELOW, on_crash=_crashed)  # fmt: skip


def _crashed(path: str) -> FileCheck:
    """The check of a file whose worker process died (killed, e.g. out of memory)."""
    return FileCheck(error="the worker process died while reading this file (killed, e.g. out "
                     "of memory); check the file, or lower --workers")  # fmt: skip
