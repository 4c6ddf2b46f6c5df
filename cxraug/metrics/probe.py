"""The linear probe of the classifier two-sample test (cxraug.metrics.c2st): per-scale
features of each image in three blocks, a PCA per block (standardised, whitened), then one
L2-regularised logistic regression over all the blocks' directions, all fitted on the
training fold only. Pure numpy/scipy/OpenCV.

Features at scale s (`scale_features`): each image, as read, is reduced to s x s with
cv2.INTER_AREA (the area average: no aliasing when shrinking), gray in [0, 1], and three
blocks are kept, (N, 2 s^2 + Q):
    pixels     x (s^2)                  layout, framing, intensity, marks at recurring places;
    detail     log(|lap x| + 1/255)     where the image is sharp or soft, noisy or smooth:
               (s^2)                    the 4-neighbour Laplacian at this scale, in log units
                                        (blur and contrast act multiplicatively on it), floored
                                        at one grey level;
    texture    Q = 63 quantiles of      the position-free distribution of fine detail: its
               asinh(255 lap x)         lower tail holds bright thin ridges (lines, letters,
                                        arrows drawn anywhere), its upper tail dark ones, its
                                        spread the overall sharpness; levels logit-spaced from
                                        1/s^2 to 1 - 1/s^2 so that both tails are resolved.
Why more than pixels: a linear score w.x reacts only to a difference of MEANS. Blur, noise and
texture change the local ENERGY of an image, not its mean (the blurred mean image is the smooth
mean image), and marks drawn at random places barely move any pixel's mean, so a pixels-only
probe is blind to them. The detail map turns "softer here" into a shift of a mean; the quantiles
turn "thin bright strokes somewhere" into one. Every block is computed at the probe's own scale,
so a 32 px probe sees only what a 32 px thumbnail shows: high AUC at coarse scales = layout /
intensity differs; high only at fine scales = texture / sharpness differs.

Model, fitted on n training rows (`BlockProbe.fit`):
1. per block, standardise every feature with the training mean and std (std 0 -> 1: a
   constant feature then stays 0 and carries nothing);
2. per block, PCA to k = min(components, n // 10) directions through the thin SVD
   X = U S V^T of the block's centred training matrix, computed from the n x n Gram matrix
   G = X X^T = U S^2 U^T (n is a few hundred, D up to 16,384: n^2 D instead of n D^2). The k
   directions are V_k = X^T U_k S_k^-1; a row x projects to z = x V_k = (x X^T) U_k S_k^-1,
   and is whitened by the component's std S_j / sqrt(n - 1): u_j = z_j sqrt(n - 1) / S_j
   (training rows get u = U_k sqrt(n - 1): unit variance in every direction) (`Whitener`);
3. ONE logistic regression on the three blocks' whitened directions side by side, u (3k),
   with labels y in {-1, +1}:
       L(w, b) = sum_i log(1 + exp(-y_i (u_i.w + b))) + (lam / 2) |w|^2,
       dL/dw = -sum_i y_i sigma(-y_i m_i) u_i + lam w,   dL/db = -sum_i y_i sigma(-y_i m_i),
   minimised with L-BFGS on the exact loss and gradient; the intercept b is not penalised.
   For the by-block diagnostic, the same regression on one block's k directions alone.
Why a PCA per block and not one over the three blocks concatenated (the design until
2026-12-05, each block weighted to the same total variance): with k = n / 10 directions in
all, the few directions went to the pixel maps' large shared variations (framing,
brightness), and a difference carried by the detail map alone fell outside all of them. A
generated set that paints wavy outlines into the lungs scored 0.49 at 32 px where its detail
and texture blocks alone scored 0.73 and 0.76 (bench/RESULTS.md "The C2ST probe drowned the
detail block"). Why one regression and not the sum of three per-block regressions' log-odds
(tried the same day): a block that carries nothing then adds its noise to the score at full
weight; the joint regression weighs each direction by the evidence in the training fold.

Capacity and regularisation, fixed by reasoning (never tuned on the data they report):
- k <= n / 10: at least ten training rows per fitted direction, the usual rule of thumb for
  regression models (Harrell, Regression Modeling Strategies). With k close to n the whitened
  probe interpolates its training fold, and its out-of-fold AUC under the null scatters widely
  (and below 0.5): 40 vs 40 noise images gave 0.32 at k = n - 1 in one draw. The rule
  holds per block's PCA; the joint regression then fits up to 3k weights, about 3.3
  training rows each, which the prior below keeps in check: measured on real X-rays, two
  patient halves score 0.44-0.48 and the interval covers 0.5 in 90-95 % of random halves
  (docs/fid.md, "Calibration on real chest X-rays").
- lam = 1 is the MAP estimate under a standard-normal prior on every weight (the usual
  default for standardised inputs, e.g. scikit-learn's C = 1): a one-std move along one
  whitened component shifts the log-odds by about one unit a priori. The data term dominates
  wherever there is signal (its curvature is ~ n / 4 per weight); the prior keeps the weights
  finite when the training fold happens to be separable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.optimize
import scipy.special

from cxraug.core.errors import NumericError

#: Most PCA directions kept (fewer when the training fold is smaller).
COMPONENTS = 64
#: Training rows per PCA direction kept: k = min(COMPONENTS, n // 10).
ROWS_PER_DIRECTION = 10
#: Weight of the L2 penalty: a standard-normal prior on each weight (see the module docstring).
L2 = 1.0


def as_unit_gray(img: np.ndarray) -> np.ndarray:
    """(H, W) uint8 [0, 255] or float [-1, 1] (the project's two conventions) -> float32 [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / np.float32(255.0)
    return (np.asarray(img, np.float32) + np.float32(1.0)) * np.float32(0.5)


def quantile_levels(size: int) -> np.ndarray:
    """The texture block's Q = 63 levels: logit-spaced from 1/size^2 to 1 - 1/size^2."""
    t = np.geomspace(1.0 / size**2, 0.5, 32)
    return np.unique(np.concatenate([t, 1.0 - t]))


def block_widths(size: int) -> tuple[int, int, int]:
    """Widths of the (pixels, detail, texture) blocks of `scale_features` at size px."""
    return size * size, size * size, len(quantile_levels(size))


def scale_features(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(N, 2 size^2 + Q) float32: pixels, log Laplacian magnitude, Laplacian quantiles."""
    levels = quantile_levels(size)
    out = np.empty((len(images), sum(block_widths(size))), np.float32)
    s2 = size * size
    for i, im in enumerate(images):
        x = cv2.resize(as_unit_gray(im), (size, size), interpolation=cv2.INTER_AREA)  # (s, s)
        lap = cv2.Laplacian(x, cv2.CV_32F)  # 4-neighbour kernel, reflected border
        out[i, :s2] = x.ravel()
        out[i, s2 : 2 * s2] = np.log(np.abs(lap) + np.float32(1 / 255)).ravel()
        out[i, 2 * s2 :] = np.quantile(np.arcsinh(lap * np.float32(255)), levels)
    return out


def logistic_loss(
    theta: np.ndarray, u: np.ndarray, y: np.ndarray, lam: float
) -> tuple[float, np.ndarray]:
    """The penalised logistic loss L(w, b) and its gradient; theta = (w_1..w_k, b), y in +-1."""
    w, b = theta[:-1], theta[-1]
    m = y * (u @ w + b)  # (n,) margins
    loss = float(np.logaddexp(0.0, -m).sum() + 0.5 * lam * (w @ w))
    r = -y * scipy.special.expit(-m)  # dL/d(u.w + b) per row
    return loss, np.concatenate([u.T @ r + lam * w, [r.sum()]])


def fit_logistic(u: np.ndarray, y01: np.ndarray, lam: float = L2) -> np.ndarray:
    """theta = (w, b) minimising `logistic_loss` on rows u (n, k) with labels y01 in {0, 1}."""
    y = np.where(np.asarray(y01) > 0, 1.0, -1.0)
    theta0 = np.zeros(u.shape[1] + 1)
    tight = {"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-9}  # 65 unknowns: precision is cheap
    res = scipy.optimize.minimize(logistic_loss, theta0, args=(u, y, lam), jac=True,
                                  method="L-BFGS-B", options=tight)  # fmt: skip
    if not np.isfinite(res.x).all():
        raise NumericError("the C2ST logistic regression diverged (non-finite weights)")
    return np.asarray(res.x)


@dataclass
class Whitener:
    """standardise -> PCA to k whitened directions, fitted on one block's training rows."""

    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    train: np.ndarray  # (n, D) standardised training rows (to project new rows: x X^T)
    proj: np.ndarray  # (n, k) = U_k sqrt(n - 1) / S_k
    fitted: np.ndarray  # (n, k) = U_k sqrt(n - 1): the training rows' own whitened coordinates

    @classmethod
    def fit(cls, x: np.ndarray, components: int = COMPONENTS) -> Whitener:
        """Fit on rows x (n, D) of one feature block."""
        n = x.shape[0]
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = x.std(axis=0, dtype=np.float64).astype(np.float32)
        std[std <= 1e-12] = 1.0  # a constant feature stays 0 after centring: carries nothing
        xs = (x - mean) / std  # (n, D)
        gram = np.asarray(xs @ xs.T, np.float64)  # (n, n) = U S^2 U^T
        evals, evecs = np.linalg.eigh(gram)  # ascending
        k = min(components, max(1, n // ROWS_PER_DIRECTION))
        top = np.argsort(evals)[::-1][:k]
        s2 = evals[top]
        # directions with (numerically) zero variance would be whitened by 1/0: drop them
        keep = s2 > s2[0] * 1e-6 if k else np.zeros(0, bool)  # float32 Gram: ~1e-7 noise
        proj = evecs[:, top[keep]] * (np.sqrt(n - 1) / s2[keep])  # z_white = (x X^T) proj
        return cls(mean, std, xs, proj.astype(np.float32), evecs[:, top[keep]] * np.sqrt(n - 1))

    def whiten(self, x: np.ndarray) -> np.ndarray:
        """(m, D) rows -> (m, k) whitened PCA coordinates of the training fold."""
        xs = (x - self.mean) / self.std
        return np.asarray((xs @ self.train.T) @ self.proj, np.float64)


@dataclass
class BlockProbe:
    """The probe of the module docstring's "Model": a `Whitener` per feature block, one
    logistic regression over all their directions (`theta`), and one per block alone
    (`block_thetas`, the by-block diagnostic)."""

    edges: tuple[int, ...]  # column where each block starts, then the total width
    whiteners: list[Whitener]
    theta: np.ndarray  # (sum k_b + 1,)
    block_thetas: list[np.ndarray]  # (k_b + 1,) each

    @classmethod
    def fit(cls, x: np.ndarray, y01: np.ndarray, widths: Sequence[int],
            components: int = COMPONENTS, lam: float = L2) -> BlockProbe:  # fmt: skip
        """Fit on rows x (n, sum(widths)) with labels y01 in {0, 1}; `widths` of the blocks."""
        edges = tuple(int(e) for e in np.cumsum([0, *widths]))
        if edges[-1] != x.shape[1]:
            raise ValueError(f"block widths {list(widths)} sum to {edges[-1]}, rows have "
                             f"{x.shape[1]} features")  # fmt: skip
        whiteners = [Whitener.fit(x[:, lo:hi], components)
                     for lo, hi in zip(edges[:-1], edges[1:], strict=True)]  # fmt: skip
        u = [w.fitted for w in whiteners]  # = whitened(x) without a second Gram product
        return cls(edges, whiteners, fit_logistic(np.hstack(u), y01, lam),
                   [fit_logistic(ub, y01, lam) for ub in u])  # fmt: skip

    def whitened(self, x: np.ndarray) -> list[np.ndarray]:
        """Each block's (m, k_b) whitened coordinates."""
        return [w.whiten(x[:, lo:hi]) for w, lo, hi
                in zip(self.whiteners, self.edges[:-1], self.edges[1:], strict=True)]  # fmt: skip

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The probe's (m,) log-odds of class 1 and each block's own regression's (m, B), from
        one projection of x (the projection is the cost: an (m, n) product per block)."""
        u = self.whitened(x)
        whole = np.hstack(u) @ self.theta[:-1] + self.theta[-1]
        pairs = zip(u, self.block_thetas, strict=True)
        return np.asarray(whole), np.stack([ub @ t[:-1] + t[-1] for ub, t in pairs], axis=1)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """(m,) the probe's log-odds of class 1."""
        return self.scores(x)[0]

    def block_decisions(self, x: np.ndarray) -> np.ndarray:
        """(m, B) log-odds of class 1 by each block's own regression."""
        return self.scores(x)[1]
