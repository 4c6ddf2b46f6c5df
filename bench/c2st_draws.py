"""How far one C2ST judgement moves with the draw of generated images and the folds, and what
keeping the images the run's own discriminator ranks most real does (bench/RESULTS.md, "The
recipe at seed 1 on this machine, how far the 32 px score moves with the draw, ...").

In a scratch workspace under --root (a copy of --data's manifest, links to its processed/ and
runs/, so --data gets no rows) it runs the real CLI once:

    cxraug generate --class covid -n DRAWS*N --run RUN --seed S [--match-intensity] [--z-scale Z]

then judges, with the C2ST `fid` uses (cxraug.metrics.c2st, patient groups on the real side),
against the HELD-OUT real COVID images (split=test) of --data:
  1. DRAWS disjoint sets of N images (images 0..N-1 are what `generate --balance` writes when
     N is the balance count), fold seed 0, and the first set at fold seeds 0..FOLD_SEEDS-1;
  2. with --rank-by-d: images 0..N-1 against the N the run's D (its best checkpoint, the
     class's label, inference mode) scores highest and the N it scores lowest, each set also
     against the clean TRAINING COVID images (which D has seen: a check, not a judge).
Discriminator rejection sampling (Azadi et al. 2019) in its hard-threshold form; the kept
fraction 1/DRAWS is fixed, not tuned. Nothing here chooses a setting on the held-out images.

Usage: .venv/bin/python bench/c2st_draws.py --data WS --root OUT --run RUN [--seed S]
       [--n 655] [--draws 4] [--fold-seeds 4] [--sizes 32,128] [--match-intensity]
       [--z-scale Z] [--rank-by-d]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cxraug.core.images import to_uint8  # noqa: E402
from cxraug.core.manifest import LABELS  # noqa: E402
from cxraug.core.workspace import Workspace  # noqa: E402
from cxraug.metrics.c2st import c2st  # noqa: E402

LABEL = "covid"


def scratch_workspace(data: Path, root: Path) -> Workspace:
    """A fresh workspace under `root` that shares --data's processed array and runs."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copy2(data / "manifest.csv", root / "manifest.csv")
    for sub in ("processed", "runs"):
        (root / sub).symlink_to((data / sub).resolve())
    return Workspace.at(root)


def real_sets(ws: Workspace) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    """The held-out COVID images and the clean training ones (uint8), with patient groups."""
    z = np.load(ws.dataset_path)
    pid = {r.id: r.patient_id for r in ws.load_manifest().records}
    covid = z["labels"] == LABELS.index(LABEL)
    out = {}
    for name, mask in (("held-out", covid & (z["splits"] == "test")),
                       ("training", covid & (z["splits"] == "train") & (z["marks"] == ""))):
        ids = z["ids"][mask]
        out[name] = (list(to_uint8(z["images"][mask])),
                     [pid.get(str(i)) or str(i) for i in ids])  # fmt: skip
    return out


def d_scores(ws: Workspace, run: str, seed: int, n: int, z_scale: float) -> np.ndarray:
    """The run's D logit for G's output of each image 0..n-1 (the latents `generate` uses)."""
    from cxraug.core.tf_setup import tf
    from cxraug.gan.arch import build_models
    from cxraug.gan.checkpoint import assign_generator, assign_group, choose_checkpoint
    from cxraug.generate import latent

    _, ck = choose_checkpoint(ws, run, None)
    cfg = ck.config
    # a class,source run's D reads a (class, source) cell, not the class: refuse, not guess
    if cfg.condition != "class":
        raise SystemExit(f"--rank-by-d needs a run conditioned on the class alone; {run} is "
                         f"conditioned on {cfg.condition!r}: leave --rank-by-d out")
    g, d = build_models(cfg)
    assign_generator(g, ck)  # the EMA generator, as `generate` loads it
    assign_group(d.weights, ck.arrays, ck.meta["names"], "d", ck.path.name)
    out = np.zeros(n)
    for lo in range(0, n, 64):
        hi = min(n, lo + 64)
        z = z_scale * np.stack([latent(seed, i, cfg.latent_dim) for i in range(lo, hi)])
        y = tf.fill((hi - lo,), LABELS.index(LABEL))
        x = g([tf.constant(z, tf.float32), y], training=False)
        out[lo:hi] = tf.reshape(d([x, y], training=False), (-1,)).numpy()
    return out


