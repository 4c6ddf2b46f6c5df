"""Intensity matching (`cxraug generate --match-intensity`): each generated image's grey levels
are mapped onto those of the real training image of its class whose grey-level distribution is
nearest to its own.

Why: the generated sets are lower in contrast than the real X-rays they learnt from (on the
56 px cascade: grey-level std 40 against 46 on 0-255, some images washed out to grey), and the
C2ST's detail and texture blocks read a flat image as a soft one. The generator learns the
shapes; how an X-ray's grey levels are spread (exposure, windowing, the detector's curve) is
what a GAN trained for minutes on a few hundred images under-spreads. Matching the histogram to
a real image's is the classic fix for that spread alone (histogram specification, Gonzalez &
Woods ch. 3; Nyul & Udupa 1999 for intensity standardisation of medical images): it moves no
shape and copies no pixel.

Why the NEAREST real distribution and not any real image's: a histogram belongs to a layout. A
generated image matched to an arbitrary real image's histogram gets grey levels that do not fit
its layout (its darkest pixels, say lung, take the reference's darkest, say the air outside the
body, and turn black), which the eye sees as black blotches and blown-out bodies and the C2ST's
pixels block as a new difference; the nearest distribution corrects the spread with the least
change (bench/RESULTS.md "Intensity matching", session 23: both measured, by eye and judges).
Distance: the mean squared difference of the two images' quantiles at the LEVELS probabilities,
i.e. the squared 2-Wasserstein distance between their grey-level distributions (for 1-D
distributions it is the L2 distance between quantile functions); ties go to the first
reference.

The mapping (`match`), per image x (H, W) in [-1, 1] with n pixels, and reference quantiles
r_0..r_L at the probabilities p_j = j / L (L = LEVELS - 1):
    F(v) = (#{x < v} + (#{x = v} - 1) / 2) / (n - 1)   # the image's own empirical CDF at each
                                                     # grey level, ties at their mid-rank
    out = R(F(x)),  R(p) = interp(p; p_j -> r_j)       # the reference's quantile function
The mapping is monotone (the order of the pixels is kept; equal pixels stay equal), and for an
image without ties out's quantile p_j is r_j. LEVELS = 257 (every 1/256): finer than the 8-bit
PNG the image is written as (tested against the definition in tests/test_intensity.py).

References are the run's training images of the class (cxraug.gan.trainset.training_set: the
train split, marked images left out as the run left them, the run's --cues applied). The choice
depends on the image alone, so image i does not depend on -n or the batch size.
"""

from __future__ import annotations

import numpy as np

from cxraug.core.errors import vassert

#: Quantile levels of the mapping: every 1/256 from 0 to 1.
LEVELS = 257


def probabilities() -> np.ndarray:
    """(LEVELS,) the probabilities p_j = j / (LEVELS - 1)."""
    return np.linspace(0.0, 1.0, LEVELS)


def quantiles(images: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, LEVELS) each image's grey-level quantiles at `probabilities` (float64)."""
    flat = np.asarray(images, np.float64).reshape(len(images), -1)
    return np.quantile(flat, probabilities(), axis=1).T


def nearest(own: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """own (B, LEVELS), refs (N, LEVELS) quantiles -> (B,) the index of each image's nearest
    reference: least mean squared quantile difference (the squared 2-Wasserstein distance of
    the grey-level distributions); the first on a tie."""
    vassert(len(refs) > 0, "intensity matching needs at least one reference image")
    d = (own**2).sum(1)[:, None] - 2 * own @ refs.T + (refs**2).sum(1)[None]  # (B, N)
    return np.argmin(d, axis=1)


def match(images: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """images (B, H, W) in [-1, 1], refs (B, LEVELS) quantiles -> (B, H, W) float32, each image
    mapped onto its reference's quantiles (module docstring), clipped to [-1, 1]."""
    vassert(refs.shape == (len(images), LEVELS),
            f"refs must be ({len(images)}, {LEVELS}), got {refs.shape}")  # fmt: skip
    out = np.empty(np.shape(images), np.float32)
    p = probabilities()
    for k, (x, r) in enumerate(zip(images, refs, strict=True)):
        _, inverse, counts = np.unique(np.asarray(x).ravel(), return_inverse=True,
                                       return_counts=True)  # fmt: skip
        below = np.cumsum(counts) - counts  # pixels darker than each grey level
        cdf = (below + (counts - 1) / 2) / max(1, x.size - 1)  # mid-rank of each level
        out[k] = np.interp(cdf, p, r)[inverse].reshape(np.shape(x))
    return np.clip(out, -1.0, 1.0)
