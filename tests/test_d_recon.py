"""--conv-d-recon: FastGAN's self-supervised discriminator (reconstruction decoders on D's maps,
cxraug.gan.conv and cxraug.gan.conv_step). Expectations come from numpy recomputations and from
the step's algebra (a vanishing weight is the plain step; the term is in D's loss only)."""

from __future__ import annotations

import numpy as np
import pytest
from test_recipes import CONV_TINY
from test_train import toy_images

from cxraug.core.errors import InputError
from cxraug.core.tf_setup import keras, tf
from cxraug.gan.config import D_RECON_LEVELS, D_RECON_WIDTHS, TrainConfig, recipe_config
from cxraug.gan.conv import ProjectionDiscriminator, quarter_of
from cxraug.gan.conv_step import recon_loss
from cxraug.gan.moments import laplacian
from cxraug.gan.step import build_state, make_step, resident_dataset


def _recon_cfg(**over: object) -> TrainConfig:
    """A tiny conv config at 32 px whose D has the 4 convs the decoders read."""
    return recipe_config("paper", **{**CONV_TINY, "image_size": 32,
                                     "conv_g_channels": (16, 8, 8, 4),
                                     "conv_d_channels": (8, 16, 16, 16), "conv_d_recon": 1.0,
                                     **over})  # fmt: skip


def _np_laplacian(a: np.ndarray) -> np.ndarray:
    """(B, H, W, 1) -> (B, H - 2, W - 2, 1): the four neighbours minus 4x the centre."""
    return (a[:, :-2, 1:-1] + a[:, 2:, 1:-1] + a[:, 1:-1, :-2] + a[:, 1:-1, 2:]
            - 4 * a[:, 1:-1, 1:-1])  # fmt: skip


def test_decoders_start_as_the_plain_d_and_the_loss_equals_its_formula() -> None:
    """The decoders are created after every other weight (the plain D's weights and logits are
    unchanged); they rebuild the whole image at half size from the 4th map and a quarter at
    full size from the 3rd; the loss is L1 on pixels + L1 on the Laplacian against the 2 x 2
    means and the quarter, recomputed in numpy."""
    cfg = _recon_cfg()
    d, plain = ProjectionDiscriminator(cfg), ProjectionDiscriminator(cfg.replace(conv_d_recon=0.0))
    x = tf.random.stateless_uniform((4, 32, 32, 1), (1, 2), -1.0, 1.0)
    y = tf.constant([0, 1, 1, 0])
    logits, maps = d([x, y], with_maps=True)
    np.testing.assert_array_equal(plain([x, y]).numpy(), logits.numpy())
    assert len(d.weights) == len(plain.weights) + 2 * 2 * (len(D_RECON_WIDTHS) + 1)
    for a, b in zip(plain.weights, d.weights, strict=False):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert sorted(maps) == sorted(D_RECON_LEVELS)
    assert maps[4].shape == (4, 2, 2, 16) and maps[3].shape == (4, 4, 4, 16)
    xn = x.numpy()
    for q, (r, c) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
        np.testing.assert_array_equal(quarter_of(x, tf.constant(q)).numpy(),
                                      xn[:, r : r + 16, c : c + 16])  # fmt: skip
        whole, part = d.reconstruct(maps, tf.constant(q))
        assert whole.shape == part.shape == (4, 16, 16, 1)
        # the quarter decoder reads only quarter q of the 4 x 4 map
        np.testing.assert_allclose(part.numpy(), d.decoders[1](maps[3].numpy()[
            :, r // 8 : r // 8 + 2, c // 8 : c // 8 + 2]).numpy(), rtol=1e-5, atol=1e-6)
        w, p = whole.numpy(), part.numpy()
        half = xn.reshape(4, 16, 2, 16, 2, 1).mean(axis=(2, 4))
        t = xn[:, r : r + 16, c : c + 16]
        want = sum(np.abs(a - b).mean() + np.abs(_np_laplacian(a) - _np_laplacian(b)).mean()
                   for a, b in ((w, half), (p, t)))  # fmt: skip
        got = float(recon_loss(d, maps, x, tf.constant(q)))
        assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(laplacian(x).numpy(), _np_laplacian(xn), atol=1e-5)
    with pytest.raises(ValueError, match="conv-d-recon"):
        plain.reconstruct(maps, tf.constant(0))


def test_config_refuses_what_the_decoders_cannot_read() -> None:
    with pytest.raises(InputError, match="needs at least 4 --conv-d-channels"):
        _recon_cfg(conv_d_channels=(8, 16, 16))
    with pytest.raises(InputError, match="multiple of 16"):
        _recon_cfg(image_size=24, conv_g_channels=(16, 8, 4, 4))
    with pytest.raises(InputError, match="conv_d_recon and conv_d_input bands apply to --arch"):
        recipe_config("paper", conv_d_recon=1.0)


def _one_step(weight: float, d_lr: float = 2e-4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """G's weights and D's conv weights (created first) after one step from seed 0."""
    img, labels = toy_images(size=32)
    st = build_state(_recon_cfg(conv_d_recon=weight))
    st.d_opt.learning_rate.assign(d_lr)
    make_step(st, *resident_dataset(img, labels))(0.0, False)
    return ([v.numpy() for v in st.gen.weights],
            [w.numpy() for c in st.disc.convs for w in c.weights])  # fmt: skip


def _differ(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))


def test_recon_term_enters_d_only_and_vanishes_with_its_weight() -> None:
    """One step from the same seed: a vanishing weight gives the plain step's G and D (the
    decoders draw their seeds last and the step no extra random number); weight 1 changes D's
    update; with D's learning rate at 0 G's update is the plain one: G's loss has no such term."""
    (g0, d0), (g_tiny, d_tiny), (_, d1) = _one_step(0.0), _one_step(1e-9), _one_step(1.0)
    for a, b in zip(g0 + d0, g_tiny + d_tiny, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert _differ(d0, d1) > 1e-5
    (g0, _), (g1, _) = _one_step(0.0, d_lr=0.0), _one_step(1.0, d_lr=0.0)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_decoders_learn_to_rebuild_the_images() -> None:
    """Trained on the reconstruction loss alone, D's convs and decoders rebuild the toy images
    (two half-bright classes): the loss falls by more than half in 150 Adam steps (2.08 to
    0.71 when this test was written)."""
    img, _ = toy_images(n=16, size=32)
    x = tf.constant(img[..., None])
    y = tf.zeros((16,), tf.int32)
    d = ProjectionDiscriminator(_recon_cfg())
    d([x, y])
    opt = keras.optimizers.Adam(1e-2)

    def loss() -> tf.Tensor:
        _, maps = d([x, y], with_maps=True)
        return recon_loss(d, maps, x, tf.constant(1))

    first = float(loss())
    opt.build(d.trainable_variables)

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            value = loss()
        grads = tape.gradient(value, d.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, d.trainable_variables, strict=True)
                             if g is not None])  # fmt: skip

    for _ in range(150):
        step()
    assert float(loss()) < 0.5 * first
