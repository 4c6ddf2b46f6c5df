"""Every figure cxraug draws, with OpenCV (no plotting dependency): the one owner of drawing.

Colour convention: a figure is an (H, W, 3) uint8 **RGB** array, every colour in cxraug is an
RGB triple, and figures are written by `cxraug.core.images.write_png_rgb` (the one PNG writer).
Text goes through `text` (Hershey fonts draw ASCII only: text is made ASCII first) and is cut
to a width by `fit_text`.

    Axes + frame, line, band, vline, legend, ticks, decorate   the parts of a chart
    line_chart      lines on shared axes (fid's spectrum, a run's losses and checkpoint scores)
    interval_bars   bars from zero with interval whiskers (evaluate's paired differences)
    tile_grid       a labelled grid of images with captions, boxes, frames, a badge (the
                    contact sheets of preprocess and filter, fid's REAL-vs-FAKE sheet)
    stack           panels one below the other (evaluate's one panel per test set)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from cxraug.core.images import Box

RGB = tuple[int, int, int]
Series = tuple[str, np.ndarray, np.ndarray]  # (label, x, y)

#: the colour-blind-safe Okabe-Ito palette, RGB
OKABE_ITO: dict[str, RGB] = {
    "black": (0, 0, 0), "orange": (230, 159, 0), "sky blue": (86, 180, 233),
    "bluish green": (0, 158, 115), "yellow": (240, 228, 66), "blue": (0, 114, 178),
    "vermillion": (213, 94, 0), "reddish purple": (204, 121, 167),
}  # fmt: skip
#: one colour per series of a line chart, in order
COLOURS: tuple[RGB, ...] = tuple(OKABE_ITO[k] for k in (
    "blue", "vermillion", "bluish green", "reddish purple", "orange", "black"))  # fmt: skip
BLACK, WHITE, LIGHT, GREY = (0, 0, 0), (255, 255, 255), (235, 235, 235), (160, 160, 160)
DARK = 40  # the background of image grids (gray level)
FONT = cv2.FONT_HERSHEY_SIMPLEX
SMALL = 0.33  # text scale of captions and badges
LINE_H = 13  # px from one caption line to the next at SMALL


# ---- text ---------------------------------------------------------------------------------


def _ascii(s: str) -> str:
    return s.encode("ascii", "replace").decode()


def text_width(s: str, scale: float) -> int:
    return int(cv2.getTextSize(_ascii(s), FONT, scale, 1)[0][0])


def text(img: np.ndarray, s: str, xy: tuple[int, int], colour: RGB = BLACK, scale: float = 0.42,
         align: Literal["left", "centre", "right"] = "left") -> None:  # fmt: skip
    """`s` (made ASCII) with its baseline at xy; `align` says which end of it xy is."""
    t, (x, y) = _ascii(s), xy
    if align != "left":
        x -= text_width(t, scale) // (1 if align == "right" else 2)
    cv2.putText(img, t, (int(x), int(y)), FONT, scale, colour, 1, cv2.LINE_AA)


def fit_text(s: str, width: int, scale: float = SMALL, keep_end: bool = True) -> str:
    """`s` in ASCII, cut to at most `width` px at `scale`, '..' marking the cut: keep the end
    (ids, file names: the distinctive part) or the start (a list: its first item)."""
    t = _ascii(s)
    if text_width(t, scale) <= width:
        return t
    while len(t) > 1:
        t = t[1:] if keep_end else t[:-1]
        cut = ".." + t if keep_end else t + ".."
        if text_width(cut, scale) <= width:
            return cut
    return ".."


# ---- charts ---------------------------------------------------------------------------------


def canvas(h: int, w: int, fill: int = 255) -> np.ndarray:
    return np.full((h, w, 3), fill, np.uint8)


def data_range(*arrays: np.ndarray) -> tuple[float, float]:
    """(lo, hi) of the finite values, (0, 1) when there are none; hi > lo always."""
    v = np.concatenate([np.ravel(np.asarray(a, float)) for a in arrays] or [np.zeros(0)])
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    return lo, max(hi, lo + 1e-12)


@dataclass(frozen=True)
class Axes:
    """A plot box in pixels ((x0, y0) top left, (x1, y1) bottom right) showing the data
    x in `xlim` and y in `ylim` on linear scales."""

    x0: int
    y0: int
    x1: int
    y1: int
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def px(self, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.ndarray:
        """(N, 2) int32 pixel positions of the points (x, y)."""
        (xlo, xhi), (ylo, yhi) = self.xlim, self.ylim
        x, y = np.asarray(x, float), np.asarray(y, float)
        return np.stack([self.x0 + (x - xlo) / (xhi - xlo) * (self.x1 - self.x0),
                         self.y1 - (y - ylo) / (yhi - ylo) * (self.y1 - self.y0)],
                        1).astype(np.int32).reshape(-1, 2)  # fmt: skip


def frame(img: np.ndarray, ax: Axes) -> None:
    cv2.rectangle(img, (ax.x0, ax.y0), (ax.x1, ax.y1), BLACK, 1)


def line(img: np.ndarray, ax: Axes, x: np.ndarray, y: np.ndarray, colour: RGB, *,
         width: int = 2, markers: bool = False) -> None:  # fmt: skip
    """A polyline through the finite points (x, y); `markers`: a dot on each point."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    pts = ax.px(x[keep], y[keep])
    if len(pts):
        cv2.polylines(img, [pts], False, colour, width, cv2.LINE_AA)
    for p in pts if markers else ():
        cv2.circle(img, (int(p[0]), int(p[1])), 3, colour, -1)


