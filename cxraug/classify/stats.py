"""The scoring maths of `evaluate`, in numpy: ROC AUC, a threshold fixed on validation, the
binary metrics at it, and the bootstrap over PATIENTS, paired across arms.

AUC = P(score of a random positive > score of a random negative) + 0.5 P(tie): the
Mann-Whitney U statistic over n_pos * n_neg, computed from mid-ranks:
    U = sum(ranks of the positives) - n_pos (n_pos + 1) / 2.

Bootstrap over patients: the images of one patient are not independent (same lungs, same
scanner), so the unit resampled is the patient: draw P patients with replacement, take all
their images. One list of resamples is drawn per test set and used for EVERY arm and seed, so
an arm's paired difference from "real only" is computed on the same images each time; its
percentile interval then reflects the paired, not the (wider) unpaired, uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

METRICS: tuple[str, ...] = ("auc", "balanced_accuracy", "sensitivity", "specificity")


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of `score` for binary `y` (1 = positive); nan when a class is absent."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)  # mid-ranks for ties
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    s, yy = np.asarray(score)[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp, fp = np.cumsum(yy)[last], np.cumsum(~yy)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def tpr_at(y: np.ndarray, score: np.ndarray, fpr_grid: np.ndarray) -> np.ndarray:
    """The ROC curve's TPR at each FPR of `fpr_grid` (the step curve's upper value)."""
    fpr, tpr = roc_curve(y, score)
    idx = np.searchsorted(fpr, fpr_grid, side="right") - 1
    return tpr[np.clip(idx, 0, len(tpr) - 1)]


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The threshold t (predict positive when score >= t) maximising sensitivity + specificity
    on these (validation) images; the midpoint between neighbouring scores, so that it does
    not sit on a validation image's own score."""
    y = np.asarray(y).astype(bool)
    s = np.unique(np.asarray(score, np.float64))
    if len(s) == 1 or y.all() or not y.any():
        return float(s[0]) if len(s) == 1 else 0.5
    cand = np.r_[s[0] - 1.0, (s[:-1] + s[1:]) / 2.0, s[-1] + 1.0]
    pred = np.asarray(score)[None, :] >= cand[:, None]  # (T, N)
    sens = (pred & y).sum(1) / y.sum()
    spec = (~pred & ~y).sum(1) / (~y).sum()
    return float(cand[int(np.argmax(sens + spec))])  # ties: the lowest threshold


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC, balanced accuracy, sensitivity and specificity (predict positive at >= threshold)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(score) >= threshold
    sens = float((pred & y).sum() / y.sum()) if y.any() else float("nan")
    spec = float((~pred & ~y).sum() / (~y).sum()) if (~y).any() else float("nan")
    return {"auc": auc(y, score), "balanced_accuracy": (sens + spec) / 2.0,
            "sensitivity": sens, "specificity": spec}  # fmt: skip


def patient_resamples(
    patients: Sequence[str], n: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`n` bootstrap resamples of image indices, drawn by patient with replacement: a patient
    drawn k times contributes each of its images k times (image order: by index)."""
    _, code = np.unique(np.asarray(patients, dtype=str), return_inverse=True)  # (N,) patient
    n_pat = int(code.max()) + 1 if len(code) else 0
    images = np.arange(len(code))
    out = []
    for _ in range(n):
        times = np.bincount(rng.integers(0, n_pat, n_pat), minlength=n_pat)  # (P,) draws
        out.append(np.repeat(images, times[code]))
    return out


@dataclass
class Interval:
    """A point estimate (on all test images, mean over seeds) and its 95 % percentile interval."""

    value: float
    lo: float
    hi: float
    spread: float = float("nan")  # std over seeds of the per-seed value (seed variation only)

    def to_json(self) -> dict[str, float | None]:
        def f(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 4)

        return {"value": f(self.value), "lo": f(self.lo), "hi": f(self.hi),
                "seed_std": f(self.spread)}  # fmt: skip


def _percentiles(vals: np.ndarray) -> tuple[float, float]:
    ok = vals[np.isfinite(vals)]
    if len(ok) < 0.9 * len(vals) or not len(ok):  # too many degenerate resamples: no CI
        return float("nan"), float("nan")
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return float(lo), float(hi)


def arm_metrics(
    y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, resamples: list[np.ndarray]
) -> tuple[dict[str, Interval], np.ndarray]:
    """Metrics of one arm: `scores` (S seeds, N images), one validation threshold per seed.

    Returns {metric: Interval} and the (B, M) resampled seed-mean metrics (for paired
    differences, same resamples for every arm)."""
    per_seed = np.array([[binary_metrics(y, s, t)[m] for m in METRICS]
                         for s, t in zip(scores, thresholds, strict=True)])  # (S, M)
    boot = np.array([np.mean([[binary_metrics(y[r], s[r], t)[m] for m in METRICS]
                              for s, t in zip(scores, thresholds, strict=True)], 0)
                     for r in resamples]).reshape(len(resamples), len(METRICS))  # (B, M)
    out = {}
    for k, m in enumerate(METRICS):
        lo, hi = _percentiles(boot[:, k])
        spread = float(per_seed[:, k].std(ddof=1)) if len(per_seed) > 1 else float("nan")
        out[m] = Interval(float(per_seed[:, k].mean()), lo, hi, spread)
    return out, boot


def paired_difference(
    arm: dict[str, Interval], arm_boot: np.ndarray, base: dict[str, Interval],
    base_boot: np.ndarray,
) -> dict[str, Interval]:  # fmt: skip
    """arm - base for every metric, with the percentile interval of the paired resamples."""
    out = {}
    for k, m in enumerate(METRICS):
        lo, hi = _percentiles(arm_boot[:, k] - base_boot[:, k])
        out[m] = Interval(arm[m].value - base[m].value, lo, hi)
    return out


def roc_band(
    y: np.ndarray, scores: np.ndarray, resamples: list[np.ndarray], grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed-mean TPR at each FPR of `grid`, and its 2.5 / 97.5 % bootstrap band: 3 x (G,)."""
    mean = np.mean([tpr_at(y, s, grid) for s in scores], 0)
    boot = np.array([np.mean([tpr_at(y[r], s[r], grid) for s in scores], 0) for r in resamples])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0) if len(boot) else (mean, mean)
    return mean, lo, hi


def balanced_accuracy_multiclass(y: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """Mean over the classes present in `y` of the share of their images predicted right."""
    recalls = [float((pred[y == c] == c).mean()) for c in range(classes) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")
