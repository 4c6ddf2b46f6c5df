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

The fixed-pattern term (`--fixed W`, `fixed_pattern_loss`): `cxraug fid`'s fixed-pattern judge
(cxraug.metrics.spectrum.fixed_share) on each fake batch. Fine detail d_i = x_i - G_2 x_i (the
same Gaussian, sigma FIXED_SIGMA px and OpenCV's 4-sigma kernel, as a matrix:
cxraug.gan.layers.gaussian_blurs); E = mean_i |d_i|^2, M = |mean_i d_i|^2; the loss is the
unbiased common energy (B M - E) / (B - 1) over E, E held constant for the gradient. Its
gradient on d_i is proportional to sum_{j != i} d_j (per pixel, d(B M - E)/d d_i =
2 (mean_j d_j - d_i / B)): each image's detail is pushed away from the OTHER images' detail
only, never towards less detail of its own (dividing by a live E would reward G for adding
independent grain). Why: every generated set measured carried a faint grid at fixed pixel
positions, 19-36 % of its fine detail common to all images (real X-rays 0.4-0.9 %;
bench/RESULTS.md "A judge for the grid"), and D let it pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxraug.core.tf_setup import tf
from cxraug.gan.layers import gaussian_blurs
from cxraug.gan.moments import pair_mean
from cxraug.metrics.spectrum import FIXED_SIGMA, ring_grid

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


#: OpenCV's Gaussian kernel for float images reaches 4 sigma (ksize = round(8 sigma + 1) | 1):
#: the same taps as the fid judge's cv2.GaussianBlur
FIXED_RADIUS = int(4 * FIXED_SIGMA + 0.5)


def fixed_pattern_loss(x: Any) -> Any:
    """The share of the batch's fine detail common to every image (module docstring), a scalar;
    x (B, H, W, 1) float, B >= 2."""
    b = int(x.shape[0])
    img = tf.cast(x[..., 0], tf.float32)  # (B, H, W)
    d = img - gaussian_blurs(img, [(FIXED_SIGMA, FIXED_RADIUS)])[:, 0]
    energy = tf.reduce_mean(tf.square(d))  # E: mean over images and pixels
    common = (b * tf.reduce_mean(tf.square(tf.reduce_mean(d, 0))) - energy) / (b - 1)
    return common / tf.stop_gradient(energy + 1e-12)