def band(img: np.ndarray, ax: Axes, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour: RGB,
         alpha: float = 0.15) -> None:  # fmt: skip
    """The area between the curves lo(x) and hi(x), shaded see-through."""
    x = np.asarray(x, float)
    poly = np.concatenate([ax.px(x, hi), ax.px(x[::-1], np.asarray(lo, float)[::-1])])
    layer = img.copy()
    cv2.fillPoly(layer, [poly], colour)
    img[:] = cv2.addWeighted(layer, alpha, img, 1 - alpha, 0)


def vline(img: np.ndarray, ax: Axes, x: float, label: str = "", colour: RGB = GREY) -> None:
    """A vertical line at data x across the box, `label` beside its foot (on its left when
    the right would leave the box)."""
    xp = int(ax.px([x], [ax.ylim[0]])[0, 0])
    cv2.line(img, (xp, ax.y0), (xp, ax.y1), colour, 1)
    right = xp + 4 + text_width(label, 0.38) <= ax.x1
    text(img, label, (xp + 4 if right else xp - 4, ax.y1 - 8), (110, 110, 110), 0.38,
         "left" if right else "right")  # fmt: skip


def legend(img: np.ndarray, entries: Sequence[tuple[str, RGB]], xy: tuple[int, int],
           step: int = 20) -> None:  # fmt: skip
    """One (colour swatch, label) line per entry, the first swatch centred on xy."""
    x, y = xy
    for k, (label, colour) in enumerate(entries):
        cv2.line(img, (x, y + step * k), (x + 25, y + step * k), colour, 3)
        text(img, label, (x + 32, y + step * k + 5))


def ticks(img: np.ndarray, ax: Axes, xs: Sequence[float], ys: Sequence[float],
          fmt: str = "{:.3g}") -> None:  # fmt: skip
    """Tick values under the box at each x of `xs`, left of it at each y of `ys`."""
    def label(v: float) -> str:  # iteration counts read 2,500, not 2.5e+03
        return f"{int(v):,}" if abs(v) >= 1000 and float(v).is_integer() else fmt.format(v)

    for v in xs:
        text(img, label(v), (int(ax.px([v], [ax.ylim[0]])[0, 0]), ax.y1 + 16), scale=0.35,
             align="centre")  # fmt: skip
    for v in ys:
        text(img, label(v), (ax.x0 - 4, int(ax.px([ax.xlim[0]], [v])[0, 1]) + 4),
             scale=0.35, align="right")  # fmt: skip


