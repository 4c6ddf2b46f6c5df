"""Import TensorFlow through this module so the CPU fast paths are on.

oneDNN is off by default on AVX2-only CPUs; turning it on lifts the paper model's matmuls
from ~23-40 to ~110-150 GFLOP/s on our 2-core machine (docs: ../shared/docs/pitfalls.md #17).
The variables only take effect if set before TensorFlow is first imported; a user's own
setting always wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

__all__ = ["tf"]
