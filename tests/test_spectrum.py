"""The spectrum and sharpness check (cxraug.metrics.spectrum) against closed forms: white
noise is flat, a Gaussian blur multiplies the power by its squared transfer function, a set
against itself scores 1."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxraug.core.errors import InputError
from cxraug.metrics import spectrum as S
from cxraug.prep.phantom import make_phantom


def _noise(rng: np.random.Generator, n: int, size: int = 128) -> list[np.ndarray]:
    """White noise, float in [-1, 1] (the project's float convention), far from clipping."""
    return [np.clip(rng.normal(0, 0.2, (size, size)), -1, 1).astype(np.float32) for _ in range(n)]


def test_white_noise_has_a_flat_unit_spectrum() -> None:
    imgs = _noise(np.random.default_rng(0), 30)
    r = S.compare_spectra(imgs, imgs)
    power = np.asarray(r.real_power)
    assert len(power) == 64 and 0.5 / 128 <= r.freq[0] < 1.5 / 128  # ring 1: round(f 128) = 1
    # ring averages of 30 periodograms: E = 1 at every f, except that the removed mean (a
    # hole at f = 0) is smeared by the window's kernel over the first rings
    np.testing.assert_allclose(power[3:], 1.0, atol=0.15)
    assert power[0] < power[10]
    # energy above 1/4 Nyquist: the disc's area outside radius 0.125 over the whole disc
    assert r.hf_share_real == pytest.approx(1 - 0.125**2 / 0.5**2, abs=0.01)
    assert r.hf_ratio == 1.0 and r.laplacian_ratio == 1.0


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img.astype(np.float64), (0, 0), sigma).astype(np.float32)


def test_blur_multiplies_power_by_the_squared_gaussian_transfer() -> None:
    """P_blur(f) / P(f) = exp(-4 pi^2 sigma^2 f^2) x var(x) / var(blur x): each image is
    standardised first, so the ratio of variances is put back."""
    sigma = 1.5
    imgs = _noise(np.random.default_rng(1), 20)
    blurred = [_blur(im, sigma) for im in imgs]
    r = S.compare_spectra(imgs, blurred)
    var_ratio = np.mean([im.var() for im in imgs]) / np.mean([b.var() for b in blurred])
    f = np.asarray(r.freq)
    measured = np.asarray(r.fake_power) / np.asarray(r.real_power) / var_ratio
    expected = np.exp(-4 * np.pi**2 * sigma**2 * f**2)
    mid = (f > 0.02) & (f < 0.2)  # low/mid band: beyond it the ratio is below 1e-3
    np.testing.assert_allclose(measured[mid], expected[mid], rtol=0.12, atol=0.01)
    # share above f_c of a spectrum H^2(f) = exp(-a f^2) on the disc |f| <= 1/2 (area element
    # 2 pi f df): (exp(-a f_c^2) - exp(-a / 4)) / (1 - exp(-a / 4)); white noise: 1 - 4 f_c^2
    a, fc = 4 * np.pi**2 * sigma**2, S.CUTOFF
    share = (np.exp(-a * fc**2) - np.exp(-a / 4)) / (1 - np.exp(-a / 4))
    assert r.hf_ratio == pytest.approx(share / (1 - 4 * fc**2), rel=0.06)
    assert r.laplacian_ratio < 0.1


def test_blurred_phantom_has_less_high_frequency_energy() -> None:
    rng = np.random.default_rng(2)
    real = [make_phantom(rng, "normal", (224, 224)) for _ in range(6)]
    blurred = [np.clip(np.rint(cv2.GaussianBlur(im.astype(np.float32), (0, 0), 2.0)), 0,
                       255).astype(np.uint8) for im in real]  # fmt: skip
    r = S.compare_spectra(real, blurred)
    assert r.hf_ratio < 0.8 and r.laplacian_ratio < 0.8
    f = np.asarray(r.freq)
    ratio = np.asarray(r.fake_power) / np.asarray(r.real_power)
    low = (f > 0.01) & (f < 0.06)  # where the phantom's power is far above its quantisation
    expected = np.exp(-4 * np.pi**2 * 4.0 * f**2)
    scale = np.median(ratio[low] / expected[low])  # the variance ratio of standardising
    np.testing.assert_allclose(ratio[low] / scale, expected[low], rtol=0.2)
    same = S.compare_spectra(real, real)
    assert same.hf_ratio == 1.0 and same.laplacian_ratio == 1.0


def test_mixed_sizes_share_one_frequency_grid_and_bad_input_is_refused() -> None:
    rng = np.random.default_rng(3)
    r = S.compare_spectra(_noise(rng, 3, 64), _noise(rng, 3, 96))
    assert len(r.freq) == 32 and r.sizes == ["64x64", "96x96"]
    assert 0.8 < r.hf_ratio < 1.2
    with pytest.raises(InputError, match="constant image"):
        S.compare_spectra([np.zeros((32, 32), np.uint8)], _noise(rng, 1, 32))
    with pytest.raises(InputError, match="at least one image"):
        S.compare_spectra([], _noise(rng, 1, 32))


def _fine(x: np.ndarray) -> np.ndarray:
    """x - its Gaussian blur (sigma FIXED_SIGMA), by scipy: an implementation beside OpenCV's."""
    import scipy.ndimage

    return x - scipy.ndimage.gaussian_filter(x, S.FIXED_SIGMA, mode="mirror", truncate=4.0)


def test_fixed_pattern_share_is_zero_for_independent_images_and_exact_for_a_planted_one() -> None:
    """Independent noise images share nothing (|share| within the estimator's noise, no 1/N
    bias); adding one pattern p to every image gives |fine(p)|^2 / (|fine(p)|^2 + E|fine(e)|^2)
    (fine detail is linear), with both energies computed by scipy."""
    rng = np.random.default_rng(1)
    noise = _noise(rng, 60, 64)
    alone = S.fixed_share(noise)
    assert alone is not None and abs(alone) < 0.01  # the plain |mean|^2 / E would read 1/60
    u = [(x.astype(np.float64) + 1) / 2 for x in noise]  # what the judge reads, in [0, 1]
    e_noise = np.mean([np.mean(_fine(x) ** 2) for x in u])
    pattern = rng.normal(0, 0.07, (64, 64))  # a fixed grain, in [0, 1] units
    e_pattern = np.mean(_fine(pattern) ** 2)
    want = e_pattern / (e_pattern + e_noise)
    planted = [(x + pattern) * 2 - 1 for x in u]  # back to [-1, 1]
    got = S.fixed_share(planted)
    assert 0.2 < want < 0.8 and got == pytest.approx(want, abs=0.02)
    assert S.fixed_share([planted[0]] * 5) == pytest.approx(1.0)  # one image five times
    assert S.fixed_share(noise[:1]) is None and S.fixed_share([noise[0], noise[1][:32]]) is None
    r = S.compare_spectra(noise, planted)
    assert r.fixed_real == pytest.approx(alone) and r.fixed_fake == pytest.approx(got)
