"""G's extra terms: the coarse-layout moment loss (`train --moments`, cxraug.gan.moments), the
same on the thumbnails' detail maps (`train --detail`), the spectrum loss (`train
--spectrum`, cxraug.gan.spectral) and the fixed-pattern term (`train --fixed`, the same).

Expectations come from maths (whitening gives identity moments on the set it was fitted on;
the U-statistics against a brute-force double loop), from an independent implementation (the
spectrum and the fixed-pattern share against `cxraug fid`'s numpy and OpenCV checks) and from
toy optimisations that each loss must move."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_recipes import CONV_TINY
from test_train import make_workspace, toy_images

from cxraug.core.errors import InputError
from cxraug.core.tf_setup import tf
from cxraug.gan.config import TrainConfig, recipe_config
from cxraug.gan.moments import (
    MomentLoss,
    MomentTargets,
    feature_maps,
    pair_loss,
    pool_factor,
    thumbnails,
)
from cxraug.gan.spectral import EPS, SpectrumLoss, fixed_pattern_loss
from cxraug.gan.step import build_state, make_step, resident_dataset
from cxraug.metrics.probe import block_widths, scale_features
from cxraug.metrics.spectrum import compare_spectra, fixed_share, set_spectrum
from cxraug.train import train


def _layouts(n: int, size: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """(n, size, size) smooth random layouts in [-1, 1]: 4 x 4 Gaussian fields, upsampled."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 0.3, (n, 4, 4))
    k = size // 4
    return np.clip(np.kron(coarse, np.ones((k, k))) + shift, -1, 1).astype(np.float32)


def test_thumbnails_are_block_means_and_match_tf_average_pooling() -> None:
    assert pool_factor(224) == 7 and pool_factor(56) == 2 and pool_factor(16) == 1
    x = np.random.default_rng(0).normal(size=(3, 10, 10)).astype(np.float32)
    t = thumbnails(x, 3)  # 3 x 3 blocks; the 10th row and column are dropped
    assert t.shape == (3, 9)
    assert t[1, 4] == pytest.approx(x[1, 3:6, 3:6].mean(), rel=1e-6)
    pooled = tf.nn.avg_pool2d(x[..., None], 3, 3, "VALID").numpy().reshape(3, 9)
    np.testing.assert_allclose(t, pooled, rtol=1e-5, atol=1e-6)


def test_whitening_gives_zero_mean_and_identity_covariance_on_the_fitted_set() -> None:
    img = _layouts(120, 16, seed=1)
    labels = np.arange(120) % 2
    tg = MomentTargets.from_images(img, labels, num_labels=3, directions=8)
    assert tg.mask[2].sum() == 0  # a label without images has nothing to match
    for lab in (0, 1):
        p = tg.whitened(thumbnails(img[labels == lab], tg.factor), np.full(60, lab))
        assert tg.mask[lab].sum() == 8
        np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(np.cov(p.T), np.eye(8), atol=1e-3)
        r = tg.residual(thumbnails(img[labels == lab], tg.factor), np.full(60, lab))
        np.testing.assert_allclose(r.mean(axis=0), 0, atol=1e-4)
        varies = r.std(axis=0, ddof=1) > 0.5  # pixels above the floor: unit residual sd
        np.testing.assert_allclose(r.std(axis=0, ddof=1)[varies], 1, atol=1e-3)
        inside = tg.mean[lab] + np.arange(1, 9) @ tg.unit[lab].T  # in the k directions' span
        np.testing.assert_allclose(tg.residual(inside[None], np.array([lab])), 0, atol=1e-3)


def test_directions_are_capped_by_the_images_of_a_label() -> None:
    img = _layouts(8, 16, seed=2)
    tg = MomentTargets.from_images(img, np.zeros(8, int), num_labels=1, directions=32)
    assert tg.mask[0].sum() == 7  # n - 1: eight images span at most seven directions


