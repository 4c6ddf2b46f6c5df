"""cxraug: grow the scarce class of a chest X-ray dataset with a conditional GAN.

Pipeline (one module per stage, its machinery in a folder; docs/architecture.md):
sources -> collect -> manifest.csv -> preprocess -> processed/dataset.npz -> train -> runs/NAME
-> generate -> synthetic/ PNGs + manifest rows -> filter -> manifest statuses -> fid -> report;
evaluate -> does it help a classifier (evaluations/NAME).

Stage functions live in their stage modules (`cxraug.train.train`, `cxraug.fid.run_fid`, ...);
the configs and library entry points below are also importable from `cxraug` itself (loaded on
first use, so `import cxraug` stays light).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CollectConfig": "cxraug.collect",
    "PreprocessConfig": "cxraug.preprocess",
    "TrainConfig": "cxraug.gan.config",
    "resume": "cxraug.train",
    "GenerateConfig": "cxraug.generate",
    "FilterConfig": "cxraug.quality.decide",
    "filter_synthetic": "cxraug.filter",
    "filter_folder": "cxraug.filter",
    "FidConfig": "cxraug.fid",
    "fid_from_arrays": "cxraug.fid",
    "run_fid": "cxraug.fid",
    "EvaluateConfig": "cxraug.evaluate",
    "Workspace": "cxraug.core.workspace",
    "load_dataset": "cxraug.core.dataset",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cxraug' has no attribute {name!r}")
