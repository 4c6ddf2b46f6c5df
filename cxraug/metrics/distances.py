"""Distances between two sets of image features: Fréchet distance (FID), KID and
precision/recall. Pure numpy/scipy, float64 throughout; no knowledge of images or networks.

Pipeline names read like torch-fidelity's: features -> statistics -> metric.

- Fréchet distance (Heusel et al. 2017) between Gaussians fitted to the two sets:
      d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
  With N < D (2048 features) the covariances are rank-deficient, `sqrtm` of their product can
  come back complex: a tiny imaginary part is round-off and is dropped (and reported); a large
  one on the diagonal means the result is meaningless and we raise (pitfalls #7, pytorch-fid).
- KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets (mean ± std).
- Precision / recall (Kynkäänniemi et al. 2019): each set is a union of k-NN balls around its
  points; precision = share of fakes inside the real manifold, recall = share of reals inside
  the fake manifold. The radii shrink as a set grows, so both numbers depend on the set
  sizes, not only on the two distributions: one generator scored with 655 fakes against 85 real
  test images has recall 0.34, with 85 of those fakes 0.71 (bench/RESULTS.md). Numbers are
  comparable only at the same N; `precision_recall_equal_n` scores both sides at
  N = min(N_real, N_fake), as Kynkäänniemi et al. do (equal sample sizes).
- The real-vs-real baseline (`real_baseline`): FID and precision/recall between two random
  halves of the real set, what the data allows at that N.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from cxraug.core.errors import InputError, NumericError

#: Largest |imag| allowed on the diagonal of sqrtm(S1 S2) before we refuse the result
#: (pytorch-fid's threshold).
IMAG_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FrechetResult:
    value: float
    max_imag: float  # largest |imag| on the diagonal of sqrtm(S1 S2) that was dropped (0 if real)
    eps: float | None  # diagonal offset added only because sqrtm returned non-finite values


@dataclass(frozen=True)
class KidResult:
    mean: float
    std: float
    subsets: int
    subset_size: int


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int


@dataclass(frozen=True)
class EqualNPrecisionRecall:
    precision: float  # mean over draws
    recall: float
    precision_std: float
    recall_std: float
    n: int  # images per side in every draw
    draws: int  # 0: the two sets were already the same size, nothing was drawn
    k: int


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(x, dtype=np.float64)
    if f.ndim != 2:
        raise InputError(f"{name} features must be a (N, D) array, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise NumericError(f"{name} features contain NaN or Inf; check the input images/extractor")
    return f


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), float64."""
    f = _as_features(features, "input")
    if f.shape[0] < 2:
        raise InputError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy's sqrtm without its "singular matrix" warning: we check the result ourselves
    (finite? imaginary part?) and report what we did, so the warning would only be noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return np.asarray(scipy.linalg.sqrtm(a))


def _statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                sigma2: np.ndarray) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Both Gaussians' statistics as float64 (d,) means and (d, d) covariances, which must
    match in size."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}"
        )
    return mu1, s1, mu2, s2


