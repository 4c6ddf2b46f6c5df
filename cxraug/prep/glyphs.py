"""Text among the ink (cxraug.prep.ink): panel letters, captions, overlays; the `text` reason
of the editorial-mark detector (cxraug.prep.marks).

Clinical laterality markers and technologist annotations ("L", "R", "PORTABLE", "AP ERECT")
are the same pure ink as a figure's panel letters and captions, so text is judged by place
and by what a lone letter reads as (`text_evidence`):

- a plate (a solid box or disc with a character cut into it) or a word of <= 3 characters
  hugging a corner (<= CORNER_HUG of L from two edges) is a panel label, unless its one
  character reads as L or R (`read_letter`: overlap with drawn templates, mirrored too);
- a word of >= 2 separate characters away from every edge (>= EDGE_ZONE) is a caption or a
  label drawn on the image;
- >= OVERLAY_GLYPHS characters in all are a viewer overlay or a page of text.

Everything else near the edges is taken for a clinical annotation and left alone.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from cxraug.prep.ink import EDGE_ZONE, Ink, holes, is_arrow

GLYPH_H = (0.018, 0.12)  # character height range, of L
CORNER_HUG = 0.035  # of L: a panel label's box lies this close to two edges
OVERLAY_GLYPHS = 40  # this many characters make a viewer overlay or a page of text
#: Laterality markers: a lone L or R (also mirrored) hugging a corner is not a panel letter.
LATERALITY = frozenset("LR")
_PANEL_LETTERS = "ABCDEFabcdef"  # what panel letters are, in practice
_SIDE = 24  # glyphs are compared at _SIDE x _SIDE
_MIN_IOU = 0.45  # below this overlap a glyph resembles no letter (a line, a blob, a symbol)

_K3 = np.ones((3, 3), np.uint8)
Word = tuple[int, int, int, int, int, list[Ink]]  # x0, y0, x1, y1, characters, its glyphs


def text_evidence(inks: list[Ink], shape: tuple[int, int]) -> str | None:
    """What makes the image's ink text, in words (for logs and tests), or None."""
    H, W = shape
    L = max(H, W)
    hug, zone = CORNER_HUG * L, EDGE_ZONE * L

    def corner(x0: int, y0: int, x1: int, y1: int) -> bool:
        return min(x0, W - x1) <= hug and min(y0, H - y1) <= hug

    def central(x0: int, y0: int, x1: int, y1: int) -> bool:
        return min(x0, y0, W - x1, H - y1) >= zone

    for k in inks:
        if _is_plate(k, L) and corner(*k.box):
            cut = holes(k.mask)
            if not cut or read_letter(cut[0]) not in LATERALITY:
                return f"a labelled plate hugging a corner at {k.box}"
    words = _words([k for k in inks if _is_glyph(k, shape)])
    if (n := sum(w[4] for w in words)) >= OVERLAY_GLYPHS:
        return f"{n} characters"
    for x0, y0, x1, y1, chars, parts in words:
        box = (x0, y0, x1, y1)
        if corner(*box) and chars <= 3 and y1 - y0 >= 0.025 * L:
            letter = read_letter(parts[0].mask) if len(parts) == 1 else "?"
            if letter is not None and letter not in LATERALITY:  # a letter, not L or R
                return f"a {chars}-character label hugging a corner at {box}"
        # two separate characters at least: one ring-shaped device is no word
        if central(*box) and len(parts) >= 2:
            return f"{chars} characters inside the image at {box}"
    return None


def _is_plate(k: Ink, L: int) -> bool:
    """A solid box or disc (ink and what it encloses fill >= 0.75 of the box; a disc 0.785)
    with a character cut into it (>= 0.12 of the box: more than a bold letter's own holes)."""
    size = max(k.w, k.h)
    if not (0.025 * L <= size <= 0.15 * L and size <= 2.5 * min(k.w, k.h)):
        return False
    cut = sum(int(h.sum()) for h in holes(k.mask))
    return cut >= 0.12 * k.w * k.h and k.area + cut >= 0.75 * k.w * k.h


