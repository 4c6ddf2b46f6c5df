"""--conv-d-input bands: D's first conv reads the image and three difference-of-Gaussians detail
bands (cxraug.gan.conv.detail_bands). Expectations come from scipy's Gaussian filter and from
the algebra of the transform (the bands sum back to the image; a first kernel that reads the
pixels channel only is the plain D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from test_recipes import CONV_TINY
from test_train import make_workspace, toy_images

from cxraug.core.errors import InputError
from cxraug.core.tf_setup import tf
from cxraug.gan.checkpoint import find_latest, read_checkpoint
from cxraug.gan.config import D_BAND_GAINS, D_BAND_SIGMAS, TrainConfig, recipe_config
from cxraug.gan.conv import ProjectionDiscriminator, conv_forward_flops, detail_bands
from cxraug.gan.step import build_state, make_step, resident_dataset
from cxraug.train import resume, train


def _bands_cfg(**over: object) -> TrainConfig:
    """A tiny conv config at 32 px (the widest blur reaches 24 px) with the bands on."""
    return recipe_config("paper", **{**CONV_TINY, "image_size": 32,
                                     "conv_g_channels": (16, 8, 8, 4),
                                     "conv_d_channels": (8, 16, 16), "conv_d_input": "bands",
                                     **over})  # fmt: skip


def test_bands_equal_scipy_and_sum_back_to_the_image() -> None:
    """Each band is gain x the difference of two scipy Gaussian filters (mirror border, 3
    sigma); dividing out the gains and adding the coarsest blur rebuilds x."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 40, 36)).astype(np.float32)  # not square: both matrices
    got = detail_bands(tf.constant(x[..., None])).numpy()
    assert got.shape == (2, 40, 36, 1 + len(D_BAND_SIGMAS))
    np.testing.assert_array_equal(got[..., 0], x)
    blur = [x] + [np.stack([scipy.ndimage.gaussian_filter(a.astype(np.float64), s, mode="mirror",
                                                          truncate=3.0) for a in x])
                  for s in D_BAND_SIGMAS]  # fmt: skip
    for k, gain in enumerate(D_BAND_GAINS):
        np.testing.assert_allclose(got[..., k + 1], gain * (blur[k] - blur[k + 1]), atol=2e-5)
    rebuilt = sum(got[..., k + 1] / g for k, g in enumerate(D_BAND_GAINS)) + blur[-1]
    np.testing.assert_allclose(rebuilt, x, atol=2e-5)


def test_d_with_bands_is_the_plain_d_when_its_first_conv_reads_pixels_only() -> None:
    """The option widens D's first kernel from 1 to 4 input channels and changes nothing else:
    every other weight is the plain D's (same seeds), and copying the plain first kernel into
    the pixels channel (the bands' channels at zero) gives the plain D's logits."""
    cfg = _bands_cfg()
    d = ProjectionDiscriminator(cfg)
    plain = ProjectionDiscriminator(cfg.replace(conv_d_input="pixels"))
    x = tf.random.stateless_uniform((4, 32, 32, 1), (3, 4), -1.0, 1.0)
    y = tf.constant([0, 1, 1, 0])
    before = d([x, y]).numpy()
    want = plain([x, y]).numpy()
    assert d.convs[0].kernel.shape == (4, 4, 4, 8) and plain.convs[0].kernel.shape == (4, 4, 1, 8)
    assert len(d.weights) == len(plain.weights)
    for a, b in zip(d.weights[1:], plain.weights[1:], strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(before - want).max() > 1e-4  # the bands' channels do reach the logit
    k = np.zeros((4, 4, 4, 8), np.float32)
    k[:, :, :1] = plain.convs[0].kernel.numpy()
    d.convs[0].kernel.assign(k)
    np.testing.assert_allclose(d([x, y]).numpy(), want, rtol=1e-5, atol=1e-5)
    g, dd = conv_forward_flops(cfg)
    g0, d0 = conv_forward_flops(plain.cfg)
    assert g == g0 and dd - d0 == 2 * 16 * 16 * 3 * 8 * 16  # the first conv's 3 new channels


def test_config_refuses_bands_where_they_cannot_apply() -> None:
    with pytest.raises(InputError, match="must exceed 24 px"):
        _bands_cfg(image_size=16, conv_g_channels=(16, 8, 4))
    with pytest.raises(InputError, match="conv_d_input='wavelet'; use one of pixels, bands"):
        _bands_cfg(conv_d_input="wavelet")
    with pytest.raises(InputError, match="conv_d_input bands apply to --arch conv"):
        recipe_config("paper", conv_d_input="bands")


def test_a_step_with_bands_trains_and_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """One step moves G and D (finite weights); a run interrupted and resumed ends with the
    uninterrupted run's weights, D's 4-channel first kernel among them."""
    img, labels = toy_images(size=32)
    st = build_state(_bands_cfg())
    g0 = [v.numpy() for v in st.gen.weights]
    make_step(st, *resident_dataset(img, labels))(0.0, False)
    moved = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(g0, st.gen.weights, strict=True))
    assert moved > 0 and all(np.isfinite(w.numpy()).all() for w in st.disc.weights)

    over = {**CONV_TINY, "image_size": 32, "conv_g_channels": (16, 8, 8, 4),
            "conv_d_channels": (8, 16, 16), "conv_d_input": "bands", "ema_decay": 0.9,
            "checkpoint_interval": 2}  # fmt: skip
    ws_a, ws_b = make_workspace(tmp_path / "a", size=32), make_workspace(tmp_path / "b", size=32)
    train(ws_a, recipe_config("paper", **{**over, "iterations": 4}), name="r", quiet=True)
    train(ws_b, recipe_config("paper", **{**over, "iterations": 2}), name="r", quiet=True)
    resume(ws_b, "r", iterations=4, quiet=True)
    a = read_checkpoint(find_latest(ws_a.runs_dir / "r")).arrays  # type: ignore[arg-type]
    b = read_checkpoint(find_latest(ws_b.runs_dir / "r")).arrays  # type: ignore[arg-type]
    assert sorted(a) == sorted(b)
    assert any(v.shape == (4, 4, 4, 8) for k, v in a.items() if k.startswith("d."))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
