"""Per-image realism for `cxraug filter --realism`: would a linear probe tell this synthetic
image from the real training images?

Why: `filter`'s other checks test plausibility (noise from above, contrast, brightness, the
lung-field correlation with the mean real image), not realism. A `--moments 10 --detail 50`
run painted thick wavy outlines that nobody would take for a radiograph, and `filter` kept 99 %
of them (bench/RESULTS.md). The C2ST of `cxraug fid` sees such sets (AUC ~1); this check turns
the same probe into a per-image verdict.

Method (cross-fitted, so that no image is scored by a probe that saw it):
1. the probe of the C2ST (cxraug.metrics.probe: pixels, log-Laplacian detail map and detail
   quantiles at SIZE = 128 px, where blur and thin marks show (see SIZE); standardise, PCA,
   logistic regression) is fitted to tell the SYNTHETIC images from the REAL training images
   of the class, K times (K = FOLDS), each time on all but one fold of each side (folds
   drawn at random per side, seeded);
2. every image, real and synthetic, gets the out-of-fold log-odds "synthetic" of the probe
   that did not see it;
3. the threshold is the (1 - alpha) quantile of the REAL images' out-of-fold scores: a
   synthetic image scoring above what (1 - alpha) of the real images score is one the probe
   tells from real, and is rejected ("unrealistic").
Under the null (the "synthetic" images are more real images of the same kind) real and
synthetic scores are exchangeable, so about alpha of them are rejected; a set the probe
separates (AUC ~1) is rejected nearly whole. A mixed set: the probe learns what the bad
images share, and mostly those exceed the threshold. Tested on phantoms and on real X-rays
(tests/test_filter_realism.py): blurred and one-template copies are rejected, about two
thirds of marked ones, and held-out real images are kept at about 1 - alpha.

Caveats: folds are by image (the filter sees image ids, not patients), so a patient's other
images can sit in the training folds when one is scored; the real scores are then a little
lower and the check a little stricter than alpha. It judges what a linear probe on 128 px
thumbnails sees; a pass is not a proof of realism, and the eye still has the last word. The
probe learns what the synthetic set SHARES: one odd image among varied ones is no pattern
(filter's other checks reject such outliers).
"""

from __future__ import annotations

import numpy as np

from cxraug.core.errors import InputError
from cxraug.metrics.c2st import oof_scores
from cxraug.metrics.probe import block_widths, scale_features

#: Probe size (px; smaller images: their side). Measured on real COVID X-rays (one patient
#: half as the real set, the other as candidates; share rejected at alpha 0.05), 32 / 64 /
#: 128 px: untouched 0.07 / 0.04 / 0.05, blurred (sigma 2 px at 224) 0.26 / 0.70 / 0.98,
#: three thin marks 0.12 / 0.25 / 0.68, one template 1.0 at each: only 128 px sees blur
#: (measured with the one-PCA probe of 2026-12-04; at 128 px the per-block probe of
#: cxraug.metrics.probe rejects 0.06 / 1.0 / 0.64 / 1.0 of the same four sets).
SIZE = 128
#: Cross-fitting folds per side.
FOLDS = 5


def realism_scores(real_feats: np.ndarray, syn_u8: np.ndarray, size: int | None = None,
                   folds: int = FOLDS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(out-of-fold log-odds of each real image (M,), of each synthetic image (N,)): real_feats
    = `features(real_u8, size)`, syn_u8 (N, H, W) uint8 of the real images' size. Raises
    InputError when a side has fewer images than 2 x folds."""
    size = size or probe_size(syn_u8.shape)
    n_real, n_syn = len(real_feats), len(syn_u8)
    for side, n in (("real training", n_real), ("synthetic", n_syn)):
        if n < 2 * folds:
            raise InputError(f"--realism needs at least {2 * folds} {side} images of the class "
                             f"for {folds}-fold cross-fitting; there are {n}: generate or "
                             "collect more, or leave --realism off")  # fmt: skip
    rng = np.random.default_rng(seed)
    fold = np.concatenate([rng.permutation(n_real) % folds, rng.permutation(n_syn) % folds])
    x = np.concatenate([real_feats, features(syn_u8, size)])
    y = np.r_[np.zeros(n_real), np.ones(n_syn)]
    s = oof_scores(x, y, fold, block_widths(size))  # the C2ST's own cross-fitting
    return s[:n_real], s[n_real:]


def probe_size(shape: tuple[int, ...]) -> int:
    """The probe's size for images of (H, W): SIZE, or the smaller side when below it."""
    return min(SIZE, *(int(v) for v in shape[-2:]))


def features(images_u8: np.ndarray, size: int | None = None) -> np.ndarray:
    """(N, H, W) uint8 -> (N, D) the probe's features at `size` px (default `probe_size`)."""
    return scale_features(list(images_u8), size or probe_size(images_u8.shape))


def threshold(real_scores: np.ndarray, alpha: float) -> float:
    """The (1 - alpha) quantile of the real images' out-of-fold scores."""
    return float(np.quantile(real_scores, 1.0 - alpha))
