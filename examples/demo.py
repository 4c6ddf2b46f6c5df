"""`make demo`: the whole cxraug pipeline, offline, on embedded SYNTHETIC phantom data.

Runs every command exactly as a user would type it (printed before it runs) in a demo
workspace: phantoms -> collect -> preprocess (suggested + sample crop boxes) -> train (a short
run of the paper's architecture at reduced width) -> generate --balance -> filter -> fid of
every generated image, kept or rejected, against the held-out real test images (random
features: an offline smoke test, NOT a standard FID; real scores need the Inception-v3
weights file). A few hundred iterations make blurry, noisy images: expect `filter` to reject
many of them. That is the filter doing its job, not a failure of the demo.

The phantoms are procedural drawings, not patients: nothing here says anything about real
chest X-rays. The demo workspace is recreated on every run (it is marked as the demo's own).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

MARKER = ".cxraug-demo"
HERE = Path(__file__).resolve().parent


def run(*args: str) -> None:
    cmd = [sys.executable, "-m", *args]
    shown = "cxraug " + shlex.join(args[1:]) if args[0] == "cxraug" else shlex.join(cmd[1:])
    print(f"\n$ {shown}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    print(f"  ({time.perf_counter() - t0:.1f} s, exit {rc})", flush=True)
    if rc not in (0,):
        sys.exit(f"demo step failed with exit code {rc}: {shown}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("demo-workspace"))
    ap.add_argument("--covid", type=int, default=40, help="covid phantoms")
    ap.add_argument("--normal", type=int, default=100, help="normal phantoms")
    ap.add_argument("--iterations", type=int, default=300, help="training iterations")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    ws: Path = a.workspace.resolve()
    if ws.exists():
        if not (ws / MARKER).is_file():
            sys.exit(f"{ws} exists and is not a demo workspace; pass another --workspace")
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    (ws / MARKER).write_text("created by examples/demo.py; recreated on every run\n")
    raw, w, seed = ws / "phantoms", str(ws), str(a.seed)
    t0 = time.perf_counter()

    print("cxraug demo on SYNTHETIC procedural chest phantoms (not real patients)")
    run("cxraug.prep.phantom", str(raw), "--covid", str(a.covid), "--normal", str(a.normal),
        "--seed", seed)  # fmt: skip
    run("cxraug", "collect", f"folder:{raw}", "-w", w, "--seed", seed)
    # The paper crops by hand: get an automatic first guess plus a contact sheet to review,
    # then apply the boxes (a person would edit boxes.csv in between; examples/crop_boxes.csv
    # shows the format with four hand-set boxes, applied on top).
    boxes = str(ws / "boxes.csv")
    run("cxraug", "preprocess", "-w", w, "--suggest-crops", boxes,
        "--contact-sheet", str(ws / "boxes.png"))  # fmt: skip
    run("cxraug", "preprocess", "-w", w, "--crop-boxes", boxes)
    run("cxraug", "preprocess", "-w", w, "--crop-boxes", str(HERE / "crop_boxes.csv"))
    # The paper's architecture at half width (the full-size model needs ~0.45 s/iteration
    # here, too slow for a demo); `cxraug train` with no width flags trains the paper's model.
    run("cxraug", "train", "-w", w, "--name", "demo", "--iterations", str(a.iterations),
        "--batch-size", str(a.batch_size), "--g-widths", "64,128,256",
        "--d-widths", "256,256,256,256", "--noise-iterations", str(a.iterations),
        "--sample-interval", "100", "--checkpoint-interval", "100", "--seed", seed)  # fmt: skip
    run("cxraug", "generate", "-w", w, "--class", "covid", "--balance", "--run", "demo",
        "--seed", seed)  # fmt: skip
    run("cxraug", "filter", "-w", w, "--class", "covid", "--seed", seed)
    run("cxraug", "fid", "manifest:split=test,label=covid",
        "manifest:synthetic=true,label=covid,status=any", "-w", w, "--features", "random",
        "--kid-subsets", "20", "--seed", seed)  # fmt: skip

    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. Look at:")
    for p in ("manifest.csv", "boxes.png", "runs/demo/samples/", "runs/demo/loss.png",
              "synthetic/covid-filter-sheet.png"):  # fmt: skip
        print(f"  {ws / p}")


if __name__ == "__main__":
    main()
