"""Contact sheets: a grid of thumbnails with each image's crop box drawn and its id printed,
so that a person can check hundreds of crop boxes at a glance (`--contact-sheet`). An image
with editorial marks (its manifest `marks` cell, cxraug.prep.marks) gets a magenta frame
round its cell and the cell's text printed on the thumbnail."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cxraug.core.errors import InputError
from cxraug.core.images import Box, write_png_rgb
from cxraug.core.manifest import is_marked

MARK_COLOUR = (255, 0, 255)  # RGB: magenta is not a colour of a gray radiograph or of a box


@dataclass
class SheetItem:
    id: str
    thumb: np.ndarray  # (h, w) uint8, longest side <= the sheet's cell
    box: Box | None  # in thumbnail pixels; None = no box drawn
    fallback: bool = False
    marks: str = ""  # the manifest's `marks` cell: a marked image gets a frame and this text


def make_thumb(
    gray01: np.ndarray, box: Box | None, side: int = 160
) -> tuple[np.ndarray, Box | None]:
    """(H, W) [0, 1] image + box in its pixels -> (h, w) uint8 thumbnail + box in its pixels."""
    H, W = gray01.shape
    s = min(1.0, side / max(H, W))
    t = cv2.resize(
        gray01, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA
    )
    u8 = np.clip(np.rint(t * 255), 0, 255).astype(np.uint8)
    if box is None:
        return u8, None
    tb = (round(box[0] * s), round(box[1] * s), round(box[2] * s), round(box[3] * s))
    return u8, tb


def sheet_files(path: Path) -> list[Path]:
    """The files a contact sheet at `path` is (or was) written as: NAME.png, NAME-001.png, ..."""
    path = Path(path)
    pages = re.compile(re.escape(path.stem) + r"-\d{3}\.png")
    found = [path] if path.exists() else []
    if path.parent.is_dir():
        found += sorted(p for p in path.parent.iterdir() if pages.fullmatch(p.name))
    return found


def check_sheet_target(path: Path | None, force: bool) -> None:
    """Refuse (exit 3) to overwrite an existing sheet, or any of its pages, without --force."""
    if path is None or force:
        return
    if existing := sheet_files(path):
        raise InputError(f"contact sheet {existing[0]} already exists; pass --force to "
                         "overwrite it or choose another --contact-sheet name")  # fmt: skip


def render_contact_sheet(
    items: list[SheetItem], path: Path, *, cell: int = 160, cols: int = 10, per_page: int = 200
) -> list[Path]:
    """Write a grid of thumbnails with their box (green; orange = fallback) and id printed;
    marked images (`SheetItem.marks`, as `cxraug.core.manifest.is_marked` reads it) framed in
    magenta with the cell's text.

    More than `per_page` items go to several files NAME-001.png, NAME-002.png, ... so that no
    sheet becomes too large to open. Returns the files written."""
    path = Path(path)
    pages = [items[i : i + per_page] for i in range(0, len(items), per_page)] or [[]]
    out: list[Path] = []
    for p, page in enumerate(pages):
        target = path if len(pages) == 1 else path.with_name(f"{path.stem}-{p + 1:03d}.png")
        write_png_rgb(target, _sheet_page(page, cell, cols))
        out.append(target)
    for old in sheet_files(path):  # pages of an earlier, longer sheet (only after --force)
        if old not in out:
            old.unlink(missing_ok=True)
    return out


def _sheet_page(items: list[SheetItem], cell: int, cols: int) -> np.ndarray:
    label_h, font, scale = 14, cv2.FONT_HERSHEY_SIMPLEX, 0.33
    cols = max(1, min(cols, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    sheet = np.full((rows * (cell + label_h), cols * cell, 3), 40, np.uint8)  # (H, W, RGB)
    for i, it in enumerate(items):
        top, left = (i // cols) * (cell + label_h), (i % cols) * cell
        h, w = it.thumb.shape
        oy, ox = top + (cell - h) // 2, left + (cell - w) // 2
        sheet[oy : oy + h, ox : ox + w] = it.thumb[:, :, None]
        if it.box is not None:
            colour = (255, 160, 0) if it.fallback else (0, 230, 0)
            x0, y0, x1, y1 = it.box
            cv2.rectangle(sheet, (ox + x0, oy + y0), (ox + x1 - 1, oy + y1 - 1), colour, 1)
        if is_marked(it.marks):
            _mark_cell(sheet, left, top, cell, it.marks)
        # keep the end of the id (the file name), ".." marks the cut; Hershey fonts are ASCII
        text = it.id.encode("ascii", "replace").decode()
        while len(text) > 4 and cv2.getTextSize(text, font, scale, 1)[0][0] > cell - 4:
            text = ".." + (text[3:] if text.startswith("..") else text[1:])
        cv2.putText(
            sheet,
            text,
            (left + 2, top + cell + label_h - 4),
            font,
            scale,
            (230, 230, 230),
            1,
            cv2.LINE_AA,
        )
    return sheet


def _mark_cell(sheet: np.ndarray, left: int, top: int, cell: int, marks: str) -> None:
    """A 3 px magenta frame round the thumbnail's cell and the marks on a dark strip."""
    for i in range(3):  # three 1 px rectangles: a thick line would spill into the next cell
        cv2.rectangle(sheet, (left + i, top + i), (left + cell - 1 - i, top + cell - 1 - i),
                      MARK_COLOUR, 1)  # fmt: skip
    text = marks.encode("ascii", "replace").decode()[:28]  # Hershey fonts are ASCII
    cv2.rectangle(sheet, (left + 3, top + 3), (left + cell - 4, top + 16), (0, 0, 0), -1)
    cv2.putText(sheet, text, (left + 5, top + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, MARK_COLOUR,
                1, cv2.LINE_AA)  # fmt: skip