def _real_part(covmean: np.ndarray, d: int) -> tuple[np.ndarray, float]:
    """sqrtm(S1 S2) without its imaginary round-off, and the largest |imag| dropped from its
    diagonal; above IMAG_TOLERANCE the distance is meaningless: NumericError."""
    if not np.iscomplexobj(covmean):
        return covmean, 0.0
    max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
    if max_imag > IMAG_TOLERANCE:
        raise NumericError(
            f"sqrtm(S1 S2) has an imaginary diagonal component of {max_imag:.3g} "
            f"(> {IMAG_TOLERANCE}); the Fréchet distance is not meaningful. This happens "
            f"when the number of images is far below the feature dimension ({d}), "
            "which makes the covariances rank-deficient: use more images per side "
            f"(ideally >= {d}) and report KID, which is unbiased at small N"
        )
    return covmean.real, max_imag


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    *,
    basis: np.ndarray | None = None,
) -> FrechetResult:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    `eps * I` is added to both covariances only when sqrtm returns non-finite values (singular
    product); the result then records `eps`. An imaginary diagonal part above IMAG_TOLERANCE
    raises NumericError instead of being dropped.

    `basis` (D, r), orthonormal columns containing the column space of sigma1 (see
    `fid_from_features`), gives the same number from an r x r sqrtm: in the basis [B, B_perp]
    S1 S2 is block upper-triangular with a zero lower-right block (B_perp^T S1 = 0), so its
    principal square root has diagonal blocks sqrtm(C) and 0, C = (B^T S1 B)(B^T S2 B), and
    Tr sqrtm(S1 S2) = Tr sqrtm(C). If sqrtm(C) is not finite, the full-space path decides.
    """
    mu1, s1, mu2, s2 = _statistics(mu1, sigma1, mu2, sigma2)
    d = s1.shape[0]
    if basis is not None:
        covmean = _sqrtm((basis.T @ s1 @ basis) @ (basis.T @ s2 @ basis))  # (r, r)
        if not np.isfinite(covmean).all():
            return frechet_distance(mu1, s1, mu2, s2, eps)
    else:
        covmean = _sqrtm(s1 @ s2)  # (d, d)
    used_eps: float | None = None
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
        used_eps = eps
        if not np.isfinite(covmean).all():
            raise NumericError(
                f"the matrix square root is not finite even with eps={eps} added to the "
                "covariances; the feature sets are degenerate (too few or identical images?)"
            )
    covmean, max_imag = _real_part(covmean, d)
    value = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return FrechetResult(value=value, max_imag=max_imag, eps=used_eps)


def fid_from_features(real: np.ndarray, fake: np.ndarray, eps: float = 1e-6) -> FrechetResult:
    """Fréchet distance between two (N, D) feature sets.

    When the smaller set has N < D images its covariance has rank <= N - 1, and the sqrtm is
    taken in the span of its centred features (N x N instead of D x D; see frechet_distance).
    The formula is symmetric in the two sets, so the smaller one plays S1. This matters:
    scipy's sqrtm of a singular 2048 x 2048 product takes 30-40 s on 2 cores, the reduced one
    for 100 test images a fraction of a second (bench/RESULTS.md).
    """
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    mu_r, s_r = feature_statistics(r)
    mu_f, s_f = feature_statistics(f)
    (x, mu1, s1), (mu2, s2) = ((r, mu_r, s_r), (mu_f, s_f)) if len(r) <= len(f) else (
        (f, mu_f, s_f), (mu_r, s_r))  # fmt: skip
    if x.shape[0] < x.shape[1]:
        basis = np.linalg.qr((x - mu1).T)[0]  # (D, N_small): contains the column space of S1
        return frechet_distance(mu1, s1, mu2, s2, eps=eps, basis=basis)
    return frechet_distance(mu_r, s_r, mu_f, s_f, eps=eps)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3  # (m, m)


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m = kxx.shape[0]
    # unbiased: the within-set means leave out the diagonal k(x_i, x_i)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples (m, D) with the cubic polynomial kernel."""
    return _mmd2_from_kernels(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))