def decorate(img: np.ndarray, ax: Axes, title: str, xlabel: str, ylabel: str,
             note: str = "") -> None:  # fmt: skip
    """The frame, the title and a note line above the box, the axis labels."""
    frame(img, ax)
    text(img, title, (ax.x0, 22), scale=0.5)
    text(img, note, (ax.x0, 42), scale=0.4)
    text(img, xlabel, ((ax.x0 + ax.x1) // 2, img.shape[0] - 10), align="centre")
    text(img, ylabel, (5, ax.y0 - 8))


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, *,
               note: str = "", vlines: Sequence[tuple[float, str]] = (),
               ylim: tuple[float, float] | None = None, markers: bool = False, w: int = 760,
               h: int = 480) -> np.ndarray:  # fmt: skip
    """Lines through (x, y) of each series on shared linear axes (non-finite points skipped;
    y over `ylim`, else over the data), tick values at both ends of each axis, a legend at
    the top right, a `note` line under the title and labelled grey vertical lines at the
    x of each `vlines` entry."""
    img = canvas(h, w)
    ax = Axes(70, 60, w - 20, h - 50, data_range(*(s[1] for s in series)),
              ylim or data_range(*(s[2] for s in series)))  # fmt: skip
    for xv, label in vlines:
        vline(img, ax, xv, label)
    for k, (_, x, y) in enumerate(series):
        line(img, ax, x, y, COLOURS[k % len(COLOURS)], markers=markers)
    legend(img, [(s[0], COLOURS[k % len(COLOURS)]) for k, s in enumerate(series)],
           (ax.x1 - 200, ax.y0 + 14))  # fmt: skip
    decorate(img, ax, title, xlabel, ylabel, note)
    ticks(img, ax, ax.xlim, ax.ylim)
    return img


def interval_bars(rows: Sequence[tuple[str, float, float, float, RGB]], title: str,
                  w: int = 900) -> np.ndarray:  # fmt: skip
    """One horizontal bar per (label, value, lo, hi, colour), drawn from a zero line in the
    middle, the interval [lo, hi] as a whisker, the numbers in the right margin ("n/a" for a
    non-finite value); the axis is symmetric about zero."""
    bar_h, top = 34, 40
    h = top + bar_h * max(len(rows), 1) + 40
    img = canvas(h, w)
    span = max([abs(v) for r in rows for v in r[1:4] if np.isfinite(v)] + [0.05]) * 1.1
    x0, x1 = 190, w - 200
    zero = (x0 + x1) // 2

    def px(v: float) -> int:
        return int(zero + np.clip(v / span, -1, 1) * (x1 - zero))

    for k, (label, d, lo, hi, colour) in enumerate(rows):
        y, yc = top + k * bar_h, top + k * bar_h + bar_h // 2
        text(img, label, (5, yc + 4))
        if np.isfinite(d):
            cv2.rectangle(img, (min(zero, px(d)), y + 6), (max(zero, px(d)), y + bar_h - 6),
                          colour, -1)  # fmt: skip
        if np.isfinite(lo) and np.isfinite(hi):
            cv2.line(img, (px(lo), yc), (px(hi), yc), BLACK, 2)
            for v in (lo, hi):
                cv2.line(img, (px(v), yc - 6), (px(v), yc + 6), BLACK, 2)
        numbers = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(d) else "n/a"
        text(img, numbers, (x1 + 12, yc + 4), scale=0.38)
    cv2.line(img, (zero, top - 5), (zero, h - 35), (120, 120, 120), 1)
    text(img, title, (5, 20), scale=0.5)
    text(img, f"{-span:+.3f}", (x0, h - 15), scale=0.35, align="centre")
    text(img, "0", (zero, h - 15), scale=0.35, align="centre")
    text(img, f"{span:+.3f}", (x1, h - 15), scale=0.35, align="centre")
    return img


def stack(panels: Sequence[np.ndarray]) -> np.ndarray:
    """Panels one below the other on white, padded on the right to the widest; a blank
    strip when there are none."""
    if not panels:
        return canvas(10, 10)
    width = max(p.shape[1] for p in panels)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)),
                                  constant_values=255) for p in panels])  # fmt: skip


# ---- image grids ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One cell of `tile_grid`: an image and what is drawn on, round and under it."""

    image: np.ndarray  # (h, w) gray or (h, w, 3) RGB uint8
    captions: Sequence[tuple[str, RGB]] = ()  # lines under the image (cut to fit, end kept)
    boxes: Sequence[tuple[Box, RGB]] = ()  # rectangles in the image's pixels
    frame: RGB | None = None  # a frame round the cell's image square ...
    frame_px: int = 1  # ... this many px wide, inside the square
    badge: tuple[str, RGB] | None = None  # a text on a dark strip at the top of the cell


