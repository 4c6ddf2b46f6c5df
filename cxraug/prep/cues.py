"""Source cues out of the images: `evaluate --cues` (the classifier's inputs, docs/evaluate.md,
"Source cues") and `train --cues` (the GAN's training images, docs/training.md). One owner of
the image functions for both stages; cxraug.classify.cues is evaluate's face of it.

The public COVID-19 sets are confounded with their sources, and what tells the sources apart is
mostly not the lungs: burnt-in text and markers, figure borders, the field of view (a child's
whole trunk, an adult's chest), the exposure and the scanner's contrast curve. Each step below
removes one such cue from every image it is given, classically, with nothing learnt or
downloaded:

    marks     pure-ink components (text, arrows, markers: cxraug.prep.ink) inpainted from their
              surroundings, and figure frames (cxraug.prep.marks.border_bands) set to black
    lungcrop  the box around the two lung fields (`lung_box`: Otsu threshold, morphological
              opening, the two largest dark regions inside the body), stretched to the
              image's side; images where no plausible pair is found keep their central 80 %
    clahe     contrast-limited adaptive histogram equalisation (clip 2, 8 x 8 tiles)
    histeq    the histogram matched to a fixed reference profile: flat over 0..255

Whatever the order asked, they run in that order: marks are found on the original pure ink
levels, the crop is taken before the intensity is normalised over it. clahe and histeq are two
answers to one question: one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from cxraug.core.errors import vassert
from cxraug.prep.ink import ink_components
from cxraug.prep.marks import border_bands
from cxraug.prep.resize import resize

CUES: tuple[str, ...] = ("marks", "lungcrop", "clahe", "histeq")  # the order they run in
SEG_SIDE = 128  # the lung fields are found at this resolution (the box is scaled back)
LUNG_MIN_AREA = 0.02  # of the image: a smaller dark region is no lung field
LUNG_MAX_AREA = 0.35  # of the image: a larger one is the air around the body
LUNG_MARGIN = 0.05  # of the side, added around the lung fields
AIR_SHARE = 0.5  # darker than this share of the lung threshold, reached from an edge: air
FALLBACK_KEEP = 0.8  # central share kept when no lung fields are found
_K3 = np.ones((3, 3), np.uint8)


def parse_cues(text: str) -> tuple[str, ...]:
    """"none" -> (); "clahe+lungcrop" (or with commas) -> the steps in the order they run."""
    words = [w.strip() for w in text.replace(",", "+").split("+") if w.strip()]
    if words in ([], ["none"]):
        return ()
    bad = [w for w in words if w not in CUES]
    vassert(not bad, f"--cues {text!r}: unknown step(s) {', '.join(bad)}; use none or steps "
            f"joined by '+' from {', '.join(CUES)} (e.g. marks+lungcrop+clahe)")  # fmt: skip
    vassert(not {"clahe", "histeq"} <= set(words), f"--cues {text!r}: clahe and histeq both "
            "normalise the intensity; choose one")  # fmt: skip
    return tuple(c for c in CUES if c in words)


@dataclass
class CueFacts:
    """What the steps did, counted over the images they saw."""

    images: int = 0
    marked: int = 0  # images where marks or frames were masked
    masked_share: float = 0.0  # mean share of the pixels masked
    lung_fallback: int = 0  # images cropped to the centre: no lung fields found
    steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "images": self.images, "marked_images": self.marked,
                "mean_masked_share": round(self.masked_share / max(self.images, 1), 5),
                "lung_crop_fallbacks": self.lung_fallback}  # fmt: skip


def remove_cues(x: np.ndarray, steps: tuple[str, ...], facts: CueFacts) -> np.ndarray:
    """(N, H, W) float in [-1, 1] -> the same shape with `steps` applied to every image."""
    facts.steps = list(steps)
    if not steps:
        return x
    out = np.empty(x.shape, np.float32)
    for i, img in enumerate(x):
        g = np.clip(np.rint((img + 1.0) * 127.5), 0, 255).astype(np.uint8)  # (H, W)
        facts.images += 1
        if "marks" in steps:
            g, share = mask_marks(g)
            facts.marked += share > 0
            facts.masked_share += share
        if "lungcrop" in steps:
            box = lung_box(g)
            facts.lung_fallback += box is None
            g = crop_to(g, box)
        if "clahe" in steps:
            g = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(g)
        if "histeq" in steps:
            g = cv2.equalizeHist(g)  # the CDF mapped onto the flat profile's
        out[i] = g.astype(np.float32) / 127.5 - 1.0
    return out


def mask_marks(g: np.ndarray) -> tuple[np.ndarray, float]:
    """Inpaint every pure-ink component (grown by 1 px, so that its anti-aliased rim goes
    too) from its surroundings and set non-black frames to black, the colour most
    radiographs' own padding has; returns the image and the share of its pixels masked."""
    h, w = g.shape
    mask: np.ndarray = np.zeros((h, w), np.uint8)
    for k in ink_components(g):
        mask[k.y : k.y + k.h, k.x : k.x + k.w] |= k.mask.astype(np.uint8)
    out: np.ndarray = g
    if mask.any():
        mask = cv2.dilate(mask, _K3)
        out = cv2.inpaint(g, mask, 3, cv2.INPAINT_TELEA)
    top, bottom, left, right = border_bands(g)
    frame = np.zeros((h, w), bool)
    frame[:top], frame[h - bottom :], frame[:, :left], frame[:, w - right :] = (True,) * 4
    if frame.any():
        out = out.copy()
        out[frame] = 0
    return out, float(np.count_nonzero(mask.astype(bool) | frame)) / (h * w)


