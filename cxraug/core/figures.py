"""Small figures drawn with OpenCV (no plotting dependency), as (H, W, 3) RGB uint8 arrays:
a line chart with a legend and a labelled grid of gray images. Generic: any folder may use
them (the older figures in gan/scoring, classify/plots and prep/contact_sheet predate this
module and could move onto it). Hershey fonts are ASCII only: text is made ASCII first."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: RGB colours, one per series in order (colour-blind-safe Okabe-Ito palette)
COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (0, 0, 0),
)  # fmt: skip
FONT = cv2.FONT_HERSHEY_SIMPLEX
Series = tuple[str, np.ndarray, np.ndarray]  # (label, x, y)


def text(img: np.ndarray, s: str, xy: tuple[int, int], colour: tuple[int, int, int] = (0, 0, 0),
         scale: float = 0.42) -> None:  # fmt: skip
    cv2.putText(img, s.encode("ascii", "replace").decode(), xy, FONT, scale, colour, 1,
                cv2.LINE_AA)  # fmt: skip


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, *,
               note: str = "", vlines: Sequence[tuple[float, str]] = (), w: int = 760,
               h: int = 480) -> np.ndarray:  # fmt: skip
    """Lines through (x, y) of each series on shared linear axes (non-finite points skipped),
    tick values at both ends of each axis, a legend at the top right, a `note` line under
    the title and labelled vertical grey lines at the x of each `vlines` entry."""
    img = np.full((h, w, 3), 255, np.uint8)
    x0, x1, y0, y1 = 70, w - 20, 60, h - 50  # plot box (y0 top)
    xs = np.concatenate([np.asarray(s[1], float) for s in series]) if series else np.zeros(1)
    ys = np.concatenate([np.asarray(s[2], float) for s in series]) if series else np.zeros(1)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xlo, xhi = (float(xs[ok].min()), float(xs[ok].max())) if ok.any() else (0.0, 1.0)
    ylo, yhi = (float(ys[ok].min()), float(ys[ok].max())) if ok.any() else (0.0, 1.0)
    xhi, yhi = max(xhi, xlo + 1e-12), max(yhi, ylo + 1e-12)

    def px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.stack([x0 + (x - xlo) / (xhi - xlo) * (x1 - x0),
                         y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)], 1).astype(np.int32)  # fmt: skip

    for xv, label in vlines:
        xp = int(px(np.r_[xv], np.r_[ylo])[0, 0])
        cv2.line(img, (xp, y0), (xp, y1), (160, 160, 160), 1)
        text(img, label, (xp + 4, y1 - 8), (110, 110, 110), 0.38)
    for k, (label, x, y) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = np.isfinite(x) & np.isfinite(y)
        cv2.polylines(img, [px(x[keep], y[keep])], False, colour, 2, cv2.LINE_AA)
        cv2.line(img, (x1 - 200, y0 + 14 + 20 * k), (x1 - 175, y0 + 14 + 20 * k), colour, 3)
        text(img, label, (x1 - 168, y0 + 19 + 20 * k))
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    text(img, title, (x0, 22), scale=0.5)
    text(img, note, (x0, 42), scale=0.4)
    text(img, xlabel, (x0 + (x1 - x0) // 2 - 4 * len(xlabel), h - 12))
    text(img, ylabel, (5, y0 - 8))
    text(img, f"{xlo:.3g}", (x0 - 5, y1 + 18), scale=0.38)
    text(img, f"{xhi:.3g}", (x1 - 30, y1 + 18), scale=0.38)
    text(img, f"{yhi:.3g}", (5, y0 + 12), scale=0.38)
    text(img, f"{ylo:.3g}", (5, y1), scale=0.38)
    return img


def image_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], title: str,
               cell: int = 160) -> np.ndarray:  # fmt: skip
    """One row of thumbnails per (label, gray uint8 images), the label at the row's left, each
    image scaled to fit a cell x cell square (INTER_AREA) on a dark background."""
    label_w, title_h, gap = 90, 30, 4
    cols = max([len(imgs) for _, imgs in rows] + [1])
    out = np.full((title_h + len(rows) * (cell + gap), label_w + cols * (cell + gap), 3), 40,
                  np.uint8)  # fmt: skip
    text(out, title, (6, 20), (235, 235, 235), 0.5)
    for r, (label, imgs) in enumerate(rows):
        top = title_h + r * (cell + gap)
        text(out, label, (6, top + cell // 2), (235, 235, 235), 0.55)
        for c, im in enumerate(imgs):
            h, w = im.shape[:2]
            s = cell / max(h, w)
            t = cv2.resize(im, (max(1, round(w * s)), max(1, round(h * s))),
                           interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)  # fmt: skip
            oy = top + (cell - t.shape[0]) // 2
            ox = label_w + c * (cell + gap) + (cell - t.shape[1]) // 2
            out[oy : oy + t.shape[0], ox : ox + t.shape[1]] = t[:, :, None]
    return out