def placeholder(side: int) -> np.ndarray:
    """A (side, side) dark square crossed out: an image that could not be read."""
    t = np.full((side, side), 60, np.uint8)
    cv2.line(t, (0, 0), (side - 1, side - 1), 90, 2)
    cv2.line(t, (0, side - 1), (side - 1, 0), 90, 2)
    return t


def tile_grid(tiles: Sequence[Tile | None], cols: int, cell: int, *, lines: int = 0,
              title: str = "", row_labels: Sequence[str] = (), gap: int = 0,
              upscale: bool = False) -> np.ndarray:  # fmt: skip
    """`tiles` row by row, `cols` to a row, on a dark background: each image centred in a
    cell x cell square (scaled down to fit; up too with `upscale`), `lines` caption lines
    under it; `title` in a strip on top; `row_labels` in a column on the left; None leaves
    a cell empty."""
    head, label_w = (30 if title else 0), (90 if row_labels else 0)
    cap_h = LINE_H * lines + 1 if lines else 0  # 14 px for one line
    rows = max(1, -(-len(tiles) // max(cols, 1)))
    pitch_x, pitch_y = cell + gap, cell + cap_h + gap
    out = np.full((head + rows * pitch_y, label_w + cols * pitch_x, 3), DARK, np.uint8)
    text(out, title, (6, 20), LIGHT, 0.5)
    for r, label in enumerate(row_labels):
        text(out, label, (6, head + r * pitch_y + cell // 2), LIGHT, 0.55)
    for i, tile in enumerate(tiles):
        if tile is not None:
            _draw_tile(out, tile, label_w + (i % cols) * pitch_x, head + (i // cols) * pitch_y,
                       cell, upscale)  # fmt: skip
    return out


def _draw_tile(out: np.ndarray, t: Tile, left: int, top: int, cell: int, upscale: bool) -> None:
    h, w = t.image.shape[:2]
    s = cell / max(h, w) if upscale or max(h, w) > cell else 1.0
    im = t.image if s == 1.0 else cv2.resize(
        t.image, (max(1, round(w * s)), max(1, round(h * s))),
        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)  # fmt: skip
    oy, ox = top + (cell - im.shape[0]) // 2, left + (cell - im.shape[1]) // 2
    out[oy : oy + im.shape[0], ox : ox + im.shape[1]] = im if im.ndim == 3 else im[:, :, None]
    for (x0, y0, x1, y1), colour in t.boxes:
        cv2.rectangle(out, (ox + round(x0 * s), oy + round(y0 * s)),
                      (ox + round(x1 * s) - 1, oy + round(y1 * s) - 1), colour, 1)  # fmt: skip
    if t.frame is not None:  # 1 px rectangles inside the cell: a thick line would spill over
        for i in range(t.frame_px):
            cv2.rectangle(out, (left + i, top + i), (left + cell - 1 - i, top + cell - 1 - i),
                          t.frame, 1)  # fmt: skip
    if t.badge is not None:
        cv2.rectangle(out, (left + 3, top + 3), (left + cell - 4, top + 16), BLACK, -1)
        text(out, fit_text(t.badge[0], cell - 10), (left + 5, top + 13), t.badge[1], SMALL)
    for j, (caption, colour) in enumerate(t.captions):
        text(out, fit_text(caption, cell - 4), (left + 2, top + cell + 11 + LINE_H * j), colour,
             SMALL)  # fmt: skip


def image_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], title: str,
               cell: int = 160) -> np.ndarray:  # fmt: skip
    """One row of images per (label, images), the label at the row's left, each image scaled
    to fit a cell x cell square."""
    cols = max([len(imgs) for _, imgs in rows] + [1])
    tiles: list[Tile | None] = []
    for _, imgs in rows:
        tiles += [*(Tile(im) for im in imgs), *[None] * (cols - len(imgs))]
    return tile_grid(tiles, cols, cell, title=title, row_labels=[r[0] for r in rows], gap=4,
                     upscale=True)  # fmt: skip
