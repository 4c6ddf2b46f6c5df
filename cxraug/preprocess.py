"""`cxraug preprocess`: manifest rows -> processed/dataset.npz (+ processed/config.json).

Per image (the paper's section "Resize Images" / "Image Cropping"):
    decode (cxraug.core.images: any format/bit depth, EXIF orientation) -> gray float [0, 1]
    -> manual crop box (original pixels, x1/y1 exclusive) -> resize to size x size
    -> x * 2 - 1, so pixels lie in [-1, 1] (the generator ends in tanh).

Resize policy (cxraug.prep.resize, shared with `export`): like the paper, the crop is resized
straight to size x size, so its aspect ratio is NOT kept (a 4:3 chest becomes slightly
narrower). `keep_aspect=True` instead scales the longest side to `size` and pads the rest with
black (-1), centred. The filter is cv2.INTER_AREA (pixel-area averaging: no aliasing when
shrinking) when both sides shrink, else INTER_CUBIC.

Huge JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (DCT scaling) when the crop
still has >= 2x the target size per side afterwards: the paper's 5623x4757 scans then cost a
fraction of the time and memory, and INTER_AREA does the remaining reduction. The target is
never below cxraug.prep.marks.DECODE_SIZE (224), so the mark detector sees the same pixels at
every --size up to it.

Each crop is also searched for burned-in editorial marks (cxraug.prep.marks: arrows, panel
letters, text, colour, frames), in the colour pixels of the same decode; the reasons go into
the manifest's `marks` cells (a person's verdict there stands) and the dataset's `marks` array,
which `train` uses to leave marked images out.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from cxraug import __version__
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.errors import ImageError, InputError
from cxraug.core.fsutil import atomic_write_json, preallocate, remove_stale_temps, sha256_file
from cxraug.core.images import max_file_mb_setting, max_megapixels_setting
from cxraug.core.manifest import LABELS, MARK_REASONS, SPLITS, Record, label_index
from cxraug.core.parallel import run_parallel
from cxraug.core.settings import WORKERS, Settings, setting
from cxraug.core.ui import warn
from cxraug.core.workspace import Workspace, manifest_writer
from cxraug.prep.contact_sheet import (
    SheetItem,
    check_sheet_target,
    make_thumb,
    render_contact_sheet,
)
from cxraug.prep.crops import SuggestResult, apply_crop_boxes, read_crop_boxes, suggest_crops
from cxraug.prep.loading import (
    Box,
    ImageTask,
    LoadOptions,
    load_image,
    refuse_own_failure,
    tasks_for,
    usable_rows,
)
from cxraug.prep.marks import DECODE_SIZE, DETECTOR_VERSION, detect_marks, record_marks
from cxraug.prep.resize import (
    jpeg_reduce_setting,
    keep_aspect_setting,
    preprocess_image,
    size_setting,
)

#: Config fields that change the output pixels: a dataset built with other values is stale.
OUTPUT_FIELDS: tuple[str, ...] = ("size", "keep_aspect", "jpeg_reduce")


@dataclass(frozen=True)
class PreprocessConfig(Settings):
    size: int = size_setting()
    keep_aspect: bool = keep_aspect_setting()
    jpeg_reduce: bool = jpeg_reduce_setting()
    # processes (the machine has 2 cores); 1 = run in this process
    workers: int = setting(2, "Processes that decode and resize images.", bounds=WORKERS)
    max_megapixels: float = max_megapixels_setting()
    max_file_mb: float = max_file_mb_setting()
    verify_sha256: bool = True  # a file whose bytes changed since `collect` is an error row

    def load_options(self, colour: bool = False) -> LoadOptions:
        """`colour`: keep a colour file's pixels for the mark detector (cxraug.prep.marks)."""
        return LoadOptions(self.jpeg_reduce, self.max_megapixels, self.verify_sha256,
                           self.max_file_mb, colour)


@dataclass
class _Done:
    index: int
    ok: bool = False  # the image was written to row `index` of the output file
    reason: str = ""
    reduced: int = 1
    thumb: tuple[np.ndarray, Box | None] | None = None
    marks: tuple[str, ...] = ()  # editorial marks found in the crop (cxraug.prep.marks)
    unexpected: str = ""  # the exception type when it was not an ImageError (a decoder bug?)


# Workers write their (S, S) results straight into a float32 file mapped by every process
# (np.memmap), not back through a pipe: pickling ~340 MB of pixels cost more than a second.
_OUTPUTS: dict[str, np.memmap] = {}


