"""Benchmark `preprocess` on the shared chest X-rays (../shared/cxr-data, read in place).

    .venv/bin/python bench/preprocess.py [--quick] [--data PATH]

1. all covid/normal files of SOURCES.csv (~1,680; mostly <= 640 px) with 1 vs 2 workers;
2. the untouched originals/ (up to 4280 x 3520 px, 5 JPEGs) with JPEG DCT reduction on vs off.

A manifest is built over the files in a temporary workspace (no `collect` needed); images are
never copied. Prints an images/s table with ratios (markdown, for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from cxraug.core.fsutil import sha256_file
from cxraug.core.manifest import Manifest, Record, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.preprocess import PreprocessConfig, preprocess

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "cxr-data"


def build_workspace(root: Path, data: Path, rows: list[dict[str, str]]) -> Workspace:
    ws = Workspace.at(root)
    recs = [
        Record(r["path"], str(data / r["path"]), r["class"], ("train", "test")[i % 5 == 0],
               width=int(r["width"]), height=int(r["height"]),
               sha256=sha256_file(data / r["path"]))
        for i, r in enumerate(rows)
    ]  # fmt: skip
    write_manifest(ws.manifest_path, Manifest(recs))
    return ws


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the spawned workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(ws: Workspace, config: PreprocessConfig, repeats: int) -> tuple[float, float, int, int]:
    """Best of `repeats` full runs: (wall s, CPU s, images, JPEGs DCT-reduced). CPU seconds
    do not depend on other jobs competing for the cores; wall seconds do."""
    best, cpu, n, reduced = float("inf"), 0.0, 0, 0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), cpu_seconds()
        res = preprocess(ws, config, force=True, show_progress=False)
        wall = time.perf_counter() - t0  # includes pool start-up and the npz write
        if wall < best:
            best, cpu = wall, cpu_seconds() - c0
        n, reduced = res.n_images, res.reduced
        assert not res.errors, res.errors
    return best, cpu, n, reduced


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 images, one repeat")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CXRAUG_SHARED_DATA",
                                                                      DEFAULT_DATA)))  # fmt: skip
    args = ap.parse_args()
    if not (args.data / "SOURCES.csv").is_file():
        print(f"[skip] no shared data at {args.data}")
        return 0
    with open(args.data / "SOURCES.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["class"] in ("covid", "normal")]
    originals = [r for r in rows if r["path"].startswith("originals/")]
    big_jpegs = [r for r in originals if r["format"] == "JPEG"]
    if args.quick:
        rows = random.Random(0).sample(rows, 300)
    repeats = 1 if args.quick else 2

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        ws_all = build_workspace(Path(tmp) / "all", args.data, rows)
        ws_big = build_workspace(Path(tmp) / "big", args.data, big_jpegs)
        cases = [
            ("all files, 1 worker", ws_all, PreprocessConfig(workers=1), None),
            ("all files, 2 workers", ws_all, PreprocessConfig(workers=2), 0),
            ("big JPEGs, reduce off, 1 worker", ws_big,
             PreprocessConfig(workers=1, jpeg_reduce=False), None),
            ("big JPEGs, reduce on, 1 worker", ws_big, PreprocessConfig(workers=1), 2),
        ]  # fmt: skip
        results: list[float] = []
        print("| case | images | reduced | wall s | images/s | ratio | CPU s | load |")
        print("|---|---|---|---|---|---|---|---|")
        for name, ws, cfg, base in cases:
            secs, cpu, n, reduced = timed(ws, cfg, repeats if ws is ws_all else 3)
            results.append(n / secs)
            ratio = f"{results[-1] / results[base]:.2f}x" if base is not None else ""
            load = os.getloadavg()[0]  # > 0 means other jobs shared the cores
            line = (
                f"| {name} | {n} | {reduced} | {secs:.2f} | {n / secs:.1f} | {ratio} "
                f"| {cpu:.2f} | {load:.1f} |"
            )
            lines.append(line)
            print(line, flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}; best of {repeats} (all) / 3 (big JPEGs)")  # fmt: skip
    return 0


if __name__ == "__main__":  # spawned workers re-import this file: keep the run under the guard
    sys.exit(main())
