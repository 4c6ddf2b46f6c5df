"""Nearest-neighbour distances for `cxraug filter`: memorisation and near-duplicate checks.

Images are compared as zero-mean, unit-norm vectors of area-downsampled pixels (grid x grid),
so the distance d = ||a - b|| = sqrt(2 - 2 cos) lies in [0, 2] and ignores global brightness
and contrast changes. Distance matrices are one BLAS matmul per chunk (no Python pair loop).

Memorisation distance (robust to small shifts), in two stages:
1. candidates: the `k` nearest real images at zero shift (one (n, M) matmul per chunk);
2. refinement: the query is shifted by every (dy, dx) in the shift grid at full resolution,
   downsampled again, and compared with its candidates only; the smallest distance over
   shifts and candidates is the memorisation distance. A copy moved by a few pixels therefore
   scores as close as the unshifted copy.
The same function, with each real image as query and itself excluded, gives the real-vs-real
nearest-neighbour distances that calibrate the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxraug.quality.vectors import shifted_downsamples, unit_rows

_QUERY_CHUNK = 256


def shift_grid(max_px: int, step: int) -> list[tuple[int, int]]:
    """All (dy, dx) with |dy|, |dx| <= max_px in steps of `step` (always includes (0, 0))."""
    if max_px <= 0 or step <= 0:
        return [(0, 0)]
    r = list(range(-(max_px // step) * step, max_px + 1, step))
    return [(dy, dx) for dy in r for dx in r]


def distances(a_unit: np.ndarray, b_unit: np.ndarray) -> np.ndarray:
    """(Na, D), (Nb, D) unit rows -> (Na, Nb) Euclidean distances via one matmul."""
    return np.sqrt(np.maximum(2.0 - 2.0 * (a_unit @ b_unit.T), 0.0))


@dataclass(frozen=True)
class Neighbours:
    """For each query: nearest real index and distance, shift-searched and at zero shift."""

    index: np.ndarray  # (N,) int, nearest real image (shift-searched)
    dist: np.ndarray  # (N,) float, shift-searched distance
    dist0: np.ndarray  # (N,) float, zero-shift nearest distance (stage 1)


def nearest_real(
    query: np.ndarray,
    real_unit: np.ndarray,
    *,
    grid: int,
    shifts: Sequence[tuple[int, int]],
    candidates: int,
    exclude_self: bool = False,
) -> Neighbours:
    """Nearest real image of each query image (N, H, W) uint8 against real_unit (M, D).

    With exclude_self, query i is real image i and may not match itself (calibration)."""
    n, m = query.shape[0], real_unit.shape[0]
    k = max(1, min(candidates, m - (1 if exclude_self else 0)))
    idx_out = np.zeros(n, np.int64)
    d_out = np.zeros(n, np.float64)
    d0_out = np.zeros(n, np.float64)
    zero = shifts.index((0, 0)) if (0, 0) in shifts else None
    for s in range(0, n, _QUERY_CHUNK):
        q = query[s : s + _QUERY_CHUNK]
        c = len(q)
        banks = unit_rows(shifted_downsamples(q, grid, shifts))  # (c, S, D)
        base = banks[:, zero] if zero is not None else unit_rows(shifted_downsamples(q, grid)[:, 0])
        d1 = distances(base, real_unit)  # (c, M)
        if exclude_self:
            d1[np.arange(c), np.arange(s, s + c)] = np.inf
        d0_out[s : s + c] = d1.min(axis=1)
        cand = np.argpartition(d1, k - 1, axis=1)[:, :k]  # (c, k), unordered
        cos = np.einsum("csd,ckd->csk", banks, real_unit[cand])  # (c, S, k)
        best_cos = cos.max(axis=1)  # (c, k): best shift per candidate
        j = best_cos.argmax(axis=1)  # (c,)
        idx_out[s : s + c] = cand[np.arange(c), j]
        d_out[s : s + c] = np.sqrt(np.maximum(2.0 - 2.0 * best_cos[np.arange(c), j], 0.0))
    # the shifted search can only get closer than zero shift; never report it as farther
    d_out = np.minimum(d_out, d0_out)
    return Neighbours(idx_out, d_out, d0_out)


def near_duplicates(
    unit: np.ndarray, order: Sequence[int], threshold: float
) -> dict[int, tuple[int, float]]:
    """Greedy de-duplication in `order`: an image within `threshold` of an already kept image is
    a duplicate of the nearest kept one. Returns {duplicate index: (kept index, distance)}.

    Comparing with *kept* images only means a chain a~b~c with a !~ c keeps a and c."""
    if len(order) == 0:
        return {}
    d = distances(unit, unit)  # (N, N)
    kept: list[int] = []
    dups: dict[int, tuple[int, float]] = {}
    for i in order:
        if kept:
            row = d[i, kept]
            j = int(row.argmin())
            if row[j] < threshold:
                dups[i] = (kept[j], float(row[j]))
                continue
        kept.append(i)
    return dups
