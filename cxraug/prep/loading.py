"""Reading the manifest's images for `preprocess` and `--suggest-crops`, in parallel.

`load_image` reads one row's file, checks it still is the file `collect` saw (sha256, size),
decodes it through `cxraug.core.images.decode_displayed` (with JPEG DCT scaling when the crop
stays large enough) and maps the row's crop box into the decoded image's pixels. The callers run
it over worker processes with `cxraug.core.parallel.run_parallel`, the one process pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.core.errors import ImageError, InputError, vassert
from cxraug.core.fsutil import sha256_bytes
from cxraug.core.images import (
    DEFAULT_MAX_FILE_MB,
    DEFAULT_MAX_MEGAPIXELS,
    Box,
    decode_displayed,
    read_bytes,
)
from cxraug.core.manifest import Record, crop_box_problem
from cxraug.core.workspace import Workspace


@dataclass(frozen=True)
class LoadOptions:
    jpeg_reduce: bool = True  # decode big JPEGs at 1/2..1/8 scale when the crop stays >= 2x
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # refuse larger images from their header
    verify_sha256: bool = True  # a file whose bytes changed since `collect` is an error
    max_file_mb: float = DEFAULT_MAX_FILE_MB  # refuse larger files before reading them
    colour: bool = False  # keep a colour file's BGR pixels (Loaded.colour) for mark detection


@dataclass(frozen=True)
class ImageTask:
    """What a worker needs from one manifest row (picklable, no Record)."""

    index: int
    id: str
    path: str  # absolute
    crop: Box | None
    width: int | None  # from the manifest (after EXIF orientation)
    height: int | None
    sha256: str


@dataclass(frozen=True)
class Loaded:
    gray: np.ndarray  # (h, w) float32 in [0, 1], maybe DCT-reduced
    crop: Box  # the row's crop (or the whole image) in `gray`'s pixels
    reduced: int  # JPEG reduction applied (1 = none)
    width: int  # original size after orientation
    height: int
    colour: np.ndarray | None = None  # (h, w, 3) BGR of a colour file, with opts.colour
    burned_in: bool = False  # a DICOM header says BurnedInAnnotation YES

    def region(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The crop of `gray` (h', w') and of `colour` (h', w', 3) or None."""
        x0, y0, x1, y1 = self.crop
        c = self.colour[y0:y1, x0:x1] if self.colour is not None else None
        return self.gray[y0:y1, x0:x1], c


def load_image(task: ImageTask, opts: LoadOptions, target: int, use_crop: bool = True) -> Loaded:
    """Read, check and decode one row's file; `target` is the side the crop is resized to
    (reduction keeps >= 2x of it). Raises ImageError with the reason for the manifest."""
    data = read_bytes(Path(task.path), opts.max_file_mb)
    if opts.verify_sha256 and task.sha256 and sha256_bytes(data) != task.sha256:
        raise ImageError("file changed since collect (sha256 differs); re-run `cxraug collect`")
    box = task.crop if use_crop else None
    d = decode_displayed(data, keep=target if opts.jpeg_reduce else None, crop=box,
                         max_megapixels=opts.max_megapixels, colour=opts.colour)  # fmt: skip
    W, H = d.width, d.height
    if task.width is not None and (W, H) != (task.width, task.height):
        raise ImageError(
            f"image is now {W}x{H} but the manifest says {task.width}x{task.height}; "
            "re-run `cxraug collect`"
        )
    gray, applied = d.gray, d.reduced
    h, w = gray.shape  # (h, w): ceil(H / k), ceil(W / k) when reduced
    if applied == 1:
        W, H = w, h
    box = box or (0, 0, W, H)
    problem = crop_box_problem(box, W, H)
    if problem:
        raise ImageError(f"{problem}; fix the crop box")
    sx, sy = w / W, h / H
    x0, y0 = min(w - 1, round(box[0] * sx)), min(h - 1, round(box[1] * sy))
    x1, y1 = max(x0 + 1, min(w, round(box[2] * sx))), max(y0 + 1, min(h, round(box[3] * sy)))
    return Loaded(gray, (x0, y0, x1, y1), applied, W, H, d.colour,
                  d.dicom is not None and d.dicom.burned_in)  # fmt: skip


def tasks_for(ws: Workspace, rows: list[Record]) -> list[ImageTask]:
    return [
        ImageTask(i, r.id, str(r.resolve(ws.root)), r.crop, r.width, r.height, r.sha256)
        for i, r in enumerate(rows)
    ]


def usable_rows(ws: Workspace, retry_errors: bool = False) -> list[Record]:
    """The manifest's real images that are usable (status ok, synthetic false), in file order;
    with `retry_errors` also the `error` rows that collect had accepted (they hold a label and
    a split, which collect gives only to usable files), so a file that was briefly unreadable
    is read again (`preprocess --force`)."""
    rows = [r for r in ws.load_manifest() if not r.synthetic and (r.status == "ok" or (
        retry_errors and r.status == "error" and r.label and r.split))]  # fmt: skip
    vassert(
        rows,
        f"{ws.manifest_path} has no usable real images (status ok, synthetic false); "
        "run `cxraug collect SOURCE...` first or fix the status column",
    )
    return rows


def refuse_own_failure(failures: list[tuple[str, str]], command: str) -> None:
    """`failures`: (unexpected exception type or "", reason) of every row processed. One odd
    file that crashes a decoder is that row's `error`; EVERY row failing with the same
    unexpected exception is not the files' fault but the command's (an option value, a bug):
    InputError, raised before any status is written, so the manifest stays as it was."""
    kinds = {kind for kind, _ in failures}
    if len(failures) >= 2 and len(kinds) == 1 and "" not in kinds:
        raise InputError(f"every one of the {len(failures)} images failed the same way "
                         f"({failures[0][1]}): that is a fault of `cxraug {command}` or its "
                         "options, not of your files, so no status was written to the "
                         f"manifest; check the options (`cxraug {command} --help`), and report "
                         "it if they are right")  # fmt: skip
