"""Exponential moving average of the generator's weights (Yazici et al. 2019; StyleGAN's G_ema).

After the t-th generator update (t = 1, 2, ...):

    d_t    = min(decay, (1 + t) / (10 + t))          # warm-up: 0.18, 0.25, 0.31, ... -> decay
    ema_t  = d_t * ema_{t-1} + (1 - d_t) * w_t,      ema_0 = w_0 (the initial weights)

The warm-up keeps the first samples from being dominated by the random initialisation (with
decay 0.999 and no warm-up the average would still be ~37 % init after 1,000 updates). The
average covers every generator weight, BatchNorm moving statistics included (the paper's MLP
G and `--conv-g-norm batch`); the default conv G (PixelNorm) has no batch statistics at all.
The EMA generator is what sample grids, checkpoint scores and `generate` use when
--ema-decay > 0.
"""

from __future__ import annotations

from typing import Any

from cxraug.core.tf_setup import tf


def ema_decay_at(t: Any, decay: float) -> Any:
    """d_t for update number t >= 1 (a float or a tensor)."""
    return tf.minimum(tf.cast(decay, tf.float32), (1.0 + t) / (10.0 + t))


def copy_weights(dst: Any, src: Any) -> None:
    for a, b in zip(dst.weights, src.weights, strict=True):
        a.assign(b)


def update_ema(ema: Any, gen: Any, t: Any, decay: float) -> None:
    """One EMA step after generator update number t (in-graph friendly)."""
    d = ema_decay_at(tf.cast(t, tf.float32), decay)
    for e, w in zip(ema.weights, gen.weights, strict=True):
        e.assign(d * e + (1.0 - d) * tf.cast(w, e.dtype))
