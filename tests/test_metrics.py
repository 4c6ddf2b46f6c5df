"""FID / KID / precision-recall maths against closed forms and independent implementations."""

from __future__ import annotations

import numpy as np
import pytest

from cxraug.core.errors import EXIT_NUMERIC, InputError, NumericError
from cxraug.metrics import distances as metrics


def _psd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fd_eig(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Independent Fréchet distance: Tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # symmetric sqrt(S1)
    lam = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sqrt(np.clip(lam, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def test_identical_features_give_zero() -> None:
    f = np.random.default_rng(0).normal(size=(300, 16))
    assert abs(metrics.fid_from_features(f, f).value) < 1e-6


def test_equal_covariances_give_squared_mean_difference() -> None:
    rng = np.random.default_rng(1)
    s = _psd(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    r = metrics.frechet_distance(mu1, s, mu2, s)
    assert r.value == pytest.approx(float(((mu1 - mu2) ** 2).sum()), rel=1e-8, abs=1e-9)
    assert r.eps is None


def test_diagonal_gaussians_match_closed_form() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + ((mu1 - mu2) ** 2).sum()
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)).value
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [400, 12])  # n=12 < d=24: rank-deficient covariances
def test_agrees_with_eigenvalue_implementation(n: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 24))
    y = rng.normal(size=(n, 24)) @ rng.normal(size=(24, 24)) * 0.3 + 0.5
    mu1, s1 = metrics.feature_statistics(x)
    mu2, s2 = metrics.feature_statistics(y)
    got = metrics.fid_from_features(x, y)
    assert got.value == pytest.approx(_fd_eig(mu1, s1, mu2, s2), rel=1e-6, abs=1e-6)
    assert got.max_imag <= metrics.IMAG_TOLERANCE


def test_statistics_are_float64_and_unbiased() -> None:
    f = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    mu, s = metrics.feature_statistics(f)
    assert mu.dtype == np.float64 and s.dtype == np.float64
    f64 = f.astype(np.float64)
    c = f64 - f64.mean(0)
    np.testing.assert_allclose(s, c.T @ c / 49, rtol=1e-12)


def test_large_imaginary_part_raises_numeric_error() -> None:
    # sqrtm(diag(-1, 1)) = diag(i, 1): an imaginary diagonal of 1, far above the tolerance
    with pytest.raises(NumericError, match="imaginary") as e:
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))
    assert e.value.exit_code == EXIT_NUMERIC
    assert "feature dimension (2)" in str(e.value)


def test_eps_only_when_sqrtm_is_not_finite(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sqrtm = metrics._sqrtm
    calls: list[np.ndarray] = []

    def flaky(a: np.ndarray) -> np.ndarray:
        calls.append(a)
        return np.full_like(a, np.inf) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(metrics, "_sqrtm", flaky)
    s = np.eye(3)
    r = metrics.frechet_distance(np.zeros(3), s, np.ones(3), s, eps=1e-4)
    assert r.eps == 1e-4 and len(calls) == 2
    np.testing.assert_allclose(calls[1], (s + 1e-4 * np.eye(3)) @ (s + 1e-4 * np.eye(3)))
    # the offset enters the trace term: 3 + 3 - 2 * 3 * (1 + eps) + |mu1 - mu2|^2 = 3 - 6 eps
    assert r.value == pytest.approx(3.0 - 6e-4, abs=1e-9)
    assert metrics.frechet_distance(np.zeros(3), s, np.ones(3), s).eps is None


def test_bad_shapes_and_counts_raise_input_error() -> None:
    with pytest.raises(InputError, match="mismatched"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(InputError, match="at least 2"):
        metrics.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(NumericError, match="NaN"):
        metrics.feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))


