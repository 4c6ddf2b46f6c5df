"""Spectrum matching (`--spectrum W`, conv G only): a G loss that pulls each label's generated
images to the radially averaged log power spectrum of that label's real training images
(the spectral regularisation of Durall et al. 2020, "Watch your up-convolution", here as a
squared distance of log spectra instead of their BCE).

Why: the conv recipe's images are soft: their energy above 1/4 Nyquist is 0.53-0.76x the real
images' (bench/RESULTS.md "Pass for real"), and D, a stack of stride-2 convolutions that sees
each image translated and cut out, lets it pass. This term names the target per frequency.
It matches the power per ring, not where the detail sits: images can reach the right spectrum
with grain instead of anatomy, which the C2ST's texture block, the sample sheets and the eye
still see.

Per image x (H, W) in [-1, 1], exactly as `cxraug fid`'s spectrum check (cxraug.metrics.
spectrum): standardised to mean 0 and std 1, multiplied by the periodic Hann window, P(f) =
|FFT|^2 / sum(w^2), averaged over the rings of |f| in (0, 0.5] cycles/px (ring k holds the
frequencies with round(2 R |f|) = k, R = H // 2 rings); the statistic is s = log(P_ring + EPS)
(R,). The target t_l is the mean of s over the label's real training images, computed with the
same function. The loss is |E s - t_l|^2 / R, estimated without bias as the mean over pairs
i != i' of fakes with the same label of (s_i - t)(s_i' - t) / R (cxraug.gan.moments.pair_mean).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxraug.core.tf_setup import tf
from cxraug.gan.moments import pair_mean
from cxraug.metrics.spectrum import ring_grid

#: Floor under a ring's power before the log: white noise of unit variance reads 1; the
#: finest rings of a smooth image hold ~1e-4, so 1e-6 is far below anything that matters.
EPS = 1e-6
#: Images per batch when computing the real targets (memory only: the result is the same).
CHUNK = 64


class SpectrumLoss:
    """The loss on a fake batch (B, H, W, 1) with labels (B,); real targets per label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_labels: int) -> None:
        h, w = int(images.shape[1]), int(images.shape[2])
        self.rings = min(h, w) // 2
        g = ring_grid(h, w, self.rings)  # the fid check's rings and window
        self.window = tf.constant(g.window, tf.float32)
        self.energy = float(g.window_energy)
        ring = g.ring.ravel()
        self.index = tf.constant(np.where(ring >= 0, ring, self.rings), tf.int32)  # spare bin
        self.count = tf.constant(np.maximum(np.bincount(ring[ring >= 0], minlength=self.rings),
                                            1), tf.float32)  # fmt: skip
        target = np.zeros((num_labels, self.rings), np.float32)
        for lab in range(num_labels):
            x = images[labels == lab]
            if len(x):
                s = [self.statistic(tf.constant(x[i : i + CHUNK, ..., None], tf.float32)).numpy()
                     for i in range(0, len(x), CHUNK)]  # fmt: skip
                target[lab] = np.concatenate(s).mean(axis=0)
        self.target = tf.constant(target)

    def statistic(self, x: Any) -> Any:
        """(B, H, W, 1) -> (B, R) log ring-averaged power of each standardised, windowed image."""
        x = tf.cast(x[..., 0], tf.float32)
        mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
        z = (x - mean) * tf.math.rsqrt(var + 1e-12) * self.window
        p = tf.square(tf.abs(tf.signal.fft2d(tf.complex(z, tf.zeros_like(z))))) / self.energy
        flat = tf.transpose(tf.reshape(p, [tf.shape(p)[0], -1]))  # (HW, B)
        ring = tf.math.unsorted_segment_sum(flat, self.index, self.rings + 1)[: self.rings]
        return tf.math.log(tf.transpose(ring) / self.count + EPS)

    def __call__(self, fake: Any, labels: Any) -> Any:
        d = (self.statistic(fake) - tf.gather(self.target, labels)) / np.sqrt(self.rings)
        return pair_mean(d, labels)
