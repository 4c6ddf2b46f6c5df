"""The contact sheet of `cxraug filter`: kept vs rejected thumbnails with their reasons, so a
person can audit the automatic decisions at a glance.

Layout (RGB PNG): a "KEPT" section (a seeded random sample of at most `sheet_kept` images, in
id order) above a "REJECTED" section (the first `sheet_rejected` rejected images, in id order),
each thumbnail captioned with its id, its failed checks and the nearest real / kept image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from cxraug.core.errors import ImageError
from cxraug.core.images import read_gray_u8, write_png_rgb
from cxraug.quality.decide import Decision, FilterConfig

THUMB = 112  # thumbnail side, px
CAPTION = 42  # three text lines under each thumbnail
COLS = 10
HEADER = 30
FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN, RED, WHITE, GREY = (60, 200, 60), (235, 60, 60), (235, 235, 235), (90, 90, 90)


def _ascii(text: str, width: int = 22, keep_end: bool = True) -> str:
    """Hershey fonts draw ASCII only; keep the end of long ids (the distinctive part), or the
    start of a reason list (the primary reason)."""
    t = text.encode("ascii", "replace").decode()
    if len(t) <= width:
        return t
    return ".." + t[-(width - 2) :] if keep_end else t[: width - 2] + ".."


def _thumb(path: Path | None) -> np.ndarray:
    """(THUMB, THUMB, 3) uint8; a grey square with an X when the file cannot be read."""
    try:
        if path is None:
            raise ImageError("no file")
        g = cv2.resize(read_gray_u8(path), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
        return np.repeat(g[:, :, None], 3, axis=2)
    except ImageError:
        t = np.full((THUMB, THUMB, 3), 60, np.uint8)
        cv2.line(t, (0, 0), (THUMB - 1, THUMB - 1), GREY, 2)
        cv2.line(t, (0, THUMB - 1), (THUMB - 1, 0), GREY, 2)
        return t


def _captions(d: Decision) -> list[str]:
    if d.kept:
        return [_ascii(d.id), f"kept  nn={d.scores.get('nn_real', float('nan')):.2f}"]
    lines = [_ascii(d.id), _ascii(",".join(d.keys), keep_end=False)]
    if d.duplicate_of:
        lines.append(_ascii("of " + d.duplicate_of))
    elif d.primary == "memorised":
        lines.append(_ascii(f"real {d.nearest_real}"))
    return lines


def _section(title: str, items: Sequence[Decision], thumbs: Mapping[str, Path]) -> np.ndarray:
    rows = max(1, -(-len(items) // COLS))
    cell_h = THUMB + CAPTION
    img = np.zeros((HEADER + rows * cell_h, COLS * THUMB, 3), np.uint8)
    cv2.putText(img, title, (6, 21), FONT, 0.6, WHITE, 1, cv2.LINE_AA)
    for k, d in enumerate(items):
        y, x = HEADER + (k // COLS) * cell_h, (k % COLS) * THUMB
        img[y : y + THUMB, x : x + THUMB] = _thumb(thumbs.get(d.id))
        colour = GREEN if d.kept else RED
        cv2.rectangle(img, (x, y), (x + THUMB - 1, y + THUMB - 1), colour, 1)
        for j, line in enumerate(_captions(d)):
            cv2.putText(
                img,
                line,
                (x + 3, y + THUMB + 12 + 13 * j),
                FONT,
                0.33,
                colour if j else WHITE,
                1,
                cv2.LINE_AA,
            )
    return img


def write_sheet(
    path: Path, decisions: Sequence[Decision], thumbs: Mapping[str, Path], config: FilterConfig
) -> None:
    """Render and atomically write the contact sheet PNG."""
    kept = sorted((d for d in decisions if d.kept), key=lambda d: d.id)
    rejected = sorted((d for d in decisions if not d.kept), key=lambda d: d.id)
    rng = np.random.default_rng(config.seed)  # which kept images are shown: --seed decides
    if len(kept) > config.sheet_kept:
        pick = np.sort(rng.choice(len(kept), size=config.sheet_kept, replace=False))
        shown_kept = [kept[i] for i in pick]
    else:
        shown_kept = kept
    shown_rej = rejected[: config.sheet_rejected]
    top = _section(
        f"KEPT {len(kept)} of {len(decisions)} (showing {len(shown_kept)}, seed {config.seed})",
        shown_kept,
        thumbs,
    )
    bottom = _section(f"REJECTED {len(rejected)} (showing {len(shown_rej)})", shown_rej, thumbs)
    write_png_rgb(Path(path), np.concatenate([top, bottom], axis=0))