def _is_glyph(k: Ink, shape: tuple[int, int]) -> bool:
    """Character-sized ink drawn in strokes: not a solid blob, not an arrow, not a strip."""
    L = max(shape)
    # not thinner than 0.3 of its height: I, l and 1 go, and so do strips along an edge
    if not (GLYPH_H[0] * L <= k.h <= GLYPH_H[1] * L and 0.3 * k.h <= k.w <= 4 * k.h):
        return False
    inner = cv2.erode(k.mask.astype(np.uint8), _K3, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)  # fmt: skip
    stroke = 2.0 * k.area / max(1, int(np.count_nonzero(k.mask & ~inner)))  # ~ stroke width
    # at most two holes (A, B, 8): ink with many holes is a background text is cut into
    return stroke <= 0.35 * k.h and len(holes(k.mask)) <= 2 and not is_arrow(k, shape)


def _words(glyphs: list[Ink]) -> list[Word]:
    """Glyphs grouped into words/lines (similar heights, overlapping rows, small gaps); a
    component as wide as several characters (touching letters) counts as several."""
    parent = list(range(len(glyphs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(glyphs):
        for j in range(i + 1, len(glyphs)):
            b = glyphs[j]
            hi, lo = max(a.h, b.h), min(a.h, b.h)
            overlap = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
            gap = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
            if hi <= 1.6 * lo and overlap >= 0.5 * lo and gap <= 0.8 * hi:
                parent[root(i)] = root(j)
    groups: dict[int, list[Ink]] = {}
    for i, k in enumerate(glyphs):
        groups.setdefault(root(i), []).append(k)
    out: list[Word] = []
    for ks in groups.values():
        x0, y0 = min(k.x for k in ks), min(k.y for k in ks)
        x1, y1 = max(k.x + k.w for k in ks), max(k.y + k.h for k in ks)
        chars = sum(max(1, round(k.w / (0.7 * k.h))) for k in ks)
        out.append((x0, y0, x1, y1, chars, ks))
    return out


# ---- reading one letter ---------------------------------------------------------------------


def _normalised(mask: np.ndarray) -> np.ndarray:
    """A glyph's ink cropped to its box and scaled to (_SIDE, _SIDE) bool."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    return cv2.resize(box, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA) >= 0.5


@functools.cache
def _templates() -> tuple[np.ndarray, tuple[str, ...]]:
    """((T, _SIDE * _SIDE) bool, T letters): L, R (also mirrored) and the panel letters
    drawn in four Hershey fonts at three weights."""
    masks, letters = [], []
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX,
             cv2.FONT_HERSHEY_COMPLEX)  # fmt: skip
    for ch in sorted(LATERALITY) + list(_PANEL_LETTERS):
        for font in fonts:
            for weight in (3, 5, 8):
                img = np.zeros((120, 120), np.uint8)
                cv2.putText(img, ch, (20, 95), font, 2.6, 255, weight, cv2.LINE_AA)
                m = _normalised(img >= 128)
                variants = (m, m[:, ::-1]) if ch in LATERALITY else (m,)
                masks += [v.ravel() for v in variants]
                letters += [ch] * len(variants)
    return np.stack(masks), tuple(letters)


def read_letter(mask: np.ndarray) -> str | None:
    """The letter (L, R, or a panel letter A-F / a-f) whose drawn shape a glyph's ink
    overlaps most (intersection over union), or None if it overlaps none by _MIN_IOU."""
    if not mask.any():
        return None
    shapes, letters = _templates()
    m = _normalised(mask).ravel()
    iou = (shapes & m).sum(axis=1) / np.maximum((shapes | m).sum(axis=1), 1)
    best = int(np.argmax(iou))
    return letters[best] if iou[best] >= _MIN_IOU else None
