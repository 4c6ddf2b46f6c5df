"""Crop boxes: the `--crop-boxes` CSV file and automatic chest-box suggestions
(`--suggest-crops`; the review sheet is drawn by cxraug.prep.contact_sheet).

The paper crops every X-ray to the chest by hand. cxraug keeps a crop box per manifest row
(`crop_x0..crop_y1`, original pixel coordinates after EXIF orientation, x1/y1 exclusive). A
boxes file lets a person set many at once:

    id,x0,y0,x1,y1        (or `path` instead of `id`; extra columns such as `note` are ignored)
    cohen/images/x.jpeg,40,12,600,590

`--suggest-crops` writes such a file with an automatic guess per image, plus a contact sheet to
review the guesses at a glance; the person fixes the bad rows and feeds the file back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxraug.core.csvfile import csv_rows, dict_reader, read_text, write_rows
from cxraug.core.errors import CropBoxError, ImageError, InputError
from cxraug.core.fsutil import atomic_write_text
from cxraug.core.manifest import (
    Manifest,
    Record,
    crop_box_problem,
    problems_message,
    whole_number,
)
from cxraug.core.parallel import run_parallel
from cxraug.core.workspace import Workspace
from cxraug.prep.contact_sheet import (
    SheetItem,
    check_sheet_target,
    make_thumb,
    render_contact_sheet,
)
from cxraug.prep.loading import (
    Box,
    ImageTask,
    LoadOptions,
    load_image,
    tasks_for,
    usable_rows,
)

BOX_COLUMNS: tuple[str, ...] = ("x0", "y0", "x1", "y1")
FALLBACK = "fallback: full image"


# ---- the boxes file -----------------------------------------------------------------------


def read_crop_boxes(path: Path, manifest: Manifest, root: Path) -> dict[str, Box]:
    """Parse and validate a boxes file against the manifest: {record id: box}.

    Every bad row is reported at once (row numbers as a spreadsheet shows them, header = 1);
    any problem raises CropBoxError and nothing is returned, so nothing gets half-applied.
    A row is keyed by `id` when that column exists and the cell is filled, else by `path`
    (as written in the manifest, or the same file by absolute/workspace-relative path).
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise CropBoxError(f"no crop-boxes file at {path}; check the --crop-boxes path")
    reader = dict_reader(read_text(path, CropBoxError), name, CropBoxError)
    header = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in BOX_COLUMNS if c not in header]
    if "id" not in header and "path" not in header:
        missing.insert(0, "id (or path)")
    if missing:
        raise CropBoxError(
            f"{name}: missing column(s) {', '.join(missing)}; the header must be "
            "id,x0,y0,x1,y1 (or path,x0,y0,x1,y1) in original pixel coordinates"
        )
    by_id = manifest.by_id()
    by_path: dict[str, Record] = {}
    for r in manifest:
        by_path.setdefault(r.path, r)
        by_path.setdefault(str(r.resolve(root).resolve()), r)

    errors: list[str] = []
    boxes: dict[str, Box] = {}
    seen: dict[str, int] = {}
    for line, where, row in csv_rows(reader, name, errors, CropBoxError):
        cells = {k: (v or "").strip() for k, v in row.items()}
        if not any(cells.values()):
            continue  # blank line
        rec = _lookup(cells, by_id, by_path, root, where, errors)
        coords = [_whole(cells.get(c, ""), c, where, errors) for c in BOX_COLUMNS]
        if rec is None or None in coords:
            continue
        box: Box = tuple(coords)  # type: ignore[assignment]
        if rec.id in seen:
            errors.append(
                f"{where}: {rec.id!r} already has a box in row {seen[rec.id]}; "
                "keep one row per image"
            )
            continue
        seen[rec.id] = line
        problem = crop_box_problem(box, rec.width, rec.height)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        boxes[rec.id] = box
    if errors:
        raise CropBoxError(problems_message(name, errors, "; nothing was changed"))
    if not boxes:
        raise CropBoxError(f"{name} has no box rows; add lines like `ID,x0,y0,x1,y1`")
    return boxes


def _lookup(
    cells: dict[str, str],
    by_id: dict[str, Record],
    by_path: dict[str, Record],
    root: Path,
    where: str,
    errors: list[str],
) -> Record | None:
    if cells.get("id"):
        rec = by_id.get(cells["id"])
        if rec is None:
            errors.append(
                f"{where}: id {cells['id']!r} is not in the manifest (ids are "
                "`<source>/<relative path>`, see manifest.csv)"
            )
        return rec
    p = cells.get("path", "")
    if not p:
        errors.append(f"{where}: neither id nor path is given")
        return None
    rec = by_path.get(p)
    if rec is None:
        full = Path(p) if Path(p).is_absolute() else root / p
        rec = by_path.get(str(full.resolve()))
    if rec is None:
        errors.append(
            f"{where}: path {p!r} is not in the manifest (use the manifest's path "
            "column, or the id column)"
        )
    return rec


