"""DiffAugment (Zhao et al. 2020) for one-channel images: differentiable, seeded transforms that
the discriminator sees on REAL and FAKE images alike, in the D step and in the G step.

    x (B, H, W, 1) in [-1, 1]  ->  T(x) (B, H, W, 1), each image with its own transform

Policies (comma-separated, applied in the order given; the reference's recommendation for a
few hundred images is `color,translation,cutout`; the conv recipe uses `cutout` alone,
measured better on chest X-rays, see bench/RESULTS.md "Ablation" and "A discriminator that
sees the layout"):
    color        brightness: x + (u - 0.5)        (u ~ U[0, 1); as the reference, on [-1, 1])
                 contrast:   (x - mean) * (0.5 + u) + mean
                 (saturation, the reference's third colour op, does nothing on one channel)
    translation  shift by up to +-1/8 of the side in each axis, zero padding
    cutout       a zero square of half the side at a random centre
All parameters are drawn from the run's tf.random.Generator, so a resumed run draws the same
transforms as an uninterrupted one. Every op is a gather, a mask or an affine map of x, so
gradients reach G through T. `strength` scales every magnitude; strength 0 is the identity.
Why: augmenting only reals teaches G the augmentation; augmenting only in the D step breaks the
game (D is trained on T(x), G judged on x). Only T applied to both, in both steps, leaves the
distribution G must match unchanged (docs/training.md).
"""

from __future__ import annotations

from typing import Any

from cxraug.core.tf_setup import tf
from cxraug.gan.config import AUGMENT_POLICIES, parse_policy

__all__ = ["AUGMENT_POLICIES", "diff_augment", "parse_policy"]

def _color(x: Any, rng: Any, strength: float) -> Any:
    b = tf.shape(x)[0]
    x = x + (rng.uniform([b, 1, 1, 1]) - 0.5) * strength
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * (1.0 + (rng.uniform([b, 1, 1, 1]) - 0.5) * strength) + mean


def _translation(x: Any, rng: Any, strength: float) -> Any:
    s = int(x.shape[1])
    shift = int(s * 0.125 * strength + 0.5)
    if shift == 0:
        return x
    t = rng.uniform([tf.shape(x)[0], 2], -shift, shift + 1, dtype=tf.int32)  # (B, 2) dy, dx
    idx = tf.range(s)[None, :]
    ry, rx = idx - t[:, :1], idx - t[:, 1:]  # (B, S): the source row / column of each output
    vy = tf.cast((ry >= 0) & (ry < s), x.dtype)  # 0 where the source is outside: zero padding
    vx = tf.cast((rx >= 0) & (rx < s), x.dtype)
    x = tf.gather(x, tf.clip_by_value(ry, 0, s - 1), axis=1, batch_dims=1)
    x = tf.gather(x, tf.clip_by_value(rx, 0, s - 1), axis=2, batch_dims=1)
    return x * vy[:, :, None, None] * vx[:, None, :, None]


def _cutout(x: Any, rng: Any, strength: float) -> Any:
    s = int(x.shape[1])
    half = int(s * 0.5 * strength + 0.5) // 2
    if half == 0:
        return x
    c = rng.uniform([tf.shape(x)[0], 2], 0, s, dtype=tf.int32)  # (B, 2) centre
    idx = tf.range(s)[None, :]
    inside = (tf.abs(idx - c[:, :1]) < half)[:, :, None] & (tf.abs(idx - c[:, 1:]) < half)[
        :, None, :
    ]  # (B, S, S)
    return x * (1.0 - tf.cast(inside, x.dtype))[..., None]


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: Any, rng: Any, policy: tuple[str, ...], strength: float = 1.0,
                 p: float = 1.0) -> Any:  # fmt: skip
    """T(x) for a batch (B, H, W, 1); independent parameters per image, drawn from `rng`.

    p < 1 applies each op to each image with probability p (StyleGAN2-ADA's augmentation
    probability), else leaves it as it is: D then also sees images as G made them, so an
    offset inside the augmentation's range is no longer nearly invisible to it (with
    translation always on, G's framing drifted by up to 1/8 of the side, bench/RESULTS.md).
    p = 1 draws no mask: the random stream is the same as before the option existed."""
    if strength <= 0 or p <= 0:
        return x
    for name in policy:
        t = _OPS[name](x, rng, strength)
        if p < 1:
            keep = rng.uniform([tf.shape(x)[0], 1, 1, 1]) < p  # (B, 1, 1, 1): apply the op
            t = tf.where(keep, t, x)
        x = t
    return x
