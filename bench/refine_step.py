"""Benchmark: one iteration of the cascade's learnt enlargement (`train --recipe cascade`'s
`--refine 3000` stage: `cxraug.gan.refine`, --enlarge 4 on 224 px images) at the run's
precision bf16 (what `train` runs on a CPU with native bf16 since 2026-12-06) against fp32
(`--mixed-precision none`, what it ran before), in the same run.

Why: in fp32 the enlargement took 34.7 of the cascade's 84.7 minutes on the 2-core CPU,
while the GAN ran in bf16 (2.3-2.4x faster than fp32 for the conv step, bench/conv_step.py).
This measures speed only; whether the bf16 enlargement is as good is measured on the real
data in bench/RESULTS.md ("A bf16 enlargement").

Each precision in its own subprocess (own peak RSS): the product's
`build_state(enlarge=4, precision=P)` (R and D_r compute in P; the residual add, the last
conv, the logits and the losses stay float32) and `make_step`, batches from the product's
`draw_batch` over `degraded` random images (64 x 224 x 224 in [-1, 1]). Median s/iteration
of N timed iterations (batch drawing included, as in `train_refiner`) after two warm-up calls.
Usage: .venv/bin/python bench/refine_step.py [--iters N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

import _parts  # bench/_parts.py: the script's folder is on sys.path

SIDE, ENLARGE, N_IMAGES = 224, 4, 64
PRECISIONS = {"fp32": "none", "bf16": "bf16"}  # row name -> the run's --mixed-precision


def part_step(iters: int, precision: str) -> dict[str, Any]:
    import math

    import numpy as np

    from cxraug.core.tf_setup import tf
    from cxraug.gan.refine import build_state, degraded, draw_batch, make_step

    images = np.random.default_rng(0).uniform(-1, 1, (N_IMAGES, SIDE, SIDE)).astype(np.float32)
    inputs = degraded(images, ENLARGE)
    state = build_state(0, SIDE, enlarge=ENLARGE, precision=PRECISIONS[precision])
    step = make_step(state)

    def one() -> list[float]:
        batch = [tf.constant(a) for a in draw_batch(state, images, inputs)]
        return [float(v) for v in step(*batch)]

    t = time.perf_counter()
    one(), one()
    compile_s = time.perf_counter() - t
    ts, finite = [], True
    for _ in range(iters):
        t = time.perf_counter()
        finite = finite and all(math.isfinite(v) for v in one())
        ts.append(time.perf_counter() - t)
    ts.sort()
    return {"s_per_it": ts[len(ts) // 2], "best": ts[0], "compile_s": compile_s,
            "iters": iters, "finite": finite, "batch": state.batch, "crop": state.crop,
            "levels": state.levels,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 20)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 2 timed iterations")
    ap.add_argument("--part", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        print(json.dumps(part_step(int(a.part[1]), a.part[0])))
        return
    n = a.iters or (2 if a.quick else 20)
    load = os.getloadavg()[0]
    res = {p: _parts.run_part(__file__, [p, str(n)]) for p in PRECISIONS}
    r0 = res["fp32"]
    print(f"machine: {os.cpu_count()} cores, load average at start {load:.2f} "
          f"(other jobs compete for the cores when > ~0.5)")
    print(f"the enlargement's step: {ENLARGE}x, {r0['levels']} levels, batch {r0['batch']}, "
          f"crops of {r0['crop']} px; {n} timed iterations after 2 warm-up calls")
    hdr = (f"{'precision':9s} {'s/it':>7s} {'best':>7s} {'vs fp32':>7s} {'3,000 it':>9s} "
           f"{'RSS GiB':>7s} {'compile s':>9s} {'finite':>6s}")  # fmt: skip
    print(f"{hdr}\n{'-' * len(hdr)}")
    for p, r in res.items():
        print(f"{p:9s} {r['s_per_it']:7.3f} {r['best']:7.3f} "
              f"{r0['s_per_it'] / r['s_per_it']:6.2f}x {3000 * r['s_per_it'] / 60:7.1f} m "
              f"{r['peak_rss_gib']:7.2f} {r['compile_s']:9.1f} {str(r['finite']):>6s}")


if __name__ == "__main__":
    main()
