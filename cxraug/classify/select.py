"""Selective synthetic augmentation (Xue et al. 2019): keep the synthetic images that a
classifier trained on real images only (the seed's `real` arm) both calls their class and
places among the real images of that class in its own features.

For a synthetic image s of class K, with p(s) the model's probability of COVID, t its
threshold fixed on validation (Youden's J, the one it is scored with) and f(.) its pooled
penultimate features:

    confident   p(s) >= t when K is the positive class (COVID), p(s) < t otherwise: the
                real-only classifier, as it is used, calls s a K image
    near        d_k(s) <= r, where d_k(x) is the distance from f(x) to its k-th nearest
                neighbour among the real fit images of class K, and r is the `quantile`
                quantile of d_k over the real TRAIN images of class K themselves (the fit
                images leaving themselves out, and the validation images): s is no farther
                from the real images than (by default) 95 % of real images are
    kept        confident and near

k = min(k, n_K - 1). The features are those of the model the arm's images are judged by; no
random or ImageNet features (an image a real-only classifier cannot place is what is left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cxraug.classify.net import Trained


@dataclass
class Selection:
    keep: np.ndarray  # (K,) bool
    confident: int
    near: int
    radius: float
    k: int
    quantile: float

    def facts(self) -> dict[str, Any]:
        return {"candidates": len(self.keep), "confident": self.confident, "near": self.near,
                "kept": int(self.keep.sum()), "radius": round(self.radius, 4), "k": self.k,
                "quantile": self.quantile}  # fmt: skip


def kth_distance(a: np.ndarray, b: np.ndarray, k: int, leave_one_out: bool = False) -> np.ndarray:
    """(A,) Euclidean distance from each row of `a` (A, F) to its k-th nearest row of `b`
    (B, F); leave_one_out: `a` is `b`, and a row is not its own neighbour."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d2 = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2.0 * a64 @ b64.T  # (A, B)
    if leave_one_out:
        np.fill_diagonal(d2, np.inf)
    return np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))


def select_synthetic(model: Trained, threshold: float, syn: np.ndarray, x: np.ndarray,
                     y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, label: int,
                     k: int = 5, quantile: float = 0.95) -> Selection:  # fmt: skip
    """Which of `syn` (K, S, S), all of class `label`, to keep (the rules above); x, y: the
    real fit images the model was trained on, x_val, y_val: its validation images."""
    if model.features is None:
        raise ValueError("the reference model exposes no features")
    if not len(syn):
        return Selection(np.zeros(0, bool), 0, 0, float("nan"), 0, quantile)
    p = model.predict(syn)[:, 1]
    confident = p >= threshold if label == 1 else p < threshold
    ref = model.features(x[y == label])  # (n_K, F)
    kk = max(1, min(k, len(ref) - 1))
    d_ref = np.r_[kth_distance(ref, ref, kk, leave_one_out=True),
                  kth_distance(model.features(x_val[y_val == label]), ref, kk)]  # fmt: skip
    radius = float(np.quantile(d_ref, quantile))
    near = kth_distance(model.features(syn), ref, kk) <= radius
    return Selection(confident & near, int(confident.sum()), int(near.sum()), radius, kk,
                     quantile)  # fmt: skip
