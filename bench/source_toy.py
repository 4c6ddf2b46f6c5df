"""Toy measurement of source conditioning (`train --condition class,source`): does a source's
look reach the class x source cells never trained on? (docs/training.md "Source conditioning")

Phantoms (cxraug.prep.phantom) at 16 px, 16 per cell; two burned-in marks stand for two
hospitals' looks: source b's images have their top-left 4 x 4 pixels white ("B mark"), and in
the `confounded` layout source a's have the bottom-right 4 x 4 white ("A mark"). Layouts:
    mixed       a: normal + covid; b: normal                      (covid/b never trained on)
    confounded  a: covid only (A mark); b: normal (B mark); c: normal  (the shared data's
                layout: every source holds one class; covid/b, covid/c, normal/a unseen)
For each seed: the tests' tiny conv run (tests/test_source_condition.py TOY_RUN, without
scoring), then 32 generated images per class x source cell; printed: the mean of each mark's
pixels (-1 black .. 1 white) per cell, real and generated.

Usage: .venv/bin/python bench/source_toy.py [--seeds 0,1,2,3] [--iterations 600]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.images import read_gray_u8
from cxraug.core.manifest import Manifest, Record, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.gan.config import recipe_config
from cxraug.generate import GenerateConfig, generate
from cxraug.prep.phantom import make_phantom
from cxraug.train import train

SIZE, M = 16, 4
MARKS = {"B": (slice(0, M), slice(0, M)), "A": (slice(SIZE - M, SIZE), slice(SIZE - M, SIZE))}
LAYOUTS = {
    "mixed": ((("normal", "a"), ("covid", "a"), ("normal", "b")), {"b": "B"}),
    "confounded": ((("covid", "a"), ("normal", "b"), ("normal", "c")), {"a": "A", "b": "B"}),
}
RUN = dict(arch="conv", image_size=SIZE, latent_dim=16, conv_g_channels=(32, 16, 8),
           conv_d_channels=(8, 16), batch_size=16, lr=1e-3, beta_1=0.5, mixed_precision="none",
           noise_iterations=0, noise_start=0.0, conv_upsample="resize", diversity=1.0,
           samples_per_class=2, condition="class,source")  # fmt: skip


def workspace(root: Path, layout: str) -> tuple[Workspace, dict[str, np.ndarray]]:
    """The layout's dataset and manifest; returns the real images per cell too."""
    cells, marked = LAYOUTS[layout]
    rng = np.random.default_rng(0)
    imgs, recs, real = [], [], {}
    for label, src in cells:
        block = []
        for i in range(16):
            im = make_phantom(rng, label, (SIZE, SIZE)).astype(np.float32) / 127.5 - 1.0
            if src in marked:
                im[MARKS[marked[src]]] = 1.0
            block.append(im)
            recs.append(Record(id=f"{src}/{label}{i}", path=f"{src}/{label}{i}.png", label=label,
                               split="train", source=src))  # fmt: skip
        imgs += block
        real[f"{label}/{src}"] = np.stack(block)
    labels = np.array([0 if r.label == "normal" else 1 for r in recs])
    save_dataset(root / "processed" / "dataset.npz",
                 Dataset(np.stack(imgs), labels, np.array([r.id for r in recs]),
                         np.array(["train"] * len(recs))))  # fmt: skip
    write_manifest(root / "manifest.csv", Manifest(recs))
    return Workspace.at(root), real


def generated(ws: Workspace, sources: list[str]) -> dict[str, np.ndarray]:
    """32 images per class x source cell, [-1, 1], keyed 'class/source'."""
    out = {}
    for label in ("normal", "covid"):
        generate(ws, GenerateConfig(label=label, n=32 * len(sources), source="all"))
        for src in sources:
            rows = [r for r in ws.load_manifest()
                    if r.synthetic and r.label == label and r.cond_source == src]  # fmt: skip
            out[f"{label}/{src}"] = np.stack(
                [read_gray_u8(r.resolve(ws.root)).astype(np.float32) / 127.5 - 1 for r in rows])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--iterations", type=int, default=600)
    args = ap.parse_args()
    for layout, (cells, _) in LAYOUTS.items():
        sources = sorted({s for _, s in cells})
        print(f"\n## {layout}: trained cells {', '.join(f'{c}/{s}' for c, s in cells)}")
        print("| seed | cell | B mark real | B mark gen | A mark real | A mark gen |")
        print("|---|---|---|---|---|---|")
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                ws, real = workspace(Path(tmp), layout)
                it = args.iterations
                cfg = recipe_config("paper", **RUN, seed=seed, iterations=it,
                                    checkpoint_interval=it, sample_interval=it)  # fmt: skip
                train(ws, cfg, name="toy", quiet=True)
                gen = generated(ws, sources)
            for cell, x in gen.items():
                r = real.get(cell)
                show = [f"{float(v[(slice(None), *MARKS[k])].mean()):+.2f}" if v is not None
                        else "-" for k in ("B", "A") for v in (r, x)]  # fmt: skip
                print(f"| {seed} | {cell}{'' if r is not None else ' (unseen)'} | "
                      + " | ".join(show) + " |")


if __name__ == "__main__":
    main()