def judge(real: tuple[list[np.ndarray], list[str]], fake: list[np.ndarray],
          sizes: list[int], seed: int) -> list[Any]:  # fmt: skip
    return c2st(real[0], fake, sizes, real_groups=real[1], seed=seed)


def row(name: str, res: list[Any]) -> str:
    return f"| {name} | " + " / ".join(f"{r.auc:.3f}" for r in res) + \
        f" | [{res[0].ci[0]:.2f}, {res[0].ci[1]:.2f}] |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="workspace after preprocess + train")
    ap.add_argument("--root", type=Path, required=True, help="scratch folder (replaced)")
    ap.add_argument("--run", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=655)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--fold-seeds", type=int, default=4)
    ap.add_argument("--sizes", default="32,128")
    ap.add_argument("--match-intensity", action="store_true")
    ap.add_argument("--z-scale", type=float, default=1.0)
    ap.add_argument("--rank-by-d", action="store_true")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    ws = scratch_workspace(a.data, a.root)
    total = a.draws * a.n
    cmd = [str(Path(sys.executable).parent / "cxraug"), "generate", "-w", str(ws.root),
           "--class", LABEL, "-n", str(total), "--run", a.run, "--seed", str(a.seed),
           "--z-scale", str(a.z_scale), "--json"]  # fmt: skip
    if a.match_intensity:
        cmd.append("--match-intensity")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    import cv2

    names = sorted(p for p in ws.synthetic_class_dir(LABEL).glob("*.png"))
    assert len(names) == total, f"expected {total} images, found {len(names)}"
    fake: list[np.ndarray] = []  # images 0..total-1
    for p in names:
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        assert im is not None, f"cannot read {p}"
        fake.append(im)
    real = real_sets(Workspace.at(a.data))
    print(f"run {a.run}, generate --seed {a.seed} --z-scale {a.z_scale}"
          f"{' --match-intensity' if a.match_intensity else ''}; {len(real['held-out'][0])} "
          f"held-out real; sizes {sizes}\n")  # fmt: skip
    head = "| set | C2ST " + " / ".join(map(str, sizes)) + f" | 95 % CI at {sizes[0]} |"
    print(head + "\n|---|---|---|")
    aucs = []
    for k in range(a.draws):
        for s in range(a.fold_seeds) if k == 0 else [0]:
            res = judge(real["held-out"], fake[k * a.n:(k + 1) * a.n], sizes, s)
            aucs.append([r.auc for r in res])
            print(row(f"images {k * a.n}-{(k + 1) * a.n - 1}, fold seed {s}", res), flush=True)
    arr = np.array(aucs)
    print("| mean (sd; range) | " + " / ".join(
        f"{m:.3f} ({sd:.3f}; {lo:.3f}-{hi:.3f})" for m, sd, lo, hi in
        zip(arr.mean(0), arr.std(0, ddof=1), arr.min(0), arr.max(0), strict=True)) + " | |")
    if not a.rank_by_d:
        return
    order = np.argsort(-d_scores(ws, a.run, a.seed, total, a.z_scale))
    print(f"\nselection by the run's D (kept 1 in {a.draws}); held-out, then training side\n")
    print(head + "\n|---|---|---|")
    for name, idx in (("images 0..N-1", np.arange(a.n)), ("D's top N", order[:a.n]),
                      ("D's bottom N", order[-a.n:])):  # fmt: skip
        chosen = [fake[i] for i in idx]
        print(row(name + ", held-out", judge(real["held-out"], chosen, sizes, 0)))
        print(row(name + ", training", judge(real["training"], chosen, sizes, 0)), flush=True)


if __name__ == "__main__":
    main()
