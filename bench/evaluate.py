"""Benchmark of `cxraug evaluate`: the default evaluation (the default arms, 3 seeds, the
shortcut check, every test-only source) on a prepared workspace, its wall time against the
15-minute target (issue 18), and classifier training speed (images/s) against the network's
FLOP count.

    python bench/evaluate.py WORKSPACE [--name NAME] [--quick]

WORKSPACE needs processed/dataset.npz and, for the synthetic arms, ok synthetic rows (run
`cxraug generate` and `cxraug filter` first). Writes only WORKSPACE/evaluations/NAME/.
FLOPs: 2 x multiply-adds of every convolution and the dense layer (cxraug.classify.net.
forward_flops); one training image costs ~3x a forward pass (forward + two backward GEMMs).
Results: bench/RESULTS.md (section "evaluate").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from rich.table import Table

from cxraug.core.ui import out
from cxraug.core.workspace import Workspace
from cxraug.evaluate import EvaluateConfig, evaluate, report_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--name", default="bench")
    ap.add_argument("--run", default="", help="only the synthetic rows of this run")
    ap.add_argument("--quick", action="store_true", help="1 seed, 100 steps: a smoke run")
    args = ap.parse_args()
    cfg = EvaluateConfig(run=args.run)
    if args.quick:
        cfg = dataclasses.replace(cfg, seeds=1, steps=100, bootstrap=200)
    t0 = time.perf_counter()
    result = evaluate(Workspace.at(args.workspace), cfg, name=args.name, force=True)
    wall = time.perf_counter() - t0
    for item in report_tables(result):
        out.print(item, highlight=False, soft_wrap=not isinstance(item, Table))
    sp = result.speed
    out.print(f"\nwall {wall:.0f} s ({wall / 60:.1f} min; target <= 15 min for the default); "
              f"classifier training {sp['images_per_s']} images/s x 3 x "
              f"{sp['forward_mflop_per_image']} MFLOP = {sp['train_gflop_per_s']} GFLOP/s")
    print(json.dumps({"wall_s": round(wall, 1), **sp}))


if __name__ == "__main__":
    main()
