"""The classifier two-sample test (cxraug.metrics.c2st, cxraug.metrics.probe): its maths against
brute force and independent implementations, its protocol (grouped folds, equal sides, seeds),
and its calibration on real chest X-rays: power against blur, a one-template set and drawn
marks, and an honest null on two halves of one real set."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage
import scipy.optimize

from cxraug.core.errors import InputError
from cxraug.core.images import read_gray, to_uint8
from cxraug.metrics import c2st as C
from cxraug.metrics import probe as P
from cxraug.metrics.spectrum import fixed_share
from cxraug.preprocess import preprocess_image


def _auc_pairs(pos: np.ndarray, neg: np.ndarray) -> float:
    """Brute force: every (pos, neg) pair, 1 if pos > neg, 1/2 if tied."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins / (len(pos) * len(neg)))


def test_auc_is_the_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(0)
    for n_p, n_n in ((7, 11), (30, 30), (1, 5)):
        pos, neg = rng.integers(0, 6, n_p), rng.integers(0, 6, n_n)  # many ties
        assert C.auc(pos, neg) == pytest.approx(_auc_pairs(pos, neg), abs=1e-12)
    assert C.auc(np.r_[2.0, 3.0], np.r_[0.0, 1.0]) == 1.0
    assert C.auc(np.r_[1.0, 1.0], np.r_[1.0]) == 0.5


def test_logistic_gradient_is_exact() -> None:
    rng = np.random.default_rng(1)
    u, y = rng.normal(size=(40, 6)), rng.choice([-1.0, 1.0], 40)
    for _ in range(3):
        theta = rng.normal(size=7)
        err = scipy.optimize.check_grad(lambda t: P.logistic_loss(t, u, y, 0.7)[0],
                                        lambda t: P.logistic_loss(t, u, y, 0.7)[1],
                                        theta)  # fmt: skip
        assert err < 1e-5 * max(1.0, np.linalg.norm(P.logistic_loss(theta, u, y, 0.7)[1]))


def _newton(u: np.ndarray, y01: np.ndarray, lam: float) -> np.ndarray:
    """Independent solver of the same objective: Newton's method (IRLS), intercept free."""
    x = np.hstack([u, np.ones((len(u), 1))])
    pen = np.full(x.shape[1], lam)
    pen[-1] = 0.0
    theta = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ theta)))
        grad = x.T @ (p - y01) + pen * theta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen)
        theta -= np.linalg.solve(hess, grad)
    return theta


@pytest.mark.parametrize("shift", [0.5, 3.0])  # overlapping; nearly separable (the prior binds)
def test_logistic_fit_matches_newton(shift: float) -> None:
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(50), np.ones(50)]
    u = rng.normal(size=(100, 5)) + shift * y[:, None] * np.r_[1.0, -1.0, 0, 0, 0]
    np.testing.assert_allclose(P.fit_logistic(u, y, 1.0), _newton(u, y, 1.0), atol=1e-5)