def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 written out term by term (independent of the vectorised code)."""
    m, d = len(x), x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / d + 1) ** 3)

    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return sxx + syy - 2 * sxy


def test_mmd_matches_term_by_term_formula() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 4)) + 0.3
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)


def test_kid_is_unbiased_for_identical_distributions() -> None:
    rng = np.random.default_rng(6)
    vals = [
        metrics.mmd2_unbiased(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
        for _ in range(400)
    ]
    mean, se = float(np.mean(vals)), float(np.std(vals) / np.sqrt(len(vals)))
    assert abs(mean) < 4 * se  # unbiased: zero within sampling error
    # a biased (V-statistic) estimator would sit well above zero here
    assert se < 0.02


def test_kid_positive_for_shifted_distributions_and_seeded() -> None:
    rng = np.random.default_rng(7)
    real, same, shifted = (rng.normal(size=(300, 8)) for _ in range(3))
    shifted += 0.7
    k_same = metrics.kid(real, same, subsets=50, subset_size=100, rng=np.random.default_rng(0))
    k_shift = metrics.kid(real, shifted, subsets=50, subset_size=100, rng=np.random.default_rng(0))
    # subsets of one sample are correlated, so compare with the subset spread, not std/sqrt(50)
    assert abs(k_same.mean) < k_same.std
    assert k_shift.mean > 5 * k_shift.std and k_shift.mean > 20 * abs(k_same.mean)
    again = metrics.kid(real, shifted, subsets=50, subset_size=100, rng=np.random.default_rng(0))
    assert again == k_shift and k_shift.subset_size == 100


def test_kid_full_kernel_path_equals_per_subset_path() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(60, 5)), rng.normal(size=(50, 5)) + 0.2
    full = metrics.kid(a, b, subsets=20, subset_size=30, rng=np.random.default_rng(1))
    per = metrics.kid(
        a, b, subsets=20, subset_size=30, rng=np.random.default_rng(1), full_kernel_max=0
    )
    assert full.mean == pytest.approx(per.mean, rel=1e-10)
    assert full.std == pytest.approx(per.std, rel=1e-8)


def test_kid_subset_size_is_capped_by_n() -> None:
    rng = np.random.default_rng(9)
    r = metrics.kid(
        rng.normal(size=(7, 3)), rng.normal(size=(5, 3)), subsets=3, subset_size=1000, rng=rng
    )
    assert r.subset_size == 5
    with pytest.raises(InputError, match="at least 2"):
        metrics.kid(np.zeros((1, 3)), np.zeros((5, 3)), rng=rng)


def _pr_brute(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x: np.ndarray) -> list[float]:
        out = []
        for i in range(len(x)):
            d = sorted(float(np.linalg.norm(x[i] - x[j])) for j in range(len(x)) if j != i)
            out.append(d[k - 1])
        return out

    def cover(pts: np.ndarray, ctr: np.ndarray, rad: list[float]) -> float:
        hits = [any(np.linalg.norm(p - c) <= r for c, r in zip(ctr, rad, strict=True)) for p in pts]
        return float(np.mean(hits))

    return cover(fake, real, radii(real)), cover(real, fake, radii(fake))


def test_precision_recall_identical_far_and_brute_force() -> None:
    rng = np.random.default_rng(10)
    real = rng.normal(size=(40, 6))
    same = metrics.precision_recall(real, real.copy(), k=3)
    assert (same.precision, same.recall) == (1.0, 1.0)
    far = metrics.precision_recall(real, real + 100.0, k=3)
    assert far.precision == 0.0 and far.recall == 0.0
    fake = rng.normal(size=(30, 6)) * 1.5 + 0.5
    got = metrics.precision_recall(real, fake, k=3, block=7)  # odd block exercises the tiling
    exp_p, exp_r = _pr_brute(real, fake, 3)
    assert got.precision == pytest.approx(exp_p) and got.recall == pytest.approx(exp_r)
    assert 0.0 < got.precision < 1.0


def test_precision_recall_equal_n_against_brute_force_draws() -> None:
    """Each draw is a subset of the larger side scored by the brute-force reference; the same
    seed gives the same draws; equal sizes need no draw."""
    rng = np.random.default_rng(13)
    real, fake = rng.normal(size=(12, 5)), rng.normal(size=(40, 5)) * 1.3
    got = metrics.precision_recall_equal_n(real, fake, k=3, draws=6, rng=np.random.default_rng(1))
    ref_rng, ps, rs = np.random.default_rng(1), [], []
    for _ in range(6):
        p, r = _pr_brute(real, fake[ref_rng.choice(40, 12, replace=False)], 3)
        ps.append(p)
        rs.append(r)
    assert (got.n, got.draws, got.k) == (12, 6, 3)
    assert got.precision == pytest.approx(np.mean(ps)) and got.recall == pytest.approx(np.mean(rs))
    assert got.precision_std == pytest.approx(np.std(ps)) and got.recall_std > 0
    # the larger side may be REAL too: then REAL is subsampled
    swap = metrics.precision_recall_equal_n(fake, real, k=3, draws=6, rng=np.random.default_rng(1))
    assert swap.precision == pytest.approx(np.mean(rs))
    assert swap.recall == pytest.approx(np.mean(ps))
    same = metrics.precision_recall_equal_n(real, real[::-1], k=3, draws=6, rng=rng)
    assert (same.precision, same.recall, same.draws, same.recall_std) == (1.0, 1.0, 0, 0.0)
    with pytest.raises(InputError, match="pr-draws"):
        metrics.precision_recall_equal_n(real, fake, k=3, draws=0, rng=rng)


def test_equal_n_recall_does_not_depend_on_how_many_fakes_were_made() -> None:
    """Fakes narrower than the reals in half the dimensions. Recall over all of 600 fakes is far
    below recall at 60 fakes (their k-NN radii are smaller), so a number over all images depends
    on how many images the user generated; the equal-N number from a pool of 600 estimates the
    recall of a fresh 60-fake sample (its expectation, by construction of the draws)."""
    rng = np.random.default_rng(14)
    real = rng.normal(size=(60, 16))

    def fakes(n: int) -> np.ndarray:
        f = rng.normal(size=(n, 16))
        f[:, 8:] *= 0.5
        return f

    unequal = metrics.precision_recall(real, fakes(600), k=3).recall
    equal = metrics.precision_recall_equal_n(real, fakes(600), k=3, draws=20, rng=rng).recall
    fresh = np.mean([metrics.precision_recall(real, fakes(60), k=3).recall for _ in range(20)])
    assert abs(equal - fresh) < 0.05
    assert unequal < equal - 0.1


def test_precision_recall_needs_k_plus_one_images() -> None:
    x = np.random.default_rng(11).normal(size=(3, 2))
    with pytest.raises(InputError, match="at least 4 images per side"):
        metrics.precision_recall(x, x, k=3)


def test_subspace_path_equals_full_sqrtm(monkeypatch: pytest.MonkeyPatch) -> None:
    """fid_from_features takes sqrtm in the span of the features when N1 + N2 < D; it must give
    the full-space number, including the eps-regularised branch."""
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(7, 30)), rng.normal(size=(9, 30)) * 2 + 1
    mu1, s1 = metrics.feature_statistics(x)
    mu2, s2 = metrics.feature_statistics(y)
    full = metrics.frechet_distance(mu1, s1, mu2, s2)
    sub = metrics.fid_from_features(x, y)
    assert sub.value == pytest.approx(full.value, rel=1e-6)
    assert sub.value == pytest.approx(_fd_eig(mu1, s1, mu2, s2), rel=1e-6)
    assert metrics.fid_from_features(y, x).value == pytest.approx(full.value, rel=1e-6)
    big = rng.normal(size=(200, 30)) + 0.3  # N > D on one side only
    mu3, s3 = metrics.feature_statistics(big)
    expected = metrics.frechet_distance(mu3, s3, mu1, s1).value
    assert metrics.fid_from_features(big, x).value == pytest.approx(expected, rel=1e-6)

    real_sqrtm = metrics._sqrtm
    calls: list[int] = []

    def reduced_call_fails(a: np.ndarray) -> np.ndarray:
        calls.append(a.shape[0])
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(metrics, "_sqrtm", reduced_call_fails)
    fallback = metrics.fid_from_features(x, y)  # non-finite reduced sqrtm -> full-space path
    assert calls == [7, 30] and fallback.eps is None
    assert fallback.value == pytest.approx(full.value, rel=1e-12)