def lung_box(g: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) around the two lung fields of the uint8 radiograph `g`, or None.

    At SEG_SIDE px, blurred: the lower of the two thresholds that split the central 70 % of
    the image (lungs, mediastinum, soft tissue; little air outside the body, no padding) into
    three classes (`otsu3`) marks the lungs dark: two classes would put soft tissue (the
    abdomen, the body's edges) with the lungs. The air around the body (darker than
    AIR_SHARE * t and reached from an image edge) is taken out, and an opening (3 x 3, twice)
    cuts the thin dark bridges that remain.
    A lung field is a dark region of >= LUNG_MIN_AREA and <= LUNG_MAX_AREA of the image
    whose centre lies in the upper 80 % and away from the side edges (air beside the body
    lies at the edges): the largest one left of the middle and the largest one right of it,
    or one region across the middle (both lungs joined over a dark mediastinum). The box is
    their union, grown by LUNG_MARGIN on every side."""
    h, w = g.shape
    s = min(1.0, SEG_SIDE / max(h, w))
    small = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA) if s < 1 else g  # fmt: skip
    small = cv2.GaussianBlur(small, (5, 5), 0)
    sh, sw = small.shape
    t = otsu3(small[round(0.15 * sh) : round(0.85 * sh), round(0.15 * sw) : round(0.85 * sw)])
    dark: np.ndarray = (small < t).astype(np.uint8)
    n, lab = cv2.connectedComponents((small < AIR_SHARE * t).astype(np.uint8), connectivity=4)
    edge = np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    dark[np.isin(lab, edge[edge > 0])] = 0  # the air around the body, reached from an edge
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, _K3, iterations=2)
    n, _, st, cen = cv2.connectedComponentsWithStats(dark, connectivity=4)
    area = st[:, cv2.CC_STAT_AREA] / float(sh * sw)
    ok = ((area >= LUNG_MIN_AREA) & (area <= LUNG_MAX_AREA) & (cen[:, 1] <= 0.8 * sh)
          & (cen[:, 0] >= 0.08 * sw) & (cen[:, 0] <= 0.92 * sw))  # fmt: skip
    ok[0] = False  # the background label
    cand = sorted(np.nonzero(ok)[0], key=lambda j: -area[j])
    left = [j for j in cand if cen[j, 0] < sw / 2]
    right = [j for j in cand if cen[j, 0] >= sw / 2]
    across = [j for j in cand if st[j, 0] < sw / 2 < st[j, 0] + st[j, 2]]
    pick = [left[0], right[0]] if left and right else across[:1]
    if not pick:
        return None
    x0, y0 = st[pick, 0].min(), st[pick, 1].min()
    x1, y1 = (st[pick, 0] + st[pick, 2]).max(), (st[pick, 1] + st[pick, 3]).max()
    mx, my = LUNG_MARGIN * sw, LUNG_MARGIN * sh
    box = (max(0.0, x0 - mx), max(0.0, y0 - my), min(sw, x1 + mx), min(sh, y1 + my))
    if box[2] - box[0] < 0.3 * sw or box[3] - box[1] < 0.25 * sh:
        return None  # too small for two lungs: a stray dark patch
    return (int(box[0] / s), int(box[1] / s), min(w, round(box[2] / s)), min(h, round(box[3] / s)))


def otsu3(g: np.ndarray) -> int:
    """The lower threshold t1 of Otsu's method with three classes on uint8 pixels: the pair
    t1 < t2 that maximises the between-class variance sum_c w_c mu_c^2 of the classes
    [0, t1), [t1, t2), [t2, 256) (an exhaustive search over the histogram's 256 levels)."""
    p = np.bincount(g.ravel(), minlength=256).astype(np.float64) / g.size  # (256,)
    w = np.r_[0.0, np.cumsum(p)]  # w[i] = share of the levels < i
    m = np.r_[0.0, np.cumsum(p * np.arange(256))]  # their first moment
    a, b = np.arange(1, 256)[:, None], np.arange(1, 256)[None, :]  # t1, t2
    parts = ((w[a], m[a]), (w[b] - w[a], m[b] - m[a]), (1.0 - w[b], m[256] - m[b]))
    with np.errstate(divide="ignore", invalid="ignore"):
        var = sum(mu**2 / wt for wt, mu in parts)  # (255, 255), up to a constant
    var = np.where(np.isfinite(var) & (b > a), var, -1.0)
    return int(a[np.unravel_index(int(np.argmax(var)), var.shape)[0], 0])


def crop_to(g: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """`g` cut to `box` (None: its central FALLBACK_KEEP) and stretched back to its shape."""
    h, w = g.shape
    if box is None:
        m = (1 - FALLBACK_KEEP) / 2
        box = (round(m * w), round(m * h), round((1 - m) * w), round((1 - m) * h))
    x0, y0, x1, y1 = box
    return resize(g[y0:y1, x0:x1], w, h)  # the one resize rule (prep/resize)