def test_probe_whitening_matches_svd_of_the_standardised_features() -> None:
    """The Gram-matrix PCA equals an independent SVD of the standardised training matrix:
    u = x V_k sqrt(n - 1) / S_k (up to the sign of each direction)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 67)).astype(np.float32) * rng.uniform(0.5, 3, 67).astype(np.float32)
    w = P.Whitener.fit(x, components=6)  # k = min(6, 80 // 10)
    xs = (x - x.mean(0)) / x.std(0)
    _, s, vt = np.linalg.svd(xs.astype(np.float64), full_matrices=False)
    new = rng.normal(size=(9, 67)).astype(np.float32)
    new_s = (new - x.mean(0)) / x.std(0)
    expected = new_s @ vt[:6].T * np.sqrt(79) / s[:6]
    got = w.whiten(new)
    signs = np.sign((got * expected).sum(0))
    np.testing.assert_allclose(got * signs, expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose((w.whiten(x) ** 2).mean(0) * 80 / 79, 1.0, rtol=1e-3)
    np.testing.assert_allclose(w.fitted, w.whiten(x), rtol=1e-3, atol=1e-3)
    assert P.Whitener.fit(x[:25], components=6).proj.shape == (25, 2)


def test_block_probe_is_one_regression_over_per_block_pcas() -> None:
    """The probe equals an independent refit: a PCA per block (`Whitener`), then one logistic
    regression (Newton, below) over all their directions; each block's own regression scores
    `block_decisions`; widths that do not cover the rows fail."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 67)).astype(np.float32)
    y = np.r_[np.zeros(40), np.ones(40)]
    x[y == 1, 31] += 1.0  # a difference in the second block only
    probe = P.BlockProbe.fit(x, y, (30, 30, 7), components=6)
    new = rng.normal(size=(9, 67)).astype(np.float32)
    cols = [(0, 30), (30, 60), (60, 67)]
    ws = [P.Whitener.fit(x[:, a:b], components=6) for a, b in cols]
    u, u_new = ([w.whiten(z[:, a:b]) for w, (a, b) in zip(ws, cols, strict=True)] for z in (x, new))
    theta = _newton(np.hstack(u), y, 1.0)
    np.testing.assert_allclose(probe.decision(new), np.hstack(u_new) @ theta[:-1] + theta[-1],
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    for j in range(3):
        t = _newton(u[j], y, 1.0)
        np.testing.assert_allclose(probe.block_decisions(new)[:, j], u_new[j] @ t[:-1] + t[-1],
                                   rtol=1e-3, atol=1e-3)  # fmt: skip
    with pytest.raises(ValueError, match="sum to 66"):
        P.BlockProbe.fit(x, y, (30, 30, 6))


def test_grouped_folds_keep_each_group_in_one_fold_and_balance_classes() -> None:
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    groups = np.r_[np.char.add("r:", rng.integers(0, 25, 60).astype(str)),
                   np.char.add("f:", np.arange(60).astype(str))]  # fmt: skip
    fold = C.grouped_folds(y, groups, 5, rng)
    for g in np.unique(groups):
        assert len(np.unique(fold[groups == g])) == 1, g
    biggest = max(np.unique(groups[y == 0], return_counts=True)[1])
    for c in (0, 1):
        counts = np.bincount(fold[y == c], minlength=5)
        assert counts.max() - counts.min() <= biggest
    with pytest.raises(InputError, match="spans both sides"):
        C.grouped_folds(y, np.r_[groups[:60], groups[:60]], 5, rng)


def test_split_halves_by_group_and_nearly_equal() -> None:
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 40, 200).astype(str)
    a, b = C.split_halves(groups, rng)
    assert not set(groups[a]) & set(groups[b]) and len(a) + len(b) == 200
    assert abs(len(a) - len(b)) <= np.unique(groups, return_counts=True)[1].max()


def _noise_set(rng: np.random.Generator, n: int, bright: float = 0.0) -> np.ndarray:
    base = np.linspace(60, 180, 32)[None, :] + np.linspace(0, 40, 32)[:, None]
    return np.clip(base + bright + rng.normal(0, 20, (n, 32, 32)), 0, 255).astype(np.uint8)


def test_equal_sides_seeds_and_sizes_above_the_images() -> None:
    rng = np.random.default_rng(6)
    real, fake = _noise_set(rng, 15), _noise_set(rng, 40)
    kw = dict(sizes=(16, 32, 64), repeats=2, boot=200)
    r1 = C.c2st(real, fake, seed=3, **kw)  # type: ignore[arg-type]
    assert r1 == C.c2st(real, fake, seed=3, **kw)  # type: ignore[arg-type]
    assert r1 != C.c2st(real, fake, seed=4, **kw)  # type: ignore[arg-type]
    assert [(r.n_per_side, r.n_real, r.n_fake) for r in r1] == [(15, 15, 40)] * 3
    assert r1[2].auc is None and "above the smallest image side (32 px)" in r1[2].note
    assert all(r.auc is not None and r.ci is not None for r in r1[:2])
    capped = C.c2st(real, fake, sizes=(16,), repeats=1, boot=50, max_per_side=10)
    assert capped[0].n_per_side == 10


