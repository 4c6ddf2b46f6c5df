"""Per-image quality scores for `cxraug filter`, and their calibration on real images.

Every score is computed on the 8-bit pixels as saved (0..255), for a stack (N, H, W) uint8:

    noise       white-noise estimate relative to contrast: std(4-neighbour Laplacian) / sqrt(20)
                / max(std(x), 1). The Laplacian of i.i.d. noise of std s has std sqrt(20) s, so
                pure noise scores 1.0 and a smooth radiograph scores a few hundredths.
    contrast    pixel standard deviation (grey levels); washed-out images score low.
    brightness  mean grey level.
    saturated   fraction of pixels at exactly 0 or 255 (clipped generator output).
    blank       fraction of pixels that share the most common grey level (1.0 = constant).
    lung        cosine similarity of the zero-mean downsampled image with the mean real image of
                the class (a lung-field plausibility check: an X-ray has dark lungs either side
                of a bright mediastinum, where the mean image has them).

The downsampled vectors that `lung` compares come from cxraug.quality.vectors.

SPECS is ordered so that a row's first reason is the most specific one (a constant image is
"blank" before it is "low contrast").

A threshold is calibrated per score from the real images: [p_lo, p_hi] percentiles widened on
each side by `margin` x (p_hi - p_lo), but by at least the score's `floor` (so a very uniform
real set does not reject everything). Only the sides listed in SPECS are checked: e.g. a very
smooth image is not "too little noise" -- GAN output is smoother than a JPEG radiograph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxraug.quality.vectors import unit_rows

NOISE_GAIN = float(np.sqrt(20.0))  # std of the 4-neighbour Laplacian of unit white noise
_CHUNK = 256  # images per vectorised chunk (bounds temporary memory to ~100 MB)


@dataclass(frozen=True)
class ScoreSpec:
    """How one score is checked: which sides, the minimum margin, and how a failure reads."""

    key_low: str | None  # reason key when below the lower threshold (None: not checked)
    key_high: str | None  # reason key when above the upper threshold
    floor: float  # minimum widening of [p_lo, p_hi], in the score's units
    text_low: str = ""
    text_high: str = ""
    fmt: str = ".3f"


SPECS: dict[str, ScoreSpec] = {
    "saturated": ScoreSpec(
        None,
        "saturated",
        floor=0.01,
        text_high="saturated (fraction {v} of pixels at 0/255 > max {t})",
    ),
    "blank": ScoreSpec(
        None,
        "blank",
        floor=0.10,  # low-contrast images concentrate levels; "blank" means a large uniform area
        text_high="blank (fraction {v} of pixels at one grey level > max {t})",
    ),
    "noise": ScoreSpec(
        None, "noise", floor=0.05, text_high="too noisy (noise ratio {v} > max {t})"
    ),
    "contrast": ScoreSpec(
        "low-contrast",
        "high-contrast",
        floor=4.0,
        fmt=".1f",
        text_low="low contrast / washed out (std {v} < min {t} grey levels)",
        text_high="extreme contrast (std {v} > max {t} grey levels)",
    ),
    "brightness": ScoreSpec(
        "dark",
        "bright",
        floor=8.0,
        fmt=".1f",
        text_low="too dark (mean {v} < min {t})",
        text_high="too bright (mean {v} > max {t})",
    ),
    "lung": ScoreSpec(
        "lung",
        None,
        floor=0.05,
        text_low="implausible lung fields (correlation with the mean real image {v} < min {t})",
    ),
}
SCORE_NAMES: tuple[str, ...] = tuple(SPECS)


def histogram_scores(stack: np.ndarray) -> dict[str, np.ndarray]:
    """(N, H, W) uint8 -> contrast, brightness, saturated, blank, each (N,) float64."""
    n = stack.shape[0]
    levels = np.arange(256, dtype=np.float64)
    hist = np.empty((n, 256), np.float64)
    for i in range(n):  # one bincount per image: ~50 us each, no (N, H*W) int copy
        hist[i] = np.bincount(stack[i].ravel(), minlength=256)
    hist /= max(stack[0].size, 1) if n else 1
    mean = hist @ levels
    var = np.maximum(hist @ (levels**2) - mean**2, 0.0)
    return {
        "contrast": np.sqrt(var),
        "brightness": mean,
        "saturated": hist[:, 0] + hist[:, 255],
        "blank": hist.max(axis=1) if n else np.zeros(0),
    }


def noise_scores(stack: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N,) white-noise std estimate / max(image std, 1)."""
    out = np.empty(stack.shape[0], np.float64)
    for s in range(0, stack.shape[0], _CHUNK):
        x = stack[s : s + _CHUNK].astype(np.float32)  # (n, H, W)
        c = x[:, 1:-1, 1:-1]
        lap = 4.0 * c - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
        sd = x.reshape(len(x), -1).std(axis=1)
        out[s : s + len(x)] = lap.reshape(len(x), -1).std(axis=1) / NOISE_GAIN / np.maximum(sd, 1)
    return out


def lung_scores(small: np.ndarray, mean_small: np.ndarray) -> np.ndarray:
    """(N, D) downsampled images, (D,) mean real image -> (N,) cosine of zero-mean versions."""
    return (unit_rows(small) @ unit_rows(mean_small[None])[0]).astype(np.float64)


def real_lung_scores(small: np.ndarray) -> np.ndarray:
    """Lung score of each real image against the mean of the *other* real images (leave one
    out, so a small reference set does not flatter itself)."""
    m = small.shape[0]
    loo_means = (small.sum(axis=0, keepdims=True) - small) / max(m - 1, 1)  # (M, D)
    return np.einsum("nd,nd->n", unit_rows(small), unit_rows(loo_means)).astype(np.float64)


def calibrate(
    real_values: np.ndarray, spec: ScoreSpec, p_lo: float, p_hi: float, margin: float
) -> tuple[float | None, float | None]:
    """(lower, upper) thresholds from real scores; None for a side that is not checked."""
    lo_p, hi_p = (float(v) for v in np.percentile(real_values, [p_lo, p_hi]))
    widen = max(margin * (hi_p - lo_p), spec.floor)
    return (lo_p - widen if spec.key_low else None, hi_p + widen if spec.key_high else None)