def _whole(value: str, column: str, where: str, errors: list[str]) -> int | None:
    if value.lower() in ("nan", "-nan", "+nan"):  # whole_number reads it as empty (pandas)
        errors.append(f"{where}: {column} is {value!r}, not a number; give a whole number of "
                      "pixels, or delete the row to leave that image uncropped")  # fmt: skip
        return None
    try:
        v = whole_number(value)
    except ValueError:
        errors.append(f"{where}: {column} ({value!r}) is not a whole number of pixels")
        return None
    if v is None:
        errors.append(f"{where}: {column} is empty; give all of x0, y0, x1, y1")
    return v


def apply_crop_boxes(manifest: Manifest, boxes: dict[str, Box]) -> int:
    """Write validated boxes into the records' crop columns; returns how many changed."""
    changed = 0
    for rec in manifest:
        box = boxes.get(rec.id)
        if box is not None and rec.crop != box:
            rec.crop = box
            changed += 1
    return changed


@dataclass(frozen=True)
class SuggestedBox:
    id: str
    path: str
    box: Box
    note: str


def write_crop_boxes(path: Path, rows: list[SuggestedBox]) -> None:
    """The suggestions file, which `read_crop_boxes` reads back cell for cell."""
    body = ((r.id, r.path, *map(str, r.box), r.note) for r in rows)
    atomic_write_text(Path(path), write_rows(["id", "path", *BOX_COLUMNS, "note"], body))


# ---- automatic suggestion -----------------------------------------------------------------


def _content_box(u8: np.ndarray) -> Box:
    """Drop uniform edge rows/columns (figure frames, black padding): (x0, y0, x1, y1)."""
    h, w = u8.shape
    row_live = u8.std(axis=1) > 2.0  # (h,)
    col_live = u8.std(axis=0) > 2.0  # (w,)
    if row_live.sum() < h // 4 or col_live.sum() < w // 4:
        return 0, 0, w, h
    ys, xs = np.flatnonzero(row_live), np.flatnonzero(col_live)
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


MIN_BOX_SHARE = 0.3  # a body box smaller than this share of the content is not believed