def _output(path: str, shape: tuple[int, int, int]) -> np.memmap:
    mm = _OUTPUTS.get(path)
    if mm is None:
        mm = _OUTPUTS[path] = np.memmap(path, np.float32, "r+", shape=shape)
    return mm


def _preprocess_one(
    task: ImageTask, config: PreprocessConfig, out: str, shape: tuple[int, int, int], thumbs: bool
) -> _Done:
    try:
        # decoded for the detector's sake no coarser than for DECODE_SIZE (cxraug.prep.marks)
        im = load_image(task, config.load_options(colour=True), max(config.size, DECODE_SIZE))
        # on the crop: what training will see
        marks = tuple(detect_marks(*im.region(), burned_in=im.burned_in))
    except ImageError as e:
        return _Done(task.index, reason=e.reason)
    except Exception as e:  # a decoder bug on one odd file must not abort the whole batch
        return _Done(task.index, reason=f"unexpected {type(e).__name__} while decoding: {e}",
                     unexpected=type(e).__name__)  # fmt: skip
    _output(out, shape)[task.index] = preprocess_image(
        im.gray, im.crop, config.size, config.keep_aspect
    )
    thumb = make_thumb(im.gray, im.crop) if thumbs else None
    return _Done(task.index, True, reduced=im.reduced, thumb=thumb, marks=marks)


#: The scratch array of _run_images (tempfile.mkstemp's 8 random characters).
_SCRATCH = re.compile(r"^\.images-[a-z0-9_]{8}\.f32$")


def _remove_leftovers(ws: Workspace) -> None:
    """A preprocess killed mid-run leaves its scratch array (as large as the dataset) and maybe
    a temp dataset file in processed/; only preprocess writes there, so they are garbage."""
    stale = remove_stale_temps(ws.processed_dir)
    if ws.processed_dir.is_dir():
        for p in ws.processed_dir.iterdir():
            if _SCRATCH.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                stale.append(p)
    if stale:
        warn(f"removed {len(stale)} temp file(s) an interrupted preprocess left in "
             f"{ws.processed_dir}")  # fmt: skip


def _crashed(task: ImageTask) -> _Done:
    return _Done(task.index, reason="the worker process died while reading this image (killed, "
                 "e.g. out of memory); check the file, or lower --workers")  # fmt: skip


def _run_images(
    ws: Workspace, rows: list[Record], config: PreprocessConfig, thumbs: bool, show: bool
) -> tuple[np.ndarray, list[_Done]]:
    """Preprocess every row: ((N_ok, S, S) float32 of the rows that worked, in row order;
    per-row results)."""
    shape = (len(rows), config.size, config.size)
    ws.processed_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".images-", suffix=".f32", dir=ws.processed_dir)
    os.close(fd)
    try:
        # real blocks, not a sparse file: a full disk is then an OSError here (exit 6), not a
        # SIGBUS in every worker that would turn each row into an `error`
        preallocate(Path(tmp), int(np.prod(shape)) * 4)
        fn = partial(_preprocess_one, config=config, out=tmp, shape=shape, thumbs=thumbs)
        done = run_parallel(fn, tasks_for(ws, rows), workers=config.workers, what="preprocess",
                            show=show, on_crash=_crashed)  # fmt: skip
        _OUTPUTS.pop(tmp, None)  # drop this process's own mapping (in-process runs)
        ok = [d.index for d in done if d.ok]
        images = np.array(np.memmap(tmp, np.float32, "r", shape=shape)[ok])  # (N_ok, S, S)
    finally:
        _OUTPUTS.pop(tmp, None)
        os.unlink(tmp)
    return images, done


# ---- preprocess ---------------------------------------------------------------------------


@dataclass
class PreprocessResult:
    dataset_path: Path
    config_path: Path
    n_images: int
    counts: dict[str, dict[str, int]]  # split -> label -> images
    errors: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    crop_boxes_applied: int = 0
    reduced: int = 0  # images decoded with JPEG DCT scaling
    seconds: float = 0.0
    up_to_date: bool = False
    contact_sheets: list[Path] = field(default_factory=list)
    marked: int = 0  # images whose `marks` cell leaves them out of training
    marks: dict[str, int] = field(default_factory=dict)  # reason -> images the detector found

    @property
    def images_per_s(self) -> float:
        return (self.n_images + len(self.errors)) / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            dataset_path=str(self.dataset_path),
            config_path=str(self.config_path),
            errors=[{"id": i, "reason": r} for i, r in self.errors],
            contact_sheets=[str(p) for p in self.contact_sheets],
            images_per_s=round(self.images_per_s, 2),
            seconds=round(self.seconds, 3),
        )
        return d


