"""The figures of `evaluate`, as RGB uint8 arrays drawn by cxraug.core.figures: ROC curves per
arm with their bootstrap bands, and a bar chart of paired differences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxraug.core import figures as fig

#: one colour per arm in order (the first arm, "real", black)
COLOURS: tuple[fig.RGB, ...] = tuple(fig.OKABE_ITO[k] for k in (
    "black", "orange", "sky blue", "bluish green", "reddish purple", "vermillion",
    "yellow"))  # fmt: skip


def _colour(k: int) -> fig.RGB:
    return COLOURS[k % len(COLOURS)]


def draw_roc(grid: np.ndarray, curves: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
             title: str, size: int = 520) -> np.ndarray:  # fmt: skip
    """ROC panel: for each (name, tpr, lo, hi) on the FPR `grid`, a shaded band and a line."""
    w, h, m = size + 220, size + 60, 50
    side = size - m
    img = fig.canvas(h, w)
    ax = fig.Axes(m, h - m - side, m + side, h - m, (0.0, 1.0), (0.0, 1.0))
    fig.line(img, ax, np.r_[0.0, 1.0], np.r_[0.0, 1.0], (190, 190, 190), width=1)  # chance
    for k, (_, _, lo, hi) in enumerate(curves):
        fig.band(img, ax, grid, lo, hi, _colour(k))
    for k, (_, tpr, _, _) in enumerate(curves):
        fig.line(img, ax, grid, tpr, _colour(k))
    fig.legend(img, [(c[0], _colour(k)) for k, c in enumerate(curves)], (size + 10, 40), 22)
    fig.decorate(img, ax, title, "false positive rate (1 - specificity)", "TPR",
                 "bands: 95% bootstrap over patients")  # fmt: skip
    fig.ticks(img, ax, (0.0, 0.5, 1.0), (0.0, 0.5, 1.0), "{:.1f}")
    return img


def draw_differences(rows: Sequence[tuple[str, float, float, float, int]], title: str,
                     w: int = 900) -> np.ndarray:  # fmt: skip
    """Horizontal bars: (name, difference, lo, hi, colour index = the arm's in `draw_roc`) each,
    zero line in the middle, CI whiskers, the numbers in the right margin."""
    return fig.interval_bars([(n, d, lo, hi, _colour(k)) for n, d, lo, hi, k in rows], title, w)
