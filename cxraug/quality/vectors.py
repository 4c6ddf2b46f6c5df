"""The vector maths `filter` shares between its scores and its nearest-neighbour search:
area-downsampled (optionally shifted) copies of images as flat vectors, and zero-mean unit rows.

Images (N, H, W) uint8 become (N, S, grid*grid) float32 vectors, one per shift; `unit_rows`
makes every row zero-mean and unit-norm, so a dot product is a cosine and ||a - b|| lies in
[0, 2] whatever the brightness and contrast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_CHUNK = 256  # images per vectorised chunk (bounds temporary memory to ~100 MB)


def area_matrix(size: int, grid: int) -> np.ndarray:
    """(grid, size) weights of an area (box) resize: row i averages the input pixels that
    output pixel i covers, with fractional weights at its edges (like cv2.INTER_AREA)."""
    edges = np.arange(grid + 1, dtype=np.float64) * size / grid  # output pixel edges, in px
    px = np.arange(size, dtype=np.float64)
    lo = np.maximum(edges[:-1, None], px[None, :])
    hi = np.minimum(edges[1:, None], px[None, :] + 1.0)
    w = np.clip(hi - lo, 0.0, None)  # (grid, size) overlap of output cell i with input pixel j
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def shifted_area_matrix(size: int, grid: int, shift: int) -> np.ndarray:
    """(grid, size) weights that area-resize content moved by `shift` px (edge pixels repeat):
    A @ P where P[i, clip(i - shift)] = 1, so no shifted copy of the image is ever made."""
    src = np.clip(np.arange(size) - shift, 0, size - 1)
    a = area_matrix(size, grid)  # (g, size) on the shifted image's pixels
    out = np.zeros_like(a)
    np.add.at(out.T, src, a.T)  # column i of A feeds source pixel src[i]
    return out


def shifted_downsamples(
    stack: np.ndarray, grid: int, shifts: Sequence[tuple[int, int]] = ((0, 0),)
) -> np.ndarray:
    """(N, H, W) uint8 -> (N, S, grid*grid) float32: area-averaged copies, content moved by each
    (dy, dx) shift in full-resolution pixels (edges replicated, so nothing wraps around).

    Shift and resize are one linear map per axis, Ay(dy) @ X @ Ax(dx)^T, and every distinct dy
    is stacked into one matrix: a chunk costs one large BLAS GEMM over its pixels, whatever the
    number of shifts."""
    n, h, w = stack.shape
    dys = sorted({dy for dy, _ in shifts})
    dxs = sorted({dx for _, dx in shifts})
    ay = np.concatenate([shifted_area_matrix(h, grid, d) for d in dys])  # (Y*g, H)
    ax_t = np.concatenate([shifted_area_matrix(w, grid, d) for d in dxs]).T  # (W, X*g)
    out = np.empty((n, len(shifts), grid * grid), np.float32)
    for s in range(0, n, _CHUNK):
        x = stack[s : s + _CHUNK]
        m = len(x)
        cols = x.transpose(1, 0, 2).reshape(h, m * w).astype(np.float32)  # (H, m*W)
        rows = (ay @ cols).reshape(len(dys) * grid * m, w)  # (Y*g*m, W)  [rows: dy, gy, image]
        both = (rows @ ax_t).reshape(len(dys), grid, m, len(dxs), grid)  # [dy, gy, m, dx, gx]
        both = both.transpose(2, 0, 3, 1, 4)  # (m, Y, X, g, g)
        for j, (dy, dx) in enumerate(shifts):
            out[s : s + m, j] = both[:, dys.index(dy), dxs.index(dx)].reshape(m, grid * grid)
    return out


def unit_rows(v: np.ndarray) -> np.ndarray:
    """(N, D) -> zero-mean, unit-L2 rows (float32); a constant row becomes all zeros, which is
    at distance 1 from every unit row (blank images are never anyone's near-copy)."""
    c = v - v.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    return np.where(norm > 1e-6, c / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
