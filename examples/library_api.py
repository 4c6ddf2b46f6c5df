"""Use cxraug as a library (no CLI): the same stages, called as Python functions.

    python examples/library_api.py [WORKSPACE]

Builds a tiny workspace of SYNTHETIC phantoms (not real patients), then collect -> preprocess
-> a very short training run -> generate -> filter -> FID on in-memory arrays with the
random-feature extractor (an offline smoke test: NOT a standard FID). Every stage takes a
frozen config dataclass whose defaults are the ones `cxraug STAGE --help` shows.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from cxraug.collect import CollectConfig, collect
from cxraug.core.dataset import load_dataset
from cxraug.core.images import read_gray_u8, to_uint8
from cxraug.core.workspace import Workspace
from cxraug.fid import FidConfig, fid_from_arrays
from cxraug.filter import FilterConfig, filter_synthetic
from cxraug.generate import GenerateConfig, generate
from cxraug.prep.phantom import write_phantom_folder
from cxraug.preprocess import PreprocessConfig, preprocess
from cxraug.train import recipe_config, train


def main(root: Path) -> None:
    ws = Workspace.at(root)
    raw = write_phantom_folder(ws.root / "phantoms", n_covid=30, n_normal=60, seed=1)

    res = collect(ws, [f"folder:{raw}"], CollectConfig(seed=1, show_progress=False))
    print(f"collect: {res.status_counts()} -> {res.manifest_path}")
    preprocess(ws, PreprocessConfig(size=64), show_progress=False)  # 64 px: a fast toy run
    ds = load_dataset(ws.dataset_path)
    print(f"dataset: {ds.images.shape} in [{ds.images.min():.2f}, {ds.images.max():.2f}]",
          ds.counts())  # fmt: skip

    # `TrainConfig()` (and `train(ws)`) is the default recipe, conv, as `cxraug train --help`
    # shows; this toy run asks for the paper's recipe by name (Table 2: `--recipe paper`),
    # with small widths. image_size and num_classes are the dataset's.
    # (`resume(ws, "lib", iterations=100)` would continue this run from its last checkpoint.)
    cfg = recipe_config("paper", iterations=50, batch_size=16, g_widths=(32, 64),
                        d_widths=(64, 64, 64), sample_interval=25, checkpoint_interval=25,
                        seed=1)  # fmt: skip
    train(ws, cfg, name="lib", quiet=True)
    gen = generate(ws, GenerateConfig(label="covid", balance=True, run="lib", seed=1))
    print(gen.message)

    verdict = filter_synthetic(ws, FilterConfig(label="covid"))
    print(f"filter: kept {verdict.kept} of {len(verdict.decisions)}")

    real = to_uint8(load_dataset(ws.dataset_path).subset(split="test", label="covid").images)
    fake = np.stack([read_gray_u8(p) for p in gen.paths])
    report = fid_from_arrays(real, fake, FidConfig(features="random", kid_subsets=10))
    print(f"FID {report.fid:.2f} (N_real={report.n_real}, N_fake={report.n_fake}; "
          f"extractor {report.extractor}: standard={report.standard})")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as d:
            main(Path(d))