def _check_existing(ws: Workspace, config: PreprocessConfig, force: bool) -> dict[str, Any] | None:
    """The previous config.json when its dataset exists and may be reused; raises if it
    was built with different output settings (unless force)."""
    if force or not ws.dataset_path.exists():
        return None
    try:
        old = json.loads(ws.dataset_config_path.read_text(encoding="utf-8"))
        old_cfg = {k: old["config"][k] for k in OUTPUT_FIELDS}
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"{ws.dataset_path} exists but {ws.dataset_config_path} is missing or "
            "unreadable, so it cannot be checked; pass --force to rebuild it"
        ) from None
    new_cfg = {k: getattr(config, k) for k in OUTPUT_FIELDS}
    if old_cfg != new_cfg:
        diff = ", ".join(
            f"{k} {old_cfg[k]} -> {new_cfg[k]}" for k in OUTPUT_FIELDS if old_cfg[k] != new_cfg[k]
        )
        raise InputError(
            f"{ws.dataset_path} was built with other settings ({diff}); "
            "pass --force to overwrite it"
        )
    return old


@manifest_writer("cxraug preprocess")
def preprocess(
    ws: Workspace,
    config: PreprocessConfig,
    crop_boxes: Path | None = None,
    *,
    force: bool = False,
    contact_sheet: Path | None = None,
    show_progress: bool = True,
) -> PreprocessResult:
    """Build processed/dataset.npz from the manifest's usable real rows, holding the workspace
    lock (another manifest writer running: exit 7).

    Same output settings and an unchanged manifest -> nothing is rebuilt (`up_to_date`), unless
    a contact sheet is asked for. Unreadable images become `error` rows in the manifest."""
    check_sheet_target(contact_sheet, force)  # before any work: refuse, change nothing
    _remove_leftovers(ws)
    old = _check_existing(ws, config, force)
    applied = _apply_boxes(ws, crop_boxes)
    rows = usable_rows(ws, retry_errors=force)  # --force reads earlier error rows again
    result = PreprocessResult(ws.dataset_path, ws.dataset_config_path, 0, {},
                              crop_boxes_applied=applied)  # fmt: skip
    if old is not None and contact_sheet is None and _reuse(ws, old, result):
        return result

    t0 = time.perf_counter()
    images, done = _run_images(ws, rows, config, contact_sheet is not None, show_progress)
    result.seconds = time.perf_counter() - t0

    refuse_own_failure([(d.unexpected, d.reason) for d in done], "preprocess")
    good = [d for d in done if d.ok]
    result.errors = [(rows[d.index].id, d.reason) for d in done if not d.ok]
    result.reduced = sum(d.reduced > 1 for d in good)
    cells = _record(ws, result.errors, {rows[d.index].id: d.marks for d in good})
    if contact_sheet is not None:
        items = [SheetItem(rows[d.index].id, *d.thumb, marks=cells[rows[d.index].id])
                 for d in good if d.thumb is not None]  # fmt: skip
        result.contact_sheets = render_contact_sheet(items, contact_sheet)
    if not good:
        raise InputError(
            f"none of the {len(rows)} usable images could be read; their reasons "
            f"are in {ws.manifest_path} (status error)"
        )
    sel = [rows[d.index] for d in good]
    ds = Dataset(
        images,  # (N, S, S): the good rows, in manifest order
        np.array([label_index(r.label) for r in sel], np.int64),
        np.array([r.id for r in sel]),
        np.array([r.split for r in sel]),
        marks=np.array([cells[r.id] for r in sel], dtype=str),
    )
    _count(result, ds, good)
    _save(ws, ds, config, crop_boxes, result)
    return result


def _apply_boxes(ws: Workspace, crop_boxes: Path | None) -> int:
    """Save the valid boxes of a --crop-boxes file into the manifest; how many changed."""
    if crop_boxes is None:
        return 0
    manifest = ws.load_manifest()
    applied = apply_crop_boxes(manifest, read_crop_boxes(crop_boxes, manifest, ws.root))
    if applied:
        ws.save_manifest(manifest)
    return applied