def _bright_box(region: np.ndarray, thr: float) -> tuple[Box, float] | None:
    """Bounding box of the large components brighter than `thr` after erasing thin strokes
    (letters, arrows, rulers) with an opening ~3% of the side; (box, share of region) or None."""
    k = max(3, round(0.03 * min(region.shape))) | 1  # odd kernel
    mask = cv2.morphologyEx(
        (region > thr).astype(np.uint8),
        cv2.MORPH_OPEN,
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)),
    )
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    if areas.max() < 0.05 * region.size:
        return None
    keep = stats[1:][areas >= 0.1 * areas.max()]  # both halves of a body split by the spine
    x0, y0 = int(keep[:, cv2.CC_STAT_LEFT].min()), int(keep[:, cv2.CC_STAT_TOP].min())
    x1 = int((keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max())
    y1 = int((keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max())
    return (x0, y0, x1, y1), (x1 - x0) * (y1 - y0) / region.size


def suggest_box(gray01: np.ndarray, pad: float = 0.05, work_side: int = 256) -> tuple[Box, str]:
    """Guess the chest's bounding box in a (H, W) [0, 1] image; returns (box, note).

    Downscale to `work_side`, trim uniform borders (figure frames, padding), threshold the
    blurred image at half Otsu's level (body vs. dark air around it), keep the large
    components without thin strokes (letters, arrows), take their bounding box and pad it by
    `pad` of its size. Half, not full Otsu: on portable AP films with a bright abdomen Otsu's
    level keeps only the lower half and cuts the lung apices, and a too-large box is the
    lesser harm. A box under MIN_BOX_SHARE of the content is retried at Otsu's level, then
    the full image is returned with a "fallback" note. A person reviews the boxes on a sheet.
    """
    H, W = gray01.shape
    s = min(1.0, work_side / max(H, W))
    size = (max(1, round(W * s)), max(1, round(H * s)))
    small = cv2.resize(gray01, size, interpolation=cv2.INTER_AREA) if s < 1 else gray01
    u8 = np.clip(np.rint(small * 255), 0, 255).astype(np.uint8)  # (h, w)
    h, w = u8.shape
    cx0, cy0, cx1, cy1 = _content_box(u8)
    region = cv2.GaussianBlur(u8[cy0:cy1, cx0:cx1], (5, 5), 0)
    otsu, _ = cv2.threshold(region, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    found: tuple[Box, float] | None = None
    how = ""
    for thr, label in ((otsu / 2, "body region"), (otsu, "bright region")):
        found = _bright_box(region, thr)
        if found is not None and found[1] >= MIN_BOX_SHARE:
            how = label
            break
    full: Box = (0, 0, W, H)
    if found is None or not how:
        return full, FALLBACK + " (no clear body outline)"
    x0, y0, x1, y1 = found[0]
    px, py = pad * (x1 - x0), pad * (y1 - y0)
    # back to the small image, then to original pixels (floor/ceil: never shrink the box)
    bx0, by0 = max(0.0, cx0 + x0 - px), max(0.0, cy0 + y0 - py)
    bx1, by1 = min(float(w), cx0 + x1 + px), min(float(h), cy0 + y1 + py)
    box = (
        int(math.floor(bx0 / s)),
        int(math.floor(by0 / s)),
        min(W, int(math.ceil(bx1 / s))),
        min(H, int(math.ceil(by1 / s))),
    )
    if crop_box_problem(box, W, H):
        return full, FALLBACK + " (region too small)"
    frac = (box[2] - box[0]) * (box[3] - box[1]) / (W * H)
    return box, f"auto: {how}, {pad:.0%} pad ({frac:.0%} of image)"


# ---- `preprocess --suggest-crops` ---------------------------------------------------------

SUGGEST_SIDE = 256  # suggestions are computed on ~256 px images; JPEGs are decoded >= 2x that


@dataclass
class _Suggested:
    index: int
    box: Box | None = None  # original pixels; None = the image failed
    note: str = ""
    reason: str = ""
    thumb: tuple[np.ndarray, Box | None] | None = None


def _suggest_one(task: ImageTask, opts: LoadOptions) -> _Suggested:
    try:
        im = load_image(task, opts, SUGGEST_SIDE, use_crop=False)
    except ImageError as e:
        return _Suggested(task.index, reason=e.reason)
    box, note = suggest_box(im.gray, work_side=SUGGEST_SIDE)  # in the decoded image's pixels
    h, w = im.gray.shape
    sx, sy = im.width / w, im.height / h
    orig = (
        math.floor(box[0] * sx),
        math.floor(box[1] * sy),
        min(im.width, math.ceil(box[2] * sx)),
        min(im.height, math.ceil(box[3] * sy)),
    )
    return _Suggested(task.index, orig, note, thumb=make_thumb(im.gray, box))


@dataclass
class SuggestResult:
    boxes_path: Path
    n_boxes: int
    n_fallback: int
    errors: list[tuple[str, str]]  # (id, reason) of images that could not be read
    contact_sheets: list[Path]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "boxes_path": str(self.boxes_path),
            "n_boxes": self.n_boxes,
            "n_fallback": self.n_fallback,
            "seconds": round(self.seconds, 3),
            "errors": [{"id": i, "reason": r} for i, r in self.errors],
            "contact_sheets": [str(p) for p in self.contact_sheets],
        }


def suggest_crops(
    ws: Workspace,
    out: Path,
    *,
    opts: LoadOptions = LoadOptions(),
    workers: int = 2,
    contact_sheet: Path | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> SuggestResult:
    """Write an automatic chest box per usable image to `out` for a person to review (plus a
    contact sheet). Builds no dataset and leaves the manifest untouched: unreadable images are
    only reported (`preprocess` records them)."""
    out = Path(out)
    if out.exists() and not force:
        raise InputError(
            f"{out} already exists (maybe with your edits); pass --force to overwrite it "
            "or choose another file name"
        )
    check_sheet_target(contact_sheet, force)
    rows = usable_rows(ws)
    t0 = time.perf_counter()
    fn = partial(_suggest_one, opts=opts)
    done = run_parallel(fn, tasks_for(ws, rows), workers=workers, what="suggest crops",
                        show=show_progress)
    good = [(rows[d.index], d) for d in done if d.box is not None]
    write_crop_boxes(
        out, [SuggestedBox(r.id, r.path, d.box, d.note) for r, d in good if d.box is not None]
    )
    sheets: list[Path] = []
    if contact_sheet is not None:
        items = [
            SheetItem(r.id, d.thumb[0], d.thumb[1], d.note.startswith(FALLBACK))
            for r, d in good
            if d.thumb is not None
        ]
        sheets = render_contact_sheet(items, contact_sheet)
    return SuggestResult(
        out,
        len(good),
        sum(d.note.startswith(FALLBACK) for _, d in good),
        [(rows[d.index].id, d.reason) for d in done if d.box is None],
        sheets,
        time.perf_counter() - t0,
    )
