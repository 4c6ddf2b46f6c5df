"""Benchmark `cxraug filter`: 1,020 synthetic vs ~1,700 real 224x224 images (made-up smooth
arrays of the right shape), against a naive per-pair Python loop on a subset.

    .venv/bin/python bench/filter.py [--quick]

Rows:
  decide (in memory)     calibration on the real set + every check on every synthetic image
  filter_synthetic       end to end on a temporary workspace: PNG reading, decide, manifest
                         update, contact sheet, config JSON
  memorisation search    vectorised (candidate matmul + shift refinement) vs a naive loop that
                         shifts, downsamples and compares every (synthetic, real, shift) triple
                         in Python; per synthetic image, with the ratio, and whether both find
                         the same nearest real image.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import numpy as np

from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.images import write_png_gray
from cxraug.core.manifest import Manifest, Record
from cxraug.core.workspace import Workspace
from cxraug.filter import filter_synthetic
from cxraug.quality.decide import FilterConfig, calibrate, judge
from cxraug.quality.nearest import nearest_real, shift_grid
from cxraug.quality.scores import shifted_downsamples, unit_rows

SIZE = 224


def smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 224, 224) uint8: random 14x14 fields upsampled (smooth, all different) + mild noise."""
    out = np.empty((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        low = rng.normal(0, 1, (14, 14)).astype(np.float32)
        img = cv2.resize(low, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) * 35 + 110
        out[i] = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    return out


def naive_nearest(query: np.ndarray, real_u: np.ndarray, cfg: FilterConfig) -> tuple[int, float]:
    """The obvious implementation: for every real image and every shift, one distance (the
    real images' downsampled unit vectors `real_u` are precomputed, as in the vectorised one)."""
    shifts = shift_grid(cfg.shift_px, cfg.shift_step)
    q = unit_rows(shifted_downsamples(query[None], cfg.grid, shifts)[0])  # (S, D)
    best, best_j = np.inf, -1
    for j in range(len(real_u)):
        for s in range(len(shifts)):
            d = float(np.linalg.norm(q[s] - real_u[j]))
            if d < best:
                best, best_j = d, j
    return best_j, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 vs 340 images, 3 naive queries")
    args = ap.parse_args()
    n_syn, n_real, n_naive = (200, 340, 3) if args.quick else (1020, 1700, 10)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    real = smooth_images(rng, n_real)
    syn = smooth_images(rng, n_syn)
    print(
        f"made {n_syn} synthetic + {n_real} real {SIZE}x{SIZE} images in "
        f"{time.perf_counter() - t:.1f} s"
    )
    cfg = FilterConfig()
    ids = [f"s{i:05d}" for i in range(n_syn)]
    real_ids = [f"r{i:05d}" for i in range(n_real)]

    rows: list[tuple[str, float, str]] = []
    t = time.perf_counter()
    ev = judge(syn, ids, calibrate(real, real_ids, cfg))
    t_decide = time.perf_counter() - t
    kept = sum(d.kept for d in ev.decisions)
    rows.append(("decide (in memory)", t_decide, f"{kept}/{n_syn} kept"))

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.at(tmp)
        save_dataset(
            ws.dataset_path,
            Dataset(
                real.astype(np.float32) / 127.5 - 1,
                np.ones(n_real, np.int64),
                np.array(real_ids),
                np.array(["train"] * n_real),
            ),
        )
        recs = []
        for i, img in enumerate(syn):
            p = ws.synthetic_dir / "covid" / f"{ids[i]}.png"
            write_png_gray(p, img)
            recs.append(
                Record(id=ids[i], path=ws.relpath(p), label="covid", split="train", synthetic=True)
            )
        ws.save_manifest(Manifest(recs))
        t = time.perf_counter()
        filter_synthetic(ws, cfg, label="covid")
        rows.append(("filter_synthetic (end to end)", time.perf_counter() - t, "PNGs on disk"))

    real_u = unit_rows(shifted_downsamples(real, cfg.grid)[:, 0])
    shifts = shift_grid(cfg.shift_px, cfg.shift_step)
    t = time.perf_counter()
    nb = nearest_real(syn, real_u, grid=cfg.grid, shifts=shifts, candidates=cfg.candidates)
    t_vec = (time.perf_counter() - t) / n_syn
    t = time.perf_counter()
    naive = [naive_nearest(syn[i], real_u, cfg) for i in range(n_naive)]
    t_naive = (time.perf_counter() - t) / n_naive
    same = sum(j == nb.index[i] and abs(d - nb.dist[i]) < 1e-4 for i, (j, d) in enumerate(naive))
    rows.append(("memorisation search, vectorised", t_vec, "per synthetic image"))
    rows.append(
        ("memorisation search, naive loop", t_naive, f"per image; same answer {same}/{n_naive}")
    )

    print(f"\n{'step':34s} {'seconds':>10s}  note")
    for name, sec, note in rows:
        print(f"{name:34s} {sec:10.4f}  {note}")
    print(
        f"\nnaive / vectorised memorisation search: {t_naive / t_vec:.0f}x; naive loop for "
        f"all {n_syn} images would take ~{t_naive * n_syn:.0f} s (+ the same again to "
        f"calibrate on {n_real} real images)"
    )


if __name__ == "__main__":
    main()
