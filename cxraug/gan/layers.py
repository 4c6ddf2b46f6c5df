"""What every architecture's networks share (cxraug.gan.mlp, cxraug.gan.conv): the Keras dtype
policy of a resolved precision, seeded initializers and the parameter count; and the Gaussian
blur as a matrix (D's detail bands, cxraug.gan.conv; the fixed-pattern term, cxraug.gan.
spectral). This module knows nothing about files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """The normalised 1-D Gaussian of `sigma` px over [-radius, radius], float64."""
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return k / k.sum()


def blur_matrix(side: int, sigma: float, radius: int) -> np.ndarray:
    """(side, side) float32 M with (M v)_i = the Gaussian of `sigma` (taps within `radius`) over
    v around i, the border reflected without repeating the edge pixel (scipy's "mirror",
    OpenCV's default): tap t of row i reads v at i + t, reflected into [0, side). A blur of an
    image X is then M_H X M_W^T: two dense matrix products, far faster on this CPU than a
    1-channel convolution (bench/d_bands.py). Needs side > radius."""
    k = gaussian_kernel(sigma, radius)
    j = np.arange(side)[:, None] + np.arange(-radius, radius + 1)[None, :]  # tap positions
    j = np.abs(j)  # reflect at 0 ...
    j = np.where(j > side - 1, 2 * (side - 1) - j, j)  # ... and at side - 1
    m = np.zeros((side, side))
    np.add.at(m, (np.repeat(np.arange(side), len(k)), j.ravel()), np.tile(k, side))
    return m.astype(np.float32)


def gaussian_blurs(img: Any, blurs: list[tuple[float, int]]) -> Any:
    """img (B, H, W) float32 -> (B, K, H, W): img blurred by each (sigma, radius) of `blurs`,
    as M_H img M_W^T (blur_matrix), all K in two matrix products. Written as einsums: a
    tf.matmul that broadcasts both operands ((1, K, H, H) @ (B, 1, H, W)) crashed this CPU
    build at small sizes (a segmentation fault at 16 px)."""
    h, w = int(img.shape[1]), int(img.shape[2])
    mh = tf.constant(np.stack([blur_matrix(h, s, r) for s, r in blurs]))  # (K, H, H)
    mw = mh if w == h else tf.constant(np.stack([blur_matrix(w, s, r) for s, r in blurs]))
    rows = tf.einsum("kij,bjl->bkil", mh, img)  # (B, K, H, W): each column blurred
    return tf.einsum("bkil,kml->bkim", rows, mw)  # ... then each row
