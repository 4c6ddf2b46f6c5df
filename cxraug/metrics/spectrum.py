"""Spectrum and sharpness check of `cxraug fid`: does FAKE carry the fine detail REAL does?
Pure numpy/OpenCV; images at their stored size (224 px in a workspace), no resizing.

Radially averaged power spectrum of one image x (H, W), in [0, 1] gray (`radial_power`):
1. standardise: x <- (x - mean x) / std x, so every image weighs the same in a set's average
   and the spectrum measures the SHAPE of the image's variance over frequency, not contrast;
2. window with the separable Hann window w(i, j) = h_H(i) h_W(j), h_N(i) = sin^2(pi i / N):
   the FFT treats the image as periodic, and the jump between opposite edges (a black border
   on one side, a bright label on the other) would add a cross of spurious power at every
   frequency along both axes (edge leakage), most visible exactly in the high-frequency band
   this check measures; the window tapers the image to 0 at its edges;
3. P(f) = |FFT(w x)|^2 / sum(w^2): for white noise of unit variance E P(f) = 1 at every f, so
   a flat spectrum reads as 1;
4. average P over rings of |f| = sqrt(fx^2 + fy^2) cycles/pixel: ring k = 1 .. S/2 holds the
   frequencies with round(|f| S) = k, S = the smallest image side of both sets (integer radii
   for S x S images); the corners beyond 0.5 (Nyquist) hold incomplete rings and are left out.
A set's spectrum is the mean of its images' ring averages.

High-frequency energy share of a set (`hf_share`): the energy of all its images above the
cut-off f_c = 1/4 Nyquist = 0.125 cycles/px, over their energy in 0 < |f| <= 0.5:
    share = sum_i sum_{f_c < |f| <= 0.5} P_i(f) / sum_i sum_{0 < |f| <= 0.5} P_i(f)
(sums over the 2-D frequency grid, not over rings, so each frequency counts once).
`hf_ratio` = share(FAKE) / share(REAL): < 1 = FAKE is smoother (blur), > 1 = noisier/sharper.
A Gaussian blur of std sigma px multiplies P(f) by exp(-4 pi^2 sigma^2 f^2) (the squared
amplitude transfer function), the relation tests/test_spectrum.py checks.

Laplacian variance (`laplacian_ratio`): the classic focus measure, var(lap x) with OpenCV's
4-neighbour Laplacian on x in [0, 1] (NOT standardised: contrast counts here), averaged over a
set; FAKE mean / REAL mean.

Fixed-pattern share (`fixed_share`; `fixed_real`, `fixed_fake`): how much of a set's fine detail
is the SAME in every image, i.e. glued to pixel positions rather than to the content (a
generator's grid or lattice; StyleGAN3's "texture sticking"). Fine detail of image i:
d_i = x_i - G_2 x_i (x_i in [0, 1], G_2 OpenCV's Gaussian blur of sigma FIXED_SIGMA px). Writing
d_i = mu + e_i with mu the detail common to the set and e_i independent with E e_i = 0,
E = mean_i |d_i|^2 and M = |mean_i d_i|^2 (per-pixel means) give E[M] = |mu|^2 + (E - |mu|^2) / N,
so
    |mu|^2 ~ (N M - E) / (N - 1)   (unbiased: a plain M would count 1/N of every image's detail
                                    as common),  fixed_share = |mu|^2 / E,
0 for independent images (it scatters around 0, a little below too), 1 when every image has
the same detail. Real chest X-rays, whose anatomy differs in place from one to the next, share
little (0.004-0.009 measured); the generated sets measured shared 0.19-0.36, a grid the eye
sees (bench/RESULTS.md "A judge for the grid"). Needs >= 2 images of one size: None otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from cxraug.core.errors import InputError, vassert
from cxraug.metrics.probe import as_unit_gray

#: The high-frequency band starts at 1/4 of the Nyquist frequency (0.5 cycles/px).
CUTOFF = 0.125
#: Fine detail for the fixed-pattern share: x minus its Gaussian blur of this sigma (px), i.e.
#: structure under ~6 px at 224 px, where a generator's grid sits
FIXED_SIGMA = 2.0


@dataclass(frozen=True)
class SpectrumResult:
    cutoff: float  # cycles/px
    hf_share_real: float
    hf_share_fake: float
    hf_ratio: float  # fake / real
    laplacian_var_real: float
    laplacian_var_fake: float
    laplacian_ratio: float  # fake / real
    freq: list[float]  # ring centres (mean |f| of each ring), cycles/px
    real_power: list[float]  # mean ring power of each set
    fake_power: list[float]
    sizes: list[str]  # image sizes seen, e.g. ["224x224"]
    fixed_real: float | None = None  # fixed_share(REAL); None: sizes differ or < 2 images
    fixed_fake: float | None = None  # fixed_share(FAKE)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Grid:
    freq: np.ndarray  # (H, W) |f| in cycles/px, FFT layout
    ring: np.ndarray  # (H, W) ring index per frequency, -1 = in no ring
    band: np.ndarray  # (H, W) bool: 0 < |f| <= 0.5
    hf: np.ndarray  # (H, W) bool: in the high-frequency band
    window: np.ndarray  # (H, W) Hann window
    window_energy: float


def ring_grid(h: int, w: int, bins: int, cutoff: float = CUTOFF) -> _Grid:
    """The rings, bands and window of an H x W spectrum (also train --spectrum's, gan/spectral)."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)  # (H, W) cycles/px
    inside = (f > 0) & (f <= 0.5)
    # ring k = 1..bins holds |f| within half a ring width of k / (2 bins): ring index k - 1
    k = np.rint(f * 2 * bins).astype(np.int64)
    ring = np.where(inside & (k >= 1) & (k <= bins), k - 1, -1)
    # sin^2(pi i / N): the periodic Hann window (np.hanning is the symmetric one)
    win = np.outer(np.sin(np.pi * np.arange(h) / h) ** 2, np.sin(np.pi * np.arange(w) / w) ** 2)
    return _Grid(f, ring, inside, inside & (f > cutoff), win, float((win * win).sum()))


def power_2d(img: np.ndarray, window: np.ndarray, window_energy: float) -> np.ndarray:
    """(H, W) periodogram P of the standardised, windowed image (E P = 1 for white noise)."""
    x = as_unit_gray(img).astype(np.float64)
    sd = float(x.std())
    vassert(sd > 0, "a constant image has no spectrum; remove blank images")
    z = (x - x.mean()) / sd * window
    return np.abs(np.fft.fft2(z)) ** 2 / window_energy


@dataclass
class SetSpectrum:
    freq: np.ndarray  # (bins,) mean |f| per ring
    power: np.ndarray  # (bins,) mean over images of the ring-averaged power
    hf_energy: float  # sum over images of the energy above the cut-off
    energy: float  # ... and in 0 < |f| <= 0.5
    laplacian_var: float  # mean over images of var(laplacian)


def set_spectrum(images: Sequence[np.ndarray], bins: int, cutoff: float = CUTOFF) -> SetSpectrum:
    """The ring-averaged spectrum, band energies and Laplacian variance of a set of images."""
    grids: dict[tuple[int, int], _Grid] = {}
    power, fsum, count = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    hf = total = lap = 0.0
    for im in images:
        shape = (int(im.shape[0]), int(im.shape[1]))
        g = grids.get(shape) or grids.setdefault(shape, ring_grid(*shape, bins, cutoff))
        p = power_2d(im, g.window, g.window_energy)
        in_ring = g.ring >= 0
        n = np.bincount(g.ring[in_ring], minlength=bins)
        power += np.bincount(g.ring[in_ring], p[in_ring], bins) / np.maximum(n, 1)
        fsum += np.bincount(g.ring[in_ring], g.freq[in_ring], bins)
        count += n
        hf += float(p[g.hf].sum())
        total += float(p[g.band].sum())
        lap += float(cv2.Laplacian(as_unit_gray(im).astype(np.float64), cv2.CV_64F).var())
    k = len(images)
    return SetSpectrum(fsum / np.maximum(count, 1), power / k, hf, total, lap / k)


def fixed_share(images: Sequence[np.ndarray], sigma: float = FIXED_SIGMA) -> float | None:
    """The share of the set's fine detail common to every image (module docstring); None for
    fewer than 2 images, images of several sizes, or no detail at all."""
    shapes = {tuple(im.shape[:2]) for im in images}
    if len(images) < 2 or len(shapes) != 1:
        return None
    total = np.zeros(next(iter(shapes)))
    energy = 0.0
    for im in images:
        x = as_unit_gray(im).astype(np.float64)
        d = x - cv2.GaussianBlur(x, (0, 0), sigma)
        total += d
        energy += float(np.mean(d * d))
    n = len(images)
    e = energy / n
    if e == 0:
        return None
    common = (n * float(np.mean((total / n) ** 2)) - e) / (n - 1)
    return common / e


def compare_spectra(real: Sequence[np.ndarray], fake: Sequence[np.ndarray],
                    cutoff: float = CUTOFF) -> SpectrumResult:  # fmt: skip
    """FAKE's spectrum against REAL's (module docstring). Images (H, W) uint8 or float
    [-1, 1], each at its stored size; rings of width 1/(smallest side) on a common grid."""
    if not len(real) or not len(fake):
        raise InputError("the spectrum check needs at least one image per side")
    shapes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in (*real, *fake)})
    side = min(min(im.shape[:2]) for im in (*real, *fake))
    bins = side // 2
    vassert(bins >= 4, f"images of {side} px are too small for a spectrum (need >= 8 px)")
    r, f = set_spectrum(real, bins, cutoff), set_spectrum(fake, bins, cutoff)
    share_r, share_f = r.hf_energy / r.energy, f.hf_energy / f.energy
    return SpectrumResult(
        cutoff=cutoff,
        hf_share_real=share_r,
        hf_share_fake=share_f,
        hf_ratio=share_f / share_r,
        laplacian_var_real=r.laplacian_var,
        laplacian_var_fake=f.laplacian_var,
        laplacian_ratio=f.laplacian_var / r.laplacian_var,
        freq=r.freq.tolist(),
        real_power=r.power.tolist(),
        fake_power=f.power.tolist(),
        sizes=shapes,
        fixed_real=fixed_share(real),
        fixed_fake=fixed_share(fake),
    )
