"""The figures of `evaluate`, drawn with OpenCV (no plotting dependency), as BGR uint8 arrays:
ROC curves per arm with their bootstrap bands, and a bar chart of paired differences."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: BGR colours, one per arm in order (colour-blind-safe Okabe-Ito palette)
COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 159, 230), (233, 180, 86), (115, 158, 0), (167, 121, 204),
    (0, 94, 213), (66, 228, 240),
)  # fmt: skip
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, s: str, xy: tuple[int, int], colour: tuple[int, int, int] = (0, 0, 0),
          scale: float = 0.42) -> None:  # fmt: skip
    cv2.putText(img, s.encode("ascii", "replace").decode(), xy, _FONT, scale, colour, 1,
                cv2.LINE_AA)  # fmt: skip


def draw_roc(grid: np.ndarray, curves: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
             title: str, size: int = 520) -> np.ndarray:  # fmt: skip
    """ROC panel: for each (name, tpr, lo, hi) on the FPR `grid`, a shaded band and a line."""
    w, h, m = size + 220, size + 60, 50
    img = np.full((h, w, 3), 255, np.uint8)
    side = size - m

    def pts(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
        return np.stack([m + fpr * side, h - m - tpr * side], 1).astype(np.int32)

    cv2.line(img, tuple(pts(np.r_[0.0], np.r_[0.0])[0]), tuple(pts(np.r_[1.0], np.r_[1.0])[0]),
             (190, 190, 190), 1, cv2.LINE_AA)  # chance  # fmt: skip
    for k, (_, _, lo, hi) in enumerate(curves):
        band = np.concatenate([pts(grid, hi), pts(grid[::-1], lo[::-1])])
        layer = img.copy()
        cv2.fillPoly(layer, [band], COLOURS[k % len(COLOURS)])
        img[:] = cv2.addWeighted(layer, 0.15, img, 0.85, 0)
    for k, (name, tpr, _, _) in enumerate(curves):
        c = COLOURS[k % len(COLOURS)]
        cv2.polylines(img, [pts(grid, tpr)], False, c, 2, cv2.LINE_AA)
        cv2.line(img, (size + 10, 40 + 22 * k), (size + 35, 40 + 22 * k), c, 3)
        _text(img, name, (size + 42, 45 + 22 * k))
    cv2.rectangle(img, (m, h - m - side), (m + side, h - m), (0, 0, 0), 1)
    _text(img, title, (m, 20), scale=0.5)
    _text(img, "false positive rate (1 - specificity)", (m + side // 2 - 130, h - 15))
    _text(img, "TPR", (5, h - m - side // 2))
    for v in (0.0, 0.5, 1.0):
        _text(img, f"{v:.1f}", (m + int(v * side) - 8, h - m + 16), scale=0.35)
        _text(img, f"{v:.1f}", (m - 30, h - m - int(v * side) + 4), scale=0.35)
    _text(img, "bands: 95% bootstrap over patients", (m + 10, h - m - side + 18), scale=0.38)
    return img


def draw_differences(rows: Sequence[tuple[str, float, float, float, int]], title: str,
                     w: int = 900) -> np.ndarray:  # fmt: skip
    """Horizontal bars: (name, difference, lo, hi, colour index = the arm's in `draw_roc`) each,
    zero line in the middle, CI whiskers, the numbers in the right margin."""
    bar_h, top, m_left = 34, 40, 190
    h = top + bar_h * max(len(rows), 1) + 40
    img = np.full((h, w, 3), 255, np.uint8)
    vals = [abs(v) for r in rows for v in r[1:4] if np.isfinite(v)]
    span = max(vals + [0.05]) * 1.1
    x0, x1 = m_left, w - 200
    zero = (x0 + x1) // 2

    def px(v: float) -> int:
        return int(zero + np.clip(v / span, -1, 1) * (x1 - zero))

    for k, (name, d, lo, hi, ci) in enumerate(rows):
        y = top + k * bar_h
        c = COLOURS[ci % len(COLOURS)]
        _text(img, name, (5, y + bar_h // 2 + 4))
        if np.isfinite(d):
            cv2.rectangle(img, (min(zero, px(d)), y + 6), (max(zero, px(d)), y + bar_h - 6), c, -1)
        if np.isfinite(lo) and np.isfinite(hi):
            yc = y + bar_h // 2
            cv2.line(img, (px(lo), yc), (px(hi), yc), (0, 0, 0), 2)
            for v in (lo, hi):
                cv2.line(img, (px(v), yc - 6), (px(v), yc + 6), (0, 0, 0), 2)
        label = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(d) else "n/a"
        _text(img, label, (x1 + 12, y + bar_h // 2 + 4), scale=0.38)
    cv2.line(img, (zero, top - 5), (zero, h - 35), (120, 120, 120), 1)
    _text(img, title, (5, 20), scale=0.5)
    _text(img, f"{-span:+.3f}", (x0 - 20, h - 15), scale=0.35)
    _text(img, "0", (zero - 4, h - 15), scale=0.35)
    _text(img, f"{span:+.3f}", (x1 - 40, h - 15), scale=0.35)
    return img


def stack_panels(panels: Sequence[np.ndarray]) -> np.ndarray:
    """BGR panels one below the other on white, padded on the right to the widest; a blank
    strip when there are none."""
    if not panels:
        return np.full((10, 10, 3), 255, np.uint8)
    width = max(p.shape[1] for p in panels)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)),
                                  constant_values=255) for p in panels])  # fmt: skip
