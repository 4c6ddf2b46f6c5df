"""Contact sheets: a grid of thumbnails with each image's crop box drawn and its id printed,
so that a person can check hundreds of crop boxes at a glance (`--contact-sheet`). An image
with editorial marks (its manifest `marks` cell, cxraug.prep.marks) gets a magenta frame
round its cell and the cell's text printed on the thumbnail."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cxraug.core import figures as fig
from cxraug.core.errors import InputError
from cxraug.core.images import Box, write_png_rgb
from cxraug.core.manifest import is_marked

# RGB, like every colour (cxraug.core.figures)
MARK_COLOUR = (255, 0, 255)  # magenta is not a colour of a gray radiograph or of a box
BOX_COLOUR, FALLBACK_COLOUR = (0, 230, 0), (255, 160, 0)  # green; orange: a fallback box


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
    return fig.tile_grid([_tile(it) for it in items], max(1, min(cols, len(items))), cell,
                         lines=1)  # fmt: skip


def _tile(it: SheetItem) -> fig.Tile:
    """The thumbnail with its box (green; orange = fallback) and its id (the end kept: the
    file name); a marked image framed in magenta (3 px), its `marks` cell on top."""
    marked = is_marked(it.marks)
    box = () if it.box is None else ((it.box, FALLBACK_COLOUR if it.fallback else BOX_COLOUR),)
    return fig.Tile(it.thumb, [(it.id, fig.LIGHT)], box, MARK_COLOUR if marked else None, 3,
                    (it.marks, MARK_COLOUR) if marked else None)  # fmt: skip
