"""Pure ink and its shapes: the machinery of the editorial-mark detector (cxraug.prep.marks).

Editorial graphics are drawn in pure ink: pixels at >= INK_WHITE or <= INK_BLACK (of 255).
An ink *component* (8-connected) counts when it is small (<= INK_MAX_AREA of the image) and
stands out from a ring 2-3 px around it by >= INK_CONTRAST levels. Anatomy that saturates
(bone, the abdomen, the black air around the body) fades into its surroundings or is large;
drawn marks end in a step. Sizes below are fractions of the analysis image's longest side L.

Shapes judged here: arrows (`is_arrow`: a filled arrowhead, or a shaft ending in a wider,
symmetric, pointed head, filled or open) and outlines (`is_outline`: a thin closed curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Analysis resolution: the crop's longest side is shrunk to this (never enlarged).
ANALYSIS_SIDE = 640
INK_WHITE, INK_BLACK = 235, 20  # pure ink, 8-bit levels
INK_CONTRAST = 80  # the ink threshold minus the mean of the component's 2-3 px ring
INK_MAX_AREA = 0.02  # of the image: larger pure regions are background or anatomy
EDGE_ZONE = 0.15  # of L: the margin where clinical annotations (markers, text) live
OUTLINE_MIN = 0.08  # of L: a drawn outline is at least this big (marker circles are smaller)
_K3 = np.ones((3, 3), np.uint8)
_UPRIGHT = math.cos(math.radians(15))  # an arrow this close to straight up is "upright"


@dataclass(frozen=True)
class Ink:
    """One connected component of pure ink in the analysis image."""

    x: int
    y: int
    w: int
    h: int
    area: int
    white: bool
    mask: np.ndarray  # (h, w) bool, the component inside its box

    @property
    def fill(self) -> float:
        return self.area / float(self.w * self.h)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.w, self.y + self.h


def analysis_image(gray: np.ndarray) -> np.ndarray:
    """(H, W) float [0, 1] -> uint8 with the longest side at most ANALYSIS_SIDE."""
    if gray.ndim != 2:
        raise ValueError(f"expected an (H, W) gray image, got shape {gray.shape}")
    H, W = gray.shape
    s = min(1.0, ANALYSIS_SIDE / max(H, W))
    if s < 1.0:  # INTER_AREA: pixel-area averaging keeps the core of a 2 px stroke pure
        gray = cv2.resize(gray, (max(1, round(W * s)), max(1, round(H * s))),
                          interpolation=cv2.INTER_AREA)  # fmt: skip
    return np.clip(np.rint(np.asarray(gray, np.float32) * 255.0), 0, 255).astype(np.uint8)


def ink_components(g: np.ndarray) -> list[Ink]:
    """The pure-ink components of the uint8 image `g` that stand out from their ring."""
    H, W = g.shape
    found: list[Ink] = []
    for mask, white in ((g >= INK_WHITE, True), (g <= INK_BLACK, False)):
        m8 = mask.astype(np.uint8)
        n, lab, st, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
        area = st[:, cv2.CC_STAT_AREA]
        size_ok = (area >= 6) & (area <= INK_MAX_AREA * H * W)
        size_ok[0] = False  # the background
        if not size_ok.any():
            continue
        # the ring 2-3 px outside each component, labelled with the (largest) nearby label:
        # one pass over the image instead of one dilation per component
        near = cv2.dilate(m8, _K3)
        far = cv2.dilate(lab.astype(np.float32), _K3, iterations=3)
        ring = (near == 0) & (far > 0)
        rid = far[ring].astype(np.int64)
        ring_n = np.bincount(rid, minlength=n)
        ring_mean = np.bincount(rid, weights=g[ring], minlength=n) / np.maximum(ring_n, 1)
        # contrast against the ink threshold itself: a lower bound of the ink's own contrast
        level = INK_WHITE if white else INK_BLACK
        ok = size_ok & (ring_n > 0) & (np.abs(level - ring_mean) >= INK_CONTRAST)
        for j in np.nonzero(ok)[0]:
            x, y, w, h, a = (int(v) for v in st[j])
            found.append(Ink(x, y, w, h, a, white, lab[y : y + h, x : x + w] == j))
    return found


def holes(mask: np.ndarray) -> list[np.ndarray]:
    """The regions of a component's box that are not ink and cannot be reached from outside
    it, as masks of the box, largest first: a ring encloses one, a "B" two, a plate one per
    character cut into it."""
    free = np.pad(~mask, 1, constant_values=True).astype(np.uint8)  # (h+2, w+2)
    n, lab, st, _ = cv2.connectedComponentsWithStats(free, connectivity=4)
    inner = sorted((j for j in range(1, n) if j != int(lab[0, 0])),
                   key=lambda j: -int(st[j, cv2.CC_STAT_AREA]))  # fmt: skip
    return [lab[1:-1, 1:-1] == j for j in inner]


# ---- strokes: arrows and outlines -----------------------------------------------------------


def is_arrow(k: Ink, shape: tuple[int, int]) -> bool:
    """A filled arrowhead, or an arrow: a shaft that ends in a wider, symmetric, pointed head
    (filled or open). Letters fail it: an L's foot is one-sided, a T's bar is not pointed.
    An arrow pointing straight up near an edge is the "upright" orientation marker that many
    modalities print beside the laterality marker: clinical, not editorial."""
    H, W = shape
    L = max(H, W)
    size = max(k.w, k.h)
    # not tiny (pieces of a broken-up letter, a JPEG'd "R", pass the shape tests), not a
    # piece of the image's corner (touching two edges), and without holes (ink that encloses
    # something is an outline, a plate, or the box around an arrow)
    edges = (k.x == 0) + (k.y == 0) + (k.x + k.w == W) + (k.y + k.h == H)
    if k.area < 25 or not 0.03 * L <= size <= 0.15 * L or edges >= 2 or holes(k.mask):
        return False
    pts = _points(k)
    if _arrowhead(k, pts):
        return True
    direction = _shaft_and_head(pts)
    if direction is None:
        return False
    near_edge = min(k.x, k.y, W - k.x - k.w, H - k.y - k.h) <= EDGE_ZONE * L
    return not (near_edge and -direction[1] >= _UPRIGHT)  # image y grows downwards


def _points(k: Ink) -> np.ndarray:
    ys, xs = np.nonzero(k.mask)
    return np.stack([xs, ys], axis=1).astype(np.float32)  # (N, 2): x, y


def _arrowhead(k: Ink, pts: np.ndarray) -> bool:
    """A filled triangle: squat (not a thin bar), filling >= 85 % of its smallest enclosing
    triangle and 0.38-0.75 of its box (a triangle fills 0.375-0.5 of its box before
    pixelation; an L fits a triangle too, but fills less of its box)."""
    if min(k.w, k.h) < max(4, 0.4 * max(k.w, k.h)) or not 0.38 <= k.fill <= 0.75:
        return False
    tri_area, _ = cv2.minEnclosingTriangle(pts.reshape(-1, 1, 2))
    return bool(tri_area > 0 and k.area / tri_area >= 0.85)


def _shaft_and_head(pts: np.ndarray) -> np.ndarray | None:
    """The unit vector from an arrow's tail to its tip, or None if the ink is no arrow.

    The head may be at either end of the ink's principal axis. For each end, the shaft is
    the 60 % of the ink's length away from it, and the arrow is measured along the shaft's
    own axis: a letter's foot (an L's) would otherwise tilt the axis and hide its one-sided
    spread."""
    axis = _principal_axis(pts)
    t = (pts - pts.mean(axis=0)) @ axis
    span = float(np.ptp(t))
    for sign in (1.0, -1.0):
        towards = sign * t  # grows towards the candidate head
        tail = pts[towards <= towards.min() + 0.6 * span]
        if len(tail) < 5:
            continue
        a = _principal_axis(tail)
        a = a if a @ axis * sign >= 0 else -a  # pointing towards the head
        rel = pts - tail.mean(axis=0)
        if _arrow_profile(rel @ a, rel @ np.array([-a[1], a[0]])):
            return a
    return None


def _principal_axis(pts: np.ndarray) -> np.ndarray:
    """Unit vector along which the points spread most (the major axis of their moments)."""
    centred = pts - pts.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    return np.asarray(vecs[:, 1], np.float64)  # eigenvalues ascend: the last is the major


def _arrow_profile(t: np.ndarray, u: np.ndarray) -> bool:
    """Does ink at (t along, u across) the shaft's axis end in a head at large t?"""
    length, width = float(np.ptp(t)), float(np.ptp(u))
    if width < 2 or length < 1.5 * width:
        return False
    bins = 10
    idx = np.clip(((t - t.min()) / length * bins).astype(int), 0, bins - 1)
    lo, hi = np.full(bins, np.inf), np.full(bins, -np.inf)
    np.minimum.at(lo, idx, u)
    np.maximum.at(hi, idx, u)
    if not np.isfinite(lo).all():  # a gap along the arrow: not one stroke
        return False
    e, m = hi - lo + 1.0, (hi + lo) / 2.0  # each slice's width across, and its middle
    peak = int(np.argmax(e[6:])) + 6
    shaft = e[1:5]
    # a shaft of even width (+-1 px of staircase), well narrower than the head (by 3 px at
    # least: a line's noise is no head); a wedge or a blob has no shaft
    if shaft.max() > min(2.0 * shaft.min() + 1.0, 0.6 * e[peak], e[peak] - 3.0):
        return False
    pointed = e[-1] <= 0.6 * e[peak]  # the head narrows to its tip (a T's bar does not)
    # the head spreads to both sides of the shaft (an L's foot to one side only)
    symmetric = abs(float(m[peak] - np.median(m[1:5]))) <= 0.2 * e[peak] + 0.5
    return bool(pointed and symmetric)


def is_outline(k: Ink, L: int) -> bool:
    """A thin closed curve (a drawn circle, ellipse or contour) of at least OUTLINE_MIN * L:
    the region it encloses is at least twice its own ink."""
    if max(k.w, k.h) < OUTLINE_MIN * L or k.fill > 0.35:
        return False
    return sum(int(h.sum()) for h in holes(k.mask)) >= 2 * k.area
