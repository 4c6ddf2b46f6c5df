"""Ablation of the training recipes on real data: train -> generate --balance -> filter -> fid.

Each arm runs the real CLI in its own workspace under --root (a copy of the data workspace's
manifest and a link to its processed/ array, so arms never see each other's synthetic rows):

    cxraug train ARM-OPTIONS --name ARM --seed S
    cxraug generate --class covid --balance --run ARM --seed S     # the run's best checkpoint
    cxraug filter --class covid --seed S                            # default thresholds
    cxraug fid manifest:split=test,label=covid manifest:synthetic=true,label=covid,status=any
               --features random                                    # NOT a standard FID

and reports, for the COVID class against the HELD-OUT covid test split: the share `filter`
keeps, memorised and near-duplicate shares, FID (random features) and its ratio to the
real-vs-real baseline, precision/recall (k = 3) at equal N (85 synthetic per draw against the
85 test images; over all synthetic images in brackets), the pixel judges `fid` adds (C2ST AUC
at 32 and 128 px with the real-halves baseline; high-frequency and Laplacian-variance ratios),
and the training wall time.

Usage: .venv/bin/python bench/ablation.py --data WS --root OUT [--arms a,b] [--seed 0]
       [--iterations N]   (arms: see ARMS; the real data may not be copied into the repo)
       .venv/bin/python bench/ablation.py --rescore RESULT.json [...]
           re-runs only `fid` in each result's workspace (features come from its cache) and
           rewrites the result's "fid" part: for metrics added after an arm was trained
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: arm -> `cxraug train` options (on top of --iterations/--seed given to this script).
#: "conv" is the default recipe (DiffAugment cutout, flatten D head, EMA, mode seeking,
#: class-balanced batches); "conv-uniform" the default of 2026-12-05 before balanced batches;
#: "conv-sum" the default of 2026-12-02 to 12-04 (translation,cutout, D summed over
#: positions); "conv+color" the one before it (with DiffAugment's brightness/contrast). The
#: regulariser arms were measured on top of those earlier defaults, so they name them
#: explicitly; every arm measured before balanced batches keeps uniform ones (_UNI).
_UNI = ["--sampling", "uniform"]
_SUM = [*_UNI, "--conv-d-head", "sum"]
_OLD = [*_SUM, "--augment", "translation,cutout"]  # the default of 2026-12-02 to 12-04
_COLOR = [*_SUM, "--augment", "color,translation,cutout"]
ARMS: dict[str, list[str]] = {
    "paper": ["--recipe", "paper"],
    "paper+ema": ["--recipe", "paper", "--ema-decay", "0.999"],
    "paper+diffaug": ["--recipe", "paper", *_COLOR],
    "conv-plain": ["--recipe", "conv", *_SUM, "--augment", "none", "--ema-decay", "0",
                   "--diversity", "0"],
    "conv": ["--recipe", "conv"],
    "conv-sum": ["--recipe", "conv", *_OLD],
    "conv+color": ["--recipe", "conv", *_COLOR],
    "conv+color+lecam": ["--recipe", "conv", *_COLOR, "--lecam", "0.1"],
    "conv+color+sn": ["--recipe", "conv", *_COLOR, "--spectral-norm"],
    "conv+sn": ["--recipe", "conv", *_OLD, "--spectral-norm"],
    # issue 17 (pass for real): the default also sees unaugmented images half of the time
    "conv+p05": ["--recipe", "conv", *_OLD, "--augment-p", "0.5"],
    # R1 at StyleGAN2-ADA's heuristic gamma (0.0002 x 224^2 / 32), on the default
    "conv+r1": ["--recipe", "conv", "--r1", "0.3"],
    # issue 17: twice the channels at G's 56-224 px levels; StyleGAN's per-pixel noise inputs;
    # StyleGAN2's output skips; FastGAN's skip-layer excitation
    "conv+wideg": ["--recipe", "conv", *_UNI, "--conv-g-channels", "256,128,64,64,32,16"],
    "conv+noise": ["--recipe", "conv", *_UNI, "--conv-g-noise"],
    "conv+skip": ["--recipe", "conv", "--conv-g-output", "skip"],
    "conv+sle": ["--recipe", "conv", "--conv-g-sle"],
    # issue 17: a D logit per 22 px patch beside the whole-image one (PatchGAN)
    "conv+patch": ["--recipe", "conv", "--conv-d-patch", "1"],
    # issue 17: FastGAN's self-supervised D (decoders rebuild the reals from D's maps)
    "conv+recon": ["--recipe", "conv", "--conv-d-recon", "1"],
    # issue 17: D reads three detail bands beside the pixels; G pays for a grid at fixed pixels
    "conv+bands": ["--recipe", "conv", "--conv-d-input", "bands"],
    "conv+fixed": ["--recipe", "conv", "--fixed", "10"],
    # the default until session 9 (2026-12-05): batches uniform over images (COVID ~1/5)
    "conv-uniform": ["--recipe", "conv", *_UNI],
}  # fmt: skip

#: the same checkpoint choice for every arm (the conv recipe's own values), so that arms differ
#: only in what they train, not in how their checkpoint is picked
SELECT = ["--score-samples", "128", "--checkpoint-interval", "250", "--keep-checkpoints", "3"]


def cxraug(*args: str, ws: Path) -> dict:
    cmd = [sys.executable, "-m", "cxraug", *args, "-w", str(ws), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout)


def _fid(ws: Path, seed: int) -> dict:
    return cxraug("fid", "manifest:split=test,label=covid",
                  "manifest:synthetic=true,label=covid,status=any", "--features", "random",
                  "--seed", str(seed), ws=ws)  # fmt: skip


def run_arm(arm: str, data: Path, root: Path, seed: int, iterations: int | None) -> dict:
    ws = root / f"{arm}-s{seed}"
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    shutil.copy(data / "manifest.csv", ws / "manifest.csv")
    os.symlink((data / "processed").resolve(), ws / "processed")
    extra = ["--iterations", str(iterations)] if iterations else []
    t0 = time.perf_counter()
    name = arm.replace("+", "-")  # run names are plain (core/workspace.check_name)
    tr = cxraug("train", *ARMS[arm], *SELECT, *extra, "--name", name, "--seed", str(seed), "-q",
                ws=ws)  # fmt: skip
    train_s = time.perf_counter() - t0
    ge = cxraug("generate", "--class", "covid", "--balance", "--run", name, "--seed", str(seed),
                ws=ws)  # fmt: skip
    fi = cxraug("filter", "--class", "covid", "--seed", str(seed), ws=ws)
    fi.pop("decisions", None)  # per-image detail stays in the workspace's manifest
    fd = _fid(ws, seed)
    best = ws / "runs" / name / "checkpoints" / "best"
    return {"arm": arm, "seed": seed, "iterations": tr["iteration"], "train_s": train_s,
            "checkpoint": ge["checkpoint"],
            "best": json.loads(best.read_text()) if best.is_file() else None,
            "generated": ge["count"], "filter": fi, "fid": fd}  # fmt: skip


def _pr(d: dict) -> str:
    """Equal-N precision / recall, with the all-images pair in brackets; results saved before
    equal N existed show only the latter (re-score them with --rescore)."""
    every = f"({d['precision']:.2f} / {d['recall']:.2f})"
    if "recall_equal_n" not in d:
        return f"n/a {every}"
    return f"{d['precision_equal_n']:.2f} / {d['recall_equal_n']:.2f} {every}"


def rescore(path: Path) -> dict:
    r = json.loads(path.read_text())
    ws = Path(r["checkpoint"]).parents[3]  # WS/runs/NAME/checkpoints/FILE
    r["fid"] = _fid(ws, int(r["seed"]))
    path.write_text(json.dumps(r, indent=1))
    return r


HEADER = ("| arm | seed | iterations | checkpoint | kept by filter | memorised / near-dup | "
          "FID (random feat.) | vs real-real | precision / recall, equal N (all) | "
          "C2ST AUC 32 / 128 px (real halves) | hf / Laplacian ratio | train min |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def _judges(d: dict) -> tuple[str, str]:
    """The pixel judges' cells (results saved before they existed: n/a; --rescore them)."""
    by = {c["size"]: c for c in d.get("c2st", []) if c.get("auc") is not None}
    if 32 not in by:
        return "n/a", "n/a"
    big = by.get(128, by[32])
    auc = (f"{by[32]['auc']:.3f} / {big['auc']:.3f} "
           f"({by[32]['baseline_auc']:.2f} / {big['baseline_auc']:.2f})")
    sp = d.get("spectrum") or {}
    ratio = (f"{sp['hf_ratio']:.2f} / {sp['laplacian_ratio']:.2f}"
             if "hf_ratio" in sp else "n/a")  # fmt: skip
    return auc, ratio