def _brute_force(p: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    total, pairs = 0.0, 0
    for i in range(len(p)):
        for j in range(len(p)):
            if i == j or labels[i] != labels[j]:
                continue
            k = mask[i].sum()
            qi, qj = (p[i] ** 2 - 1) * mask[i], (p[j] ** 2 - 1) * mask[j]
            total += (p[i] @ p[j] + qi @ qj) / k
            pairs += 1
    return total / pairs if pairs else 0.0


def test_pair_loss_equals_a_brute_force_double_loop() -> None:
    rng = np.random.default_rng(3)
    p = rng.normal(size=(9, 5))
    labels = np.array([0, 1, 0, 2, 1, 0, 3, 1, 0])  # label 2 and 3: one image each, no pair
    mask = np.ones((9, 5))
    mask[labels == 1, 3:] = 0
    p *= mask
    got = float(pair_loss(tf.constant(p), tf.constant(labels), tf.constant(mask)))
    assert got == pytest.approx(_brute_force(p, labels, mask), rel=1e-9)
    lonely = pair_loss(tf.constant(p[:2]), tf.constant(labels[:2]), tf.constant(mask[:2]))
    assert float(lonely) == 0.0  # no two fakes share a label: no term


def test_loss_is_unbiased_for_real_draws_and_grows_with_a_shift_or_a_collapse() -> None:
    """Fresh draws of the real distribution score ~0 (the U-statistics remove the batch
    size's Var/n, so a varied batch is never penalised for varying); a shifted or collapsed
    set scores well above that."""
    real = _layouts(2000, 16, seed=4)
    labels = np.zeros(2000, np.int32)
    loss = MomentLoss(MomentTargets.from_images(real, labels, 1, directions=8))

    def mean_loss(x: np.ndarray) -> float:
        y = tf.zeros(32, tf.int32)
        return float(np.mean([loss(tf.constant(x[i : i + 32, ..., None]), y)
                              for i in range(0, len(x), 32)]))  # fmt: skip

    fresh = mean_loss(_layouts(1600, 16, seed=5))
    shifted = mean_loss(_layouts(1600, 16, seed=5, shift=0.2))
    collapsed = mean_loss(np.repeat(_layouts(1, 16, seed=6), 1600, axis=0))
    assert abs(fresh) < 0.05
    assert shifted > 0.5 and collapsed > 0.5


def test_the_loss_moves_a_toy_generator_to_the_real_moments() -> None:
    """Gradients reach G: a linear generator x = b + z A (fresh z every step, as in training)
    trained on the loss alone moves its mean and spread to the real ones in the matched
    directions. (The U-statistics are unbiased over batches, so their expected gradient is
    that of |E p|^2 + |E p^2 - 1|^2 / k; a FIXED batch could drive them below 0 instead.)"""
    real = _layouts(400, 16, seed=7)
    tg = MomentTargets.from_images(real, np.zeros(400, int), 1, directions=8)
    loss = MomentLoss(tg)
    rng = tf.random.Generator.from_seed(9)
    bias = tf.Variable(_layouts(1, 16, seed=8, shift=0.3).reshape(1, 256))
    mix = tf.Variable(rng.normal([4, 256]) * 0.01)
    y = tf.zeros(32, tf.int32)

    def draw(n: int) -> tf.Tensor:
        return tf.reshape(bias + rng.normal([n, 4]) @ mix, [n, 16, 16, 1])

    def offsets() -> tuple[float, float]:  # |E p| and |E p^2 - 1| over 4,000 draws
        p = tg.whitened(draw(4000).numpy().reshape(4000, 256), np.zeros(4000, int))
        return float(np.linalg.norm(p.mean(0))), float(np.linalg.norm((p**2).mean(0) - 1))

    before = offsets()
    opt = tf.keras.optimizers.Adam(0.01)
    for _ in range(300):
        with tf.GradientTape() as tape:
            v = loss(draw(32), y)
        opt.apply_gradients(zip(tape.gradient(v, [bias, mix]), [bias, mix], strict=True))
    after = offsets()
    assert after[0] < 0.3 * before[0] and after[1] < 0.5 * before[1], (before, after)


def test_moments_is_conv_only_and_recorded_in_the_run_config(tmp_path: Path) -> None:
    for term in ("moments", "detail", "spectrum", "fixed"):
        with pytest.raises(InputError, match=term):
            recipe_config("paper", **{term: 1.0})
        assert getattr(TrainConfig(), term) == 0.0  # off unless asked for (bench/RESULTS.md)
        assert getattr(TrainConfig.from_dict({"arch": "conv"}), term) == 0.0  # an old config
    cfg = recipe_config("paper", **{**CONV_TINY, "moments": 2.0, "spectrum": 0.5, "detail": 3.0,
                                    "fixed": 4.0, "iterations": 4,
                                    "checkpoint_interval": 2})  # fmt: skip
    ws = make_workspace(tmp_path / "ws")
    train(ws, cfg, name="m", quiet=True)
    saved = json.loads((ws.runs_dir / "m" / "config.json").read_text())
    assert saved["moments"] == 2.0 and saved["spectrum"] == 0.5 and saved["detail"] == 3.0
    assert saved["fixed"] == 4.0


@pytest.mark.parametrize("term", ["moments", "detail", "spectrum", "fixed"])
def test_the_conv_step_with_a_term_differs_from_without_only_in_g(term: str) -> None:
    """The term enters G's objective only: one step from the same state moves G's weights
    differently and D's weights identically (D steps before G)."""
    img, labels = toy_images()
    out = {}
    for w in (0.0, 5.0):
        st = build_state(recipe_config("paper", **{**CONV_TINY, term: w}))
        make_step(st, *resident_dataset(img, labels))(0.0, False)
        out[w] = ([v.numpy() for v in st.gen.weights], [v.numpy() for v in st.disc.weights])
    for a, b in zip(out[0.0][1], out[5.0][1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(out[0.0][0], out[5.0][0], strict=True))


# ---------------------------------------------------------------- the detail-map term


def test_detail_maps_are_the_c2st_probes_detail_block_in_numpy_and_in_tf() -> None:
    """An independent implementation: the probe's own features (cv2.resize INTER_AREA, which
    at an integer factor is the block mean, then cv2.Laplacian), against the targets' numpy
    maps and the loss's tf maps (reflect padding + a 3 x 3 conv)."""
    img = np.clip(_layouts(4, 64, seed=20) + _textures(4, 64, seed=21), -1, 1)
    tg = MomentTargets.from_images(img, np.zeros(4, int), 1, directions=3, kind="detail")
    assert tg.factor == 2 and tg.kind == "detail"
    side = 64 // tg.factor
    s2 = block_widths(side)[0]
    probe = scale_features(list(img), side)[:, s2 : 2 * s2]
    np.testing.assert_allclose(feature_maps(img, tg.factor, "detail"), probe, atol=1e-4)
    maps = MomentLoss(tg).maps(tf.constant(img[..., None])).numpy().reshape(4, -1)
    np.testing.assert_allclose(maps, probe, atol=1e-4)
    with pytest.raises(ValueError, match="kind"):
        MomentTargets.from_images(img, np.zeros(4, int), 1, kind="edges")


def test_detail_targets_keep_only_directions_above_the_noise_edge() -> None:
    """White detail maps have no direction to whiten (every sample direction is noise, whose
    variance the sample inflates ~(1 + sqrt(D / n))^2-fold: maths, Marchenko-Pastur); images
    whose grain strength varies from one to the next share one strong mode, and it is kept."""
    white = _textures(300, 64, seed=25)
    assert MomentTargets.from_images(white, np.zeros(300, int), 1, kind="detail").mask.sum() == 0
    gain = np.random.default_rng(26).uniform(0.2, 1.5, (300, 1, 1)).astype(np.float32)
    varied = np.clip(white * gain, -1, 1)
    k = MomentTargets.from_images(varied, np.zeros(300, int), 1, kind="detail").mask.sum()
    assert 1 <= k <= 3


def test_the_detail_loss_sees_blur_at_places_and_not_fresh_draws() -> None:
    """Fresh draws score ~0; the same draws blurred in their top half only (same layout, same
    pixel means: only where the image is sharp changes) score well above that."""
    def draw(n: int, seed: int, blur_top: bool = False) -> np.ndarray:
        x = np.clip(_layouts(n, 64, seed=seed) + _textures(n, 64, seed=seed + 1), -1, 1)
        if blur_top:
            x[:, :32] = _textures(n, 64, seed=seed + 1, blur=2.0)[:, :32] + \
                _layouts(n, 64, seed=seed)[:, :32]
        return x

    loss = MomentLoss(MomentTargets.from_images(draw(600, 22), np.zeros(600, int), 1,
                                                directions=16, kind="detail"))  # fmt: skip
    y = tf.zeros(64, tf.int32)

    def mean_loss(x: np.ndarray) -> float:
        return float(np.mean([loss(tf.constant(x[i : i + 64, ..., None]), y)
                              for i in range(0, len(x), 64)]))  # fmt: skip

    fresh, blurred = mean_loss(draw(640, 30)), mean_loss(draw(640, 30, blur_top=True))
    assert abs(fresh) < 0.05 and blurred > 0.5, (fresh, blurred)


def _train_blur_kernel(loss: Any, size: int, seed: int,
                       measure: Callable[[Callable[[int], Any]], float]) -> tuple[float, float]:
    """The toy generator of the sharpening tests: white noise (fresh every step) blurred by a
    learnable 3 x 3 kernel, a box blur at first, trained 100 Adam steps on `loss` alone.
    Returns `measure(draw)` before and after, draw(n) -> (n, size, size, 1) samples."""
    rng = tf.random.Generator.from_seed(seed)
    kernel = tf.Variable(np.full((3, 3, 1, 1), 1 / 9, np.float32))
    y = tf.zeros(16, tf.int32)

    def draw(n: int) -> Any:
        return tf.nn.conv2d(rng.normal([n, size, size, 1]) * 0.3, kernel, 1, "SAME")

    before = measure(draw)
    opt = tf.keras.optimizers.Adam(0.02)
    for _ in range(100):
        with tf.GradientTape() as tape:
            v = loss(draw(16), y)
        opt.apply_gradients([(tape.gradient(v, kernel), kernel)])
    return before, measure(draw)


def test_the_detail_loss_sharpens_a_toy_generator() -> None:
    """The toy blur generator, trained on the detail loss alone against white-noise images at
    64 px (32 px thumbnails): its thumbnails' mean log |Laplacian| moves towards the real one."""
    real = _textures(300, 64, seed=23)
    tg = MomentTargets.from_images(real, np.zeros(300, int), 1, directions=16, kind="detail")

    def gap(draw: Callable[[int], Any]) -> float:
        fake = feature_maps(draw(200).numpy()[..., 0], tg.factor, "detail")
        return abs(float(fake.mean() - tg.mean[0].mean()))

    before, after = _train_blur_kernel(MomentLoss(tg), 64, 24, gap)
    assert after < 0.5 * before, (before, after)


# ---------------------------------------------------------------- the spectrum term


def _textures(n: int, size: int, seed: int, blur: float = 0.0) -> np.ndarray:
    """(n, size, size) white-noise images in [-1, 1], optionally Gaussian-blurred (sigma px)."""
    import cv2

    x = np.random.default_rng(seed).normal(0, 0.3, (n, size, size)).astype(np.float32)
    if blur > 0:
        x = np.stack([cv2.GaussianBlur(im, (0, 0), blur) for im in x])
    return np.clip(x, -1, 1)


def test_the_spectrum_statistic_equals_the_fid_checks_ring_power() -> None:
    """An independent implementation: cxraug.metrics.spectrum (numpy, the fid check)."""
    img = _layouts(3, 32, seed=10) + _textures(3, 32, seed=11) * 0.2
    loss = SpectrumLoss(img, np.zeros(3, int), 1)
    got = loss.statistic(tf.constant(img[..., None])).numpy()  # (3, 16)
    for i in range(3):
        want = np.log(set_spectrum([img[i]], bins=16).power + EPS)
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)


def test_the_spectrum_loss_sees_blur_and_not_fresh_draws() -> None:
    real = _textures(200, 32, seed=12)
    loss = SpectrumLoss(real, np.zeros(200, int), 1)
    y = tf.zeros(32, tf.int32)
    fresh = float(loss(tf.constant(_textures(32, 32, seed=13)[..., None]), y))
    blurred = float(loss(tf.constant(_textures(32, 32, seed=13, blur=1.0)[..., None]), y))
    assert abs(fresh) < 0.01 and blurred > 1.0


def test_the_spectrum_loss_sharpens_a_toy_generator() -> None:
    """The toy blur generator, trained on the spectrum loss alone against white-noise images,
    sharpens: the fid check's high-frequency ratio rises towards 1."""
    real = _textures(200, 32, seed=14)

    def hf_ratio(draw: Callable[[int], Any]) -> float:
        return compare_spectra(list(real[:64]), list(draw(64).numpy()[..., 0])).hf_ratio

    before, after = _train_blur_kernel(SpectrumLoss(real, np.zeros(200, int), 1), 32, 15,
                                       hf_ratio)  # fmt: skip
    assert before < 0.75 and abs(after - 1) < 0.1, (before, after)  # box blur: 0.68


# ---------------------------------------------------------------- the fixed-pattern term


def _patterned(rng: np.random.Generator, n: int, pattern: np.ndarray) -> np.ndarray:
    """n independent noise images plus one pattern shared by all, float in [-1, 1]."""
    return (rng.normal(0, 0.2, (n, *pattern.shape)) + pattern).astype(np.float32)


def test_the_fixed_pattern_loss_equals_the_fid_judge() -> None:
    """The loss on a batch is `fid`'s fixed-pattern share of the same images (a matrix blur in
    TF against OpenCV's blur in numpy): ~0 for independent images, the share for a planted
    pattern."""
    rng = np.random.default_rng(3)
    for pattern in (np.zeros((40, 40)), rng.normal(0, 0.1, (40, 40))):
        x = _patterned(rng, 16, pattern)
        got = float(fixed_pattern_loss(tf.constant(x[..., None])))
        want = fixed_share(list(x))
        assert want is not None and got == pytest.approx(want, abs=1e-4)
    assert want > 0.1  # the planted case shares something


def test_the_fixed_pattern_loss_removes_a_shared_pattern() -> None:
    """A toy G: each image = fresh noise + a learnt pattern P (started as a random pattern,
    about a third of the images' fine detail). On the loss alone, Adam drives the shared part
    towards nothing."""
    rng = np.random.default_rng(4)
    p = tf.Variable(rng.normal(0, 0.1, (32, 32)).astype(np.float32))
    opt = tf.keras.optimizers.Adam(1e-2)
    before = fixed_share(list(_patterned(rng, 32, p.numpy())))
    for _ in range(150):
        noise = tf.constant(rng.normal(0, 0.2, (16, 32, 32)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = fixed_pattern_loss((noise + p)[..., None])
        opt.apply_gradients([(tape.gradient(loss, p), p)])
    after = fixed_share(list(_patterned(rng, 64, p.numpy())))
    assert before is not None and after is not None
    assert before > 0.2 and abs(after) < 0.02, (before, after)
