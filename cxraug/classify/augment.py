"""What an arm does to its training batches: the sampler (uniform or class-balanced) and the
classical augmentation (small rotation, shift, scale, brightness, contrast), in numpy + OpenCV.

No left-right flip by default: the heart lies on the patient's left, and a flipped chest is an
image no scanner makes (laterality matters in chest X-rays).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Classical:
    """Ranges of the classical augmentation; each image draws its own values uniformly."""

    rotate_deg: float = 7.0
    shift: float = 0.06  # share of the side
    scale: float = 0.08  # 1 +- this
    brightness: float = 0.08  # added, in the [-1, 1] pixel scale
    contrast: float = 0.12  # 1 +- this, around the image mean
    hflip: bool = False


def augment_batch(x: np.ndarray, cfg: Classical, rng: np.random.Generator) -> np.ndarray:
    """(B, S, S) float32 in [-1, 1] -> the same shape, each image moved and re-lit at random.
    Pixels uncovered by the move are filled with -1 (black), as the preprocessed borders are."""
    b, s = x.shape[0], x.shape[1]
    out = np.empty_like(x)
    ang = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, (b,))  # (B,)
    sc = rng.uniform(1 - cfg.scale, 1 + cfg.scale, (b,))
    sh = rng.uniform(-cfg.shift, cfg.shift, (b, 2)) * s  # (B, 2) pixels
    br = rng.uniform(-cfg.brightness, cfg.brightness, (b,))
    ct = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, (b,))
    flip = rng.random((b,)) < 0.5 if cfg.hflip else np.zeros(b, bool)
    c = (s - 1) / 2.0
    for i in range(b):
        m = cv2.getRotationMatrix2D((c, c), float(ang[i]), float(sc[i]))  # (2, 3)
        m[:, 2] += sh[i]
        img = cv2.warpAffine(x[i], m, (s, s), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)  # fmt: skip
        if flip[i]:
            img = img[:, ::-1]
        mu = float(img.mean())
        out[i] = (img - mu) * ct[i] + mu + br[i]
    return np.clip(out, -1.0, 1.0)


def batch_indices(labels: np.ndarray, batch: int, steps: int, balanced: bool,
                  rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(steps, batch) training indices. Uniform: epochs of shuffled indices, so every image is
    seen once per epoch. Balanced (oversampling): each image drawn with probability
    1 / (classes * its class size), so every batch holds the classes in equal shares on average."""
    n = len(labels)
    if balanced:
        counts = np.bincount(labels)
        p = 1.0 / (np.count_nonzero(counts) * counts[labels])
        return rng.choice(n, size=(steps, batch), p=p / p.sum())
    need = steps * batch
    order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
    return order[:need].reshape(steps, batch)