def _reuse(ws: Workspace, old: dict[str, Any], result: PreprocessResult) -> bool:
    """Is the existing dataset up to date (same manifest, same mark detector)? Then `result`
    gets its counts from the old config.json."""
    if (old.get("manifest_sha256") != sha256_file(ws.manifest_path)
            or old.get("marks_detector") != DETECTOR_VERSION):  # fmt: skip
        return False
    result.n_images, result.counts = int(old["n_images"]), old["counts"]
    result.marked, result.marks = int(old.get("marked", 0)), old.get("marks", {})
    result.up_to_date = True
    return True


def _count(result: PreprocessResult, ds: Dataset, good: list[_Done]) -> None:
    """Images per split x class, and the marked images, into `result`."""
    result.n_images = len(ds)
    result.counts = {  # `external` (test-only sources) listed only when there are such rows
        s: {c: int(((ds.splits == s) & (ds.labels == i)).sum()) for i, c in enumerate(LABELS)}
        for s in SPLITS
        if s != "external" or (ds.splits == s).any()
    }
    result.marked = int(ds.marked().sum())
    result.marks = {m: sum(m in d.marks for d in good) for m in MARK_REASONS}


def _save(ws: Workspace, ds: Dataset, config: PreprocessConfig, crop_boxes: Path | None,
          result: PreprocessResult) -> None:  # fmt: skip
    """processed/dataset.npz, then the config.json that pairs it with the manifest."""
    ws.dataset_config_path.unlink(missing_ok=True)  # a crash below must not leave a stale pairing
    save_dataset(ws.dataset_path, ds)
    atomic_write_json(
        ws.dataset_config_path,
        {
            "config": asdict(config),
            "output_fields": list(OUTPUT_FIELDS),
            "manifest_sha256": sha256_file(ws.manifest_path),
            "dataset_sha256": sha256_file(ws.dataset_path),
            "crop_boxes_file": str(crop_boxes) if crop_boxes else None,
            "n_images": result.n_images,
            "counts": result.counts,
            "errors": [{"id": i, "reason": r} for i, r in result.errors],
            "marks_detector": DETECTOR_VERSION,
            "marked": result.marked,
            "marks": result.marks,
            "cxraug_version": __version__,
        },
    )


def suggest(ws: Workspace, config: PreprocessConfig, out: Path, *,
            contact_sheet: Path | None = None, force: bool = False,
            show_progress: bool = True) -> SuggestResult:  # fmt: skip
    """`preprocess --suggest-crops`: an automatic chest box per usable image, written to `out`
    for review (cxraug.prep.crops.suggest_crops); builds no dataset, leaves the manifest as
    it is."""
    return suggest_crops(ws, out, opts=config.load_options(), workers=config.workers,
                         contact_sheet=contact_sheet, force=force,
                         show_progress=show_progress)  # fmt: skip


def _record(ws: Workspace, errors: list[tuple[str, str]],
            found: dict[str, tuple[str, ...]]) -> dict[str, str]:  # fmt: skip
    """Write the failures (status error), the error rows that now read (ok) and the marks found
    into the manifest, atomically and only when something changed; returns each read image's
    `marks` cell as it now reads (the detector's reasons, or a person's verdict that stands)."""
    manifest = ws.load_manifest()
    by_id = manifest.by_id()
    for rid, reason in errors:  # record them so the next stages (and the user) see why
        by_id[rid].set_status("error", reason)
    fixed = [by_id[rid] for rid in found if by_id[rid].status == "error"]  # read again: fine
    for rec in fixed:
        rec.set_status("ok")
    if record_marks(manifest, found) or errors or fixed:
        ws.save_manifest(manifest)
    return {rid: by_id[rid].marks for rid in found}


def summary_table(result: PreprocessResult) -> Table:
    """Images per class x split (rich table for the terminal)."""
    t = Table(title="images per split x class", show_footer=True)
    t.add_column("split", footer="all")
    for c in LABELS:
        t.add_column(
            c, justify="right", footer=str(sum(result.counts.get(s, {}).get(c, 0) for s in SPLITS))
        )
    t.add_column("all", justify="right", footer=str(result.n_images))
    for s in (s for s in SPLITS if s in result.counts or s != "external"):
        row = result.counts.get(s, {})
        t.add_row(s, *(str(row.get(c, 0)) for c in LABELS), str(sum(row.values())))
    return t