def test_separable_sets_score_one_and_identical_distributions_near_half() -> None:
    """Separable sets score ~1. Identical distributions: over 10 seeded nulls of 100 images a
    side, the mean AUC is within 0.05 of 0.5 and at least 7 of the 10 intervals cover 0.5
    (binomial: a nominal 95 % interval fails that with probability 0.001, a 90 % one 0.013).
    Several seeds, because one null draw is a coin toss: at 40 a side this probe's null AUC averaged
    0.46 / 0.45 at 8 / 32 px over 12 seeds (sd 0.07), the earlier one-PCA probe's 0.48 / 0.45
    (sd 0.06 / 0.09): the small-sample negative bias of a cross-validated AUC (docs/fid.md)."""
    rng = np.random.default_rng(7)
    real = _noise_set(rng, 100)
    bright = C.c2st(real, _noise_set(rng, 100, bright=25), sizes=(8, 32), repeats=2, boot=200)
    assert all(r.auc is not None and r.auc > 0.97 for r in bright)
    aucs: dict[int, list[float]] = {8: [], 32: []}
    covered = {8: 0, 32: 0}
    for seed in range(10):
        same = C.c2st(_noise_set(rng, 100), _noise_set(rng, 100), sizes=(8, 32), repeats=2,
                      boot=200, seed=seed, blocks=False)  # fmt: skip
        for r in same:
            assert r.auc is not None and r.ci is not None
            aucs[r.size].append(r.auc)
            covered[r.size] += r.ci[0] <= 0.5 <= r.ci[1]
    for size in aucs:
        assert abs(np.mean(aucs[size]) - 0.5) < 0.05, (size, aucs[size])
        assert covered[size] >= 7, (size, covered[size], aucs[size])


def _scenes(rng: np.random.Generator, n: int, bump: float = 0.0, blur: float = 0.0) -> np.ndarray:
    """(n, 64, 64) uint8: a gradient, a per-image random brightness tilt, white grain (sigma
    20 grey levels; Gaussian-blurred by `blur` px when > 0), and a smooth bright bump of
    `bump` grey levels in the upper left (a layout change with no edge in it)."""
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    base = 60 + 120 * xx + 40 * yy + bump * np.exp(-((xx - 0.3) ** 2 + (yy - 0.3) ** 2) / 0.02)
    tilt = rng.normal(0, 15, (n, 1, 1)) * (xx - 0.5)
    grain = rng.normal(0, 20, (n, 64, 64)).astype(np.float32)
    if blur > 0:
        grain = np.stack([cv2.GaussianBlur(g, (0, 0), blur) for g in grain])
    return np.clip(base + tilt + grain, 0, 255).astype(np.uint8)


def test_blocks_say_what_separates_layout_or_sharpness() -> None:
    """Each block alone, same folds: a smooth bright bump (layout) is seen by the pixels and
    not by the position-free texture quantiles; blurred grain (sharpness, same means) by the
    detail and texture blocks and not by the pixels. The whole probe sees both."""
    rng = np.random.default_rng(11)
    real = _scenes(rng, 60)
    kw = dict(sizes=(32,), repeats=2, boot=100)
    layout = C.c2st(real, _scenes(rng, 60, bump=30), **kw)[0]  # type: ignore[arg-type]
    soft = C.c2st(real, _scenes(rng, 60, blur=1.5), **kw)[0]  # type: ignore[arg-type]
    assert layout.blocks is not None and soft.blocks is not None
    assert list(layout.blocks) == list(C.BLOCKS)
    assert layout.blocks["pixels"] > 0.9 and layout.blocks["texture"] < 0.75, layout.blocks
    assert soft.blocks["detail"] > 0.9 and soft.blocks["texture"] > 0.9, soft.blocks
    assert soft.blocks["pixels"] < 0.75, soft.blocks
    assert layout.auc is not None and soft.auc is not None
    assert min(layout.auc, soft.auc) > 0.9
    assert "blocks" in layout.to_dict() and layout.to_dict()["blocks"] == layout.blocks


def test_too_few_groups_and_bad_images_are_input_errors() -> None:
    rng = np.random.default_rng(8)
    real, fake = _noise_set(rng, 12), _noise_set(rng, 12)
    with pytest.raises(InputError, match="at least 5 groups.*REAL has 3"):
        C.c2st(real, fake, real_groups=[i % 3 for i in range(12)])
    with pytest.raises(InputError, match="float in \\[-1, 1\\]"):
        C.c2st(real.astype(np.float32), fake)
    with pytest.raises(InputError, match="one group per image"):
        C.c2st(real, fake, fake_groups=[1, 2])
    with pytest.raises(InputError, match="baseline|at least 5 groups"):
        C.baseline(real[:8])  # halves of 4