#: Precompute whole kernel matrices (3 GEMMs instead of 3 per subset) up to this many entries.
KID_FULL_KERNEL_MAX = 4096 * 4096


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    rng: np.random.Generator,
    full_kernel_max: int = KID_FULL_KERNEL_MAX,
) -> KidResult:
    """Kernel Inception Distance: mean ± std of unbiased MMD^2 over random subsets of size
    min(subset_size, N_real, N_fake), drawn without replacement within each subset.

    For moderate N the kernel matrices of the whole sets are computed once and subsets are
    index gathers of them (same numbers, ~100x fewer FLOPs than per-subset kernels)."""
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    nr, nf = r.shape[0], f.shape[0]
    m = min(subset_size, nr, nf)
    if m < 2:
        raise InputError(f"KID needs at least 2 images per side, got {nr} and {nf}")
    if subsets < 1:
        raise InputError(f"KID needs at least 1 subset, got {subsets}")
    full = max(nr, nf) ** 2 <= full_kernel_max
    if full:
        krr, kff, krf = _poly_kernel(r, r), _poly_kernel(f, f), _poly_kernel(r, f)
    vals = np.empty(subsets)
    for i in range(subsets):
        xi = rng.choice(nr, m, replace=False)
        yi = rng.choice(nf, m, replace=False)
        if full:
            vals[i] = _mmd2_from_kernels(
                krr[np.ix_(xi, xi)], kff[np.ix_(yi, yi)], krf[np.ix_(xi, yi)]
            )
        else:
            vals[i] = mmd2_unbiased(r[xi], f[yi])
    return KidResult(float(vals.mean()), float(vals.std()), subsets, m)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)), clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row (self excluded)."""
    d = _sq_dists(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, block: int) -> float:
    """Share of `points` inside at least one ball (centre, radius)."""
    inside = np.zeros(points.shape[0], bool)
    for s in range(0, points.shape[0], block):
        d = _sq_dists(points[s : s + block], centres)  # (block, n_centres)
        inside[s : s + block] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(
    real: np.ndarray, fake: np.ndarray, *, k: int = 3, block: int = 1024
) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii."""
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    need = k + 1
    if r.shape[0] < need or f.shape[0] < need:
        raise InputError(
            f"precision/recall with k={k} needs at least {need} images per side, got "
            f"{r.shape[0]} real and {f.shape[0]} fake; add images or lower --pr-k"
        )
    precision = _coverage(f, r, _knn_radii(r, k), block)
    recall = _coverage(r, f, _knn_radii(f, k), block)
    return PrecisionRecall(precision, recall, k)


def precision_recall_equal_n(
    real: np.ndarray, fake: np.ndarray, *, k: int, draws: int, rng: np.random.Generator
) -> EqualNPrecisionRecall:
    """Precision/recall with both sides at N = min(N_real, N_fake): `draws` random subsets
    (without replacement) of the larger side, mean and std over draws. Equal sizes: one exact
    evaluation, draws = 0."""
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    n = min(r.shape[0], f.shape[0])
    if r.shape[0] == f.shape[0]:
        pr = precision_recall(r, f, k=k)
        return EqualNPrecisionRecall(pr.precision, pr.recall, 0.0, 0.0, n, 0, k)
    if draws < 1:
        raise InputError(f"equal-N precision/recall needs --pr-draws >= 1, got {draws}")
    big_is_real = r.shape[0] > f.shape[0]
    ps, rs = [], []
    for _ in range(draws):
        pick = rng.choice(max(r.shape[0], f.shape[0]), n, replace=False)
        pr = precision_recall(r[pick], f, k=k) if big_is_real else precision_recall(r, f[pick], k=k)
        ps.append(pr.precision)
        rs.append(pr.recall)
    return EqualNPrecisionRecall(
        float(np.mean(ps)), float(np.mean(rs)), float(np.std(ps)), float(np.std(rs)), n, draws, k
    )


@dataclass(frozen=True)
class Baseline:
    """Real-vs-real: what two real samples of `n` images each score against each other."""

    n: int  # images per half
    fid: float | None  # None: too few images, or no meaningful sqrtm (`notes` says which)
    pr: PrecisionRecall | None  # None: a half holds no more than k images
    notes: tuple[str, ...]


def real_baseline(real: np.ndarray, *, k: int, eps: float, rng: np.random.Generator) -> Baseline:
    """FID and precision/recall between two seeded random halves of the real features."""
    r = _as_features(real, "real")
    half = len(r) // 2
    if half < 2:
        why = f"real-vs-real baseline needs >= 4 real images, got {len(r)}"
        return Baseline(half, None, None, (why,))
    perm = rng.permutation(len(r))
    half_a, half_b = r[perm[:half]], r[perm[half : 2 * half]]
    pr = precision_recall(half_a, half_b, k=k) if half > k else None
    try:
        fd = fid_from_features(half_a, half_b, eps)
    except NumericError as e:
        return Baseline(half, None, pr, (f"real-vs-real baseline not computed: {e}",))
    notes = () if fd.eps is None else (f"baseline sqrtm was singular: added eps={fd.eps} to "
                                       "covariances",)  # fmt: skip
    return Baseline(half, fd.value, pr, notes)
