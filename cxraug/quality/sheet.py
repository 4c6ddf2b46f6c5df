"""The contact sheet of `cxraug filter`: kept vs rejected thumbnails with their reasons, so a
person can audit the automatic decisions at a glance.

Layout (RGB PNG): a "KEPT" section (a seeded random sample of at most `sheet_kept` images, in
id order) above a "REJECTED" section (the first `sheet_rejected` rejected images, in id order),
each thumbnail captioned with its id, its failed checks and the nearest real / kept image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cxraug.core import figures as fig
from cxraug.core.errors import ImageError
from cxraug.core.images import read_gray_u8, write_png_rgb
from cxraug.quality.decide import Decision, FilterConfig

THUMB = 112  # thumbnail side, px
LINES = 3  # caption lines under each thumbnail
COLS = 10
GREEN, RED = (60, 200, 60), (235, 60, 60)  # RGB, like every colour (cxraug.core.figures)


def _image(path: Path | None) -> np.ndarray:
    """The gray image, or a crossed-out square when the file cannot be read."""
    try:
        if path is None:
            raise ImageError("no file")
        return read_gray_u8(path)
    except ImageError:
        return fig.placeholder(THUMB)


def _captions(d: Decision) -> list[tuple[str, fig.RGB]]:
    """The id (its end: the distinctive part), then the verdict: "kept" and the distance to
    the nearest real image, or the failed checks (the primary one first) and what it copies."""
    colour, fit = GREEN if d.kept else RED, THUMB - 4
    lines = [(fig.fit_text(d.id, fit), fig.LIGHT)]
    if d.kept:
        return [*lines, (f"kept  nn={d.scores.get('nn_real', float('nan')):.2f}", colour)]
    lines.append((fig.fit_text(",".join(d.keys), fit, keep_end=False), colour))
    if d.duplicate_of:
        lines.append((fig.fit_text("of " + d.duplicate_of, fit), colour))
    elif d.primary == "memorised":
        lines.append((fig.fit_text(f"real {d.nearest_real}", fit), colour))
    return lines


def _section(title: str, items: Sequence[Decision], thumbs: Mapping[str, Path]) -> np.ndarray:
    tiles = [fig.Tile(_image(thumbs.get(d.id)), _captions(d), frame=GREEN if d.kept else RED)
             for d in items]  # fmt: skip
    return fig.tile_grid(tiles, COLS, THUMB, lines=LINES, title=title, upscale=True)


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
    write_png_rgb(Path(path), fig.stack([top, bottom]))
