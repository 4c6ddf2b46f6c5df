"""Reading the manifest's images for `preprocess` and `--suggest-crops`, in parallel.

`load_image` reads one row's file, checks it still is the file `collect` saw (sha256, size),
decodes it through cxraug.images (with JPEG DCT scaling when the crop stays large enough) and
maps the row's crop box into the decoded image's pixels. `run_parallel` runs a per-row function
over worker processes in chunks, with a progress bar on stderr.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import cv2
import numpy as np

from cxraug.errors import ImageError, vassert
from cxraug.fsutil import sha256_bytes
from cxraug.images import DEFAULT_MAX_MEGAPIXELS, decode_gray, probe, read_bytes
from cxraug.manifest import Record, crop_box_problem
from cxraug.ui import progress
from cxraug.workspace import Workspace

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive
CHUNK = 16  # rows per worker task: amortises pickling, keeps the progress bar lively


@dataclass(frozen=True)
class LoadOptions:
    jpeg_reduce: bool = True  # decode big JPEGs at 1/2..1/8 scale when the crop stays >= 2x
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # refuse larger images from their header
    verify_sha256: bool = True  # a file whose bytes changed since `collect` is an error


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


def choose_reduce(crop_w: int, crop_h: int, size: int) -> int:
    """Largest JPEG DCT reduction k in (8, 4, 2) that leaves the crop >= 2*size per side."""
    for k in (8, 4, 2):
        if min(crop_w, crop_h) / k >= 2 * size:
            return k
    return 1


def load_image(task: ImageTask, opts: LoadOptions, target: int, use_crop: bool = True) -> Loaded:
    """Read, check and decode one row's file; `target` is the side the crop is resized to
    (reduction keeps >= 2x of it). Raises ImageError with the reason for the manifest."""
    data = read_bytes(Path(task.path))
    if opts.verify_sha256 and task.sha256 and sha256_bytes(data) != task.sha256:
        raise ImageError("file changed since collect (sha256 differs); re-run `cxraug collect`")
    info = probe(data)
    W, H = info.width, info.height
    if W is not None and H is not None and 5 <= info.orientation <= 8:
        W, H = H, W  # EXIF rotates by 90 degrees; the manifest stores the displayed size
    if W is not None and task.width is not None and (W, H) != (task.width, task.height):
        raise ImageError(
            f"image is now {W}x{H} but the manifest says {task.width}x{task.height}; "
            "re-run `cxraug collect`"
        )
    box = task.crop if use_crop else None
    k = 1
    if opts.jpeg_reduce and info.format == "JPEG" and W is not None and H is not None:
        cw, ch = (box[2] - box[0], box[3] - box[1]) if box else (W, H)
        k = choose_reduce(cw, ch, target)
    gray, _, applied = decode_gray(data, max_megapixels=opts.max_megapixels, reduce=k)
    h, w = gray.shape  # (h, w): ceil(H / k), ceil(W / k) when reduced
    if applied == 1 or W is None or H is None:
        W, H = w, h
    box = box or (0, 0, W, H)
    problem = crop_box_problem(box, W, H)
    if problem:
        raise ImageError(f"{problem}; fix the crop box")
    sx, sy = w / W, h / H
    x0, y0 = min(w - 1, round(box[0] * sx)), min(h - 1, round(box[1] * sy))
    x1, y1 = max(x0 + 1, min(w, round(box[2] * sx))), max(y0 + 1, min(h, round(box[3] * sy)))
    return Loaded(gray, (x0, y0, x1, y1), applied, W, H)


def tasks_for(ws: Workspace, rows: list[Record]) -> list[ImageTask]:
    return [
        ImageTask(i, r.id, str(r.resolve(ws.root)), r.crop, r.width, r.height, r.sha256)
        for i, r in enumerate(rows)
    ]


def usable_rows(ws: Workspace) -> list[Record]:
    """The manifest's real images that are usable (status ok, synthetic false), in file order."""
    rows = [r for r in ws.load_manifest().select(status="ok") if not r.synthetic]
    vassert(
        rows,
        f"{ws.manifest_path} has no usable real images (status ok, synthetic false); "
        "run `cxraug collect SOURCE...` first or fix the status column",
    )
    return rows


class _Indexed(Protocol):
    index: int


R = TypeVar("R", bound=_Indexed)


def _run_chunk(fn: Callable[[ImageTask], R], tasks: Sequence[ImageTask]) -> list[R]:
    return [fn(t) for t in tasks]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _mp_context() -> multiprocessing.context.BaseContext:
    """fork when it is safe, else spawn. A forked worker starts at once with everything this
    process imported (a spawned one re-imports numpy, OpenCV and the CLI: ~0.5-1 CPU-second
    each, a large share of a ~5 CPU-second job), but forking while other threads run can copy
    a held lock into the child: only fork while this is the only thread and TensorFlow (thread
    pools) is not loaded."""
    if (
        "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and "tensorflow" not in sys.modules
    ):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def run_parallel(
    fn: Callable[[ImageTask], R], tasks: list[ImageTask], workers: int, what: str, show: bool
) -> list[R]:
    """`fn` over `tasks` in `workers` processes, in chunks; results sorted by task index.

    `fn` must be picklable (a module-level function or a functools.partial of one)."""
    vassert(workers >= 1, "--workers must be at least 1")
    done: list[R] = []
    if workers == 1 or len(tasks) <= CHUNK:
        before = cv2.getNumThreads()
        _init_worker()  # same single-threaded OpenCV as a worker (fair 1-vs-N timing)
        try:
            with progress(disable=not show) as bar:
                tid = bar.add_task(what, total=len(tasks))
                for t in tasks:
                    done.append(fn(t))
                    bar.advance(tid)
        finally:
            cv2.setNumThreads(before)
        return done
    ex = ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_init_worker)
    try:
        ex.submit(int).result()  # start the workers now, before the progress bar's thread
        with progress(disable=not show) as bar:
            tid = bar.add_task(what, total=len(tasks))
            chunks = [tasks[i : i + CHUNK] for i in range(0, len(tasks), CHUNK)]
            futures = [ex.submit(_run_chunk, fn, c) for c in chunks]
            for f in as_completed(futures):
                part = f.result()
                done.extend(part)
                bar.advance(tid, len(part))
    finally:  # on Ctrl-C drop the queued chunks instead of finishing them
        ex.shutdown(wait=True, cancel_futures=True)
    return sorted(done, key=lambda d: d.index)