def row(r: dict) -> str:
    f, d = r["filter"], r["fid"]
    n = max(int(f["n_synthetic"]), 1)
    kept = int(f["kept"])
    mem = f["rejected_by_reason"].get("memorised", 0)
    dup = f["rejected_by_reason"].get("near-duplicate", 0)
    ratio = d["fid"] / d["baseline_fid"] if d.get("baseline_fid") else float("nan")
    auc, spectrum = _judges(d)
    return (f"| {r['arm']} | {r['seed']} | {r['iterations']} | {Path(r['checkpoint']).name} | "
            f"{kept}/{n} ({kept / n:.0%}) | {mem / n:.1%} / {dup / n:.1%} | {d['fid']:.1f} | "
            f"{ratio:.1f}x | {_pr(d)} | {auc} | {spectrum} | "
            f"{r['train_s'] / 60:.1f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="workspace with manifest + data")
    ap.add_argument("--root", type=Path, help="where arm workspaces go")
    ap.add_argument("--rescore", type=Path, nargs="+", help="result JSONs to re-score")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=None)
    a = ap.parse_args()
    print(HEADER)
    if a.rescore:
        for path in a.rescore:
            print(row(rescore(path)), flush=True)
        return
    if a.data is None or a.root is None:
        ap.error("--data and --root are required (or --rescore)")
    for arm in a.arms.split(","):
        r = run_arm(arm, a.data, a.root, a.seed, a.iterations)
        print(row(r), flush=True)
        (a.root / f"ablation-{arm}-s{a.seed}.json").write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