# ---- calibration on real chest X-rays (read in place, never copied) -------------------------

N_REAL = 240  # COVID images of the cohen set: ~120 per side after the patient split
PATIENT = re.compile(r"patientid=([^;]+)")


@pytest.fixture(scope="module")
def covid(cxr_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of real COVID X-rays at 224 px (uint8, as `fid` scores them) and their
    patient ids, decoded and resized by the project's own code."""
    with open(cxr_data / "SOURCES.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["class"] == "covid" and r["path"].startswith("cohen")]  # fmt: skip
    pick = np.random.default_rng(0).choice(len(rows), N_REAL, replace=False)
    imgs, groups = [], []
    for i in sorted(pick):
        gray, _, _ = read_gray(cxr_data / rows[i]["path"])
        imgs.append(to_uint8(preprocess_image(gray, None, 224)))
        m = PATIENT.search(rows[i]["note"])
        groups.append(m.group(1) if m else rows[i]["path"])
    return np.stack(imgs), np.asarray(groups)


def _blurred(imgs: np.ndarray) -> np.ndarray:
    return np.stack([to_uint8(cv2.GaussianBlur(im.astype(np.float32) / 127.5 - 1, (0, 0), 2.0))
                     for im in imgs])  # fmt: skip


def _one_template(img: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """One real image n times: shifted up to 6 px, brightness/contrast jitter, noise sd 3."""
    out = []
    for _ in range(n):
        dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        x = cv2.warpAffine(img.astype(np.float32), m, (224, 224), borderMode=cv2.BORDER_REFLECT)
        x = x * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10) + rng.normal(0, 3, x.shape)
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return np.stack(out)


def _marked(imgs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three thin (1 px) white circles, lines or arrows drawn at random places on each copy."""
    out = []
    for im in imgs:
        x = im.copy()
        for _ in range(3):
            c = tuple(int(v) for v in rng.integers(40, 184, 2))
            kind = int(rng.integers(3))
            if kind == 0:
                cv2.circle(x, c, int(rng.integers(8, 25)), 255, 1, cv2.LINE_AA)
            elif kind == 1:
                end = tuple(int(v) for v in rng.integers(20, 204, 2))
                cv2.line(x, c, end, 255, 1, cv2.LINE_AA)
            else:
                end = (c[0] + int(rng.integers(-30, 30)), c[1] + int(rng.integers(-30, 30)))
                cv2.arrowedLine(x, c, end, 255, 1, cv2.LINE_AA)
        out.append(x)
    return np.stack(out)


def _contoured(imgs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Four wavy closed outlines painted into the lung fields of each copy, a bright 2 px line
    (+45 grey levels) with a dark one (-35) 2 px below and right of it: the embossed
    "worm" outlines a generator trained with `--fixed 10` painted (bench/RESULTS.md)."""
    theta = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    out = []
    for im in imgs:
        overlay = np.zeros((224, 224), np.float32)
        for _ in range(4):
            cx = float(rng.uniform(50, 95) if rng.random() < 0.5 else rng.uniform(130, 175))
            cy, r0 = float(rng.uniform(60, 160)), float(rng.uniform(8, 20))
            p1, p2 = rng.uniform(0, 2 * np.pi, 2)
            r = r0 * (1 + 0.25 * np.sin(3 * theta + p1) + 0.15 * np.sin(5 * theta + p2))
            pts = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], 1)
            cv2.polylines(overlay, [np.rint(pts).astype(np.int32)], True, 45.0, 2, cv2.LINE_AA)
            cv2.polylines(overlay, [np.rint(pts + 2).astype(np.int32)], True, -35.0, 2,
                          cv2.LINE_AA)  # fmt: skip
        x = im.astype(np.float32) + cv2.GaussianBlur(overlay, (0, 0), 0.7)
        out.append(np.clip(x, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.realdata
def test_calibration_on_real_xrays(covid: tuple[np.ndarray, np.ndarray]) -> None:
    """REAL = one patient-grouped half; FAKE = the other half untouched (null), blurred
    (sigma 2 px at 224), marked, one real image repeated with jitter, or with painted wavy
    outlines."""
    imgs, groups = covid
    rng = np.random.default_rng(0)
    a, b = C.split_halves(groups, rng)
    real, other = imgs[a], imgs[b]
    cases = {
        "null": (other, groups[b]),
        "blur": (_blurred(other), groups[b]),
        "marks": (_marked(other, rng), groups[b]),
        "template": (_one_template(other[0], len(b), rng), None),
        "contours": (_contoured(other, rng), groups[b]),
    }
    res, t0 = {}, time.perf_counter()
    for name, (fake, fake_groups) in cases.items():
        got = C.c2st(real, fake, real_groups=groups[a], fake_groups=fake_groups, seed=0)
        res[name] = {r.size: r for r in got}
    print(f"\nC2ST calibration, {len(a)} vs {len(b)} real COVID images, "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    for name, by_size in res.items():
        print(name, {s: (round(r.auc, 3), [round(v, 3) for v in r.ci],
                         {k: round(v, 2) for k, v in r.blocks.items()})
                     for s, r in by_size.items()})  # fmt: skip
    for r in res["null"].values():
        assert abs(r.auc - 0.5) < 0.1 and r.ci[0] <= 0.5 <= r.ci[1], r
    blur = res["blur"]
    assert blur[128].auc > 0.9 and blur[128].ci[0] > 0.5
    assert blur[16].auc < blur[128].auc  # blur is a fine-scale difference
    assert res["template"][32].auc > 0.9
    assert max(r.auc for r in res["marks"].values()) > 0.8
    assert res["contours"][64].auc > 0.8 and res["contours"][64].ci[0] > 0.5
    # a PCA per block, so a difference that one block alone sees clearly is not drowned by the
    # others (the one-PCA probe it replaced scored the contours 0.72 at 128 px where its detail
    # block alone scored 0.83)
    for name in ("blur", "marks", "template", "contours"):
        for r in res[name].values():
            if max(r.blocks.values()) > 0.8:
                assert r.auc >= max(r.blocks.values()) - 0.05, (name, r.size, r.auc, r.blocks)


@pytest.mark.realdata
def test_fixed_pattern_share_on_real_xrays(covid: tuple[np.ndarray, np.ndarray]) -> None:
    """Real X-rays share almost no fine detail (measured 0.004 on the 85 held-out and 342
    training COVID images of the shared workspace); blurring keeps it low (a blur is not a
    pattern); a faint lattice glued to the pixels, rms 0.012 in [0, 1] (about the grid the
    default generator drew: 0.0098), is seen: its share is near the energy ratio it was planted
    at (clipping at black and white is what the tolerance allows for)."""
    imgs, groups = covid
    a, _ = C.split_halves(groups, np.random.default_rng(0))
    half = imgs[a]
    real = fixed_share(half)
    assert real is not None and abs(real) < 0.02
    blurred = fixed_share(_blurred(half))
    # a blur removes more of each image's own detail than of the little they share: 0.02 when
    # written, an order of magnitude under every generated set measured (0.19-0.58)
    assert blurred is not None and abs(blurred) < 0.05
    i, j = np.mgrid[:224, :224]
    # +-3 grey levels (0.012 in [0, 1]): whole levels, so that uint8 rounding keeps it exact
    lattice = 3 / 255 * np.sign(np.cos(2 * np.pi * i / 3.4) + np.cos(2 * np.pi * j / 5.7))
    planted = [np.clip(np.rint(im + 255 * lattice), 0, 255).astype(np.uint8) for im in half]
    def fine(x: np.ndarray) -> np.ndarray:  # scipy's blur: not the judge's own (OpenCV)
        return x - scipy.ndimage.gaussian_filter(x, 2.0, mode="mirror", truncate=4.0)

    e_real = np.mean([np.mean(fine(im / 255.0) ** 2) for im in half])
    d_lat = fine(lattice)
    want = np.mean(d_lat**2) / (np.mean(d_lat**2) + e_real)
    got = fixed_share(planted)
    print(f"\nfixed-pattern share: real half {real:.4f}, blurred {blurred:.4f}, lattice "
          f"{got:.4f} (planted at {want:.4f})")  # fmt: skip
    assert got is not None and got > 0.05 and got == pytest.approx(want, rel=0.1)
