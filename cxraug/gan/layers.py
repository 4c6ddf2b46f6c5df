"""What every architecture's networks share (cxraug.gan.mlp, cxraug.gan.conv): the Keras dtype
policy of a resolved precision, seeded initializers and the parameter count. This module knows
nothing about files.
"""

from __future__ import annotations

from typing import Any

from cxraug.core.tf_setup import keras, tf
from cxraug.gan.config import TrainConfig

POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def dtype_policy(cfg: TrainConfig) -> str:
    """The Keras dtype policy of a config whose precision is resolved (not "auto")."""
    if cfg.mixed_precision not in POLICIES:
        raise ValueError(f"mixed_precision={cfg.mixed_precision!r} is not resolved; build the "
                         "networks from a run's state (cxraug.gan.step.build_state) or "
                         "resolve it with cxraug.gan.hardware.resolve_precision")  # fmt: skip
    return POLICIES[cfg.mixed_precision]


class SeededInit:
    """Seeded initializers (Keras defaults: Glorot-uniform kernels, U(-0.05, 0.05) embeddings):
    the same --seed gives the same initial weights, with no global seeding."""

    def __init__(self, seed: int, stream: int) -> None:
        self.base, self.k = seed * 1_000 + stream * 100, 0

    def _next(self) -> int:
        self.k += 1
        return self.base + self.k

    def glorot(self) -> Any:
        return keras.initializers.GlorotUniform(seed=self._next())

    def embed(self) -> Any:
        return keras.initializers.RandomUniform(-0.05, 0.05, seed=self._next())


def param_count(model: keras.Model) -> int:
    return int(sum(int(tf.size(v)) for v in model.trainable_variables))
