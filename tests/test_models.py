"""The paper's networks: shapes, layer layout, and that the one concatenated D pass with
group batch norm computes exactly what two separate passes compute."""

from __future__ import annotations

import numpy as np
import pytest

from cxraug.core.tf_setup import tf
from cxraug.gan.arch import build_models
from cxraug.gan.config import TrainConfig, recipe_config
from cxraug.gan.hardware import resolve_precision
from cxraug.gan.layers import param_count
from cxraug.gan.mlp import Discriminator, GroupBatchNorm, dropout_layers

# networks are built from a run's config, whose "auto" precision is resolved (as build_state does)
TINY = resolve_precision(recipe_config("paper", image_size=8, latent_dim=4, g_widths=(8, 16),
                                       d_widths=(16, 16, 16, 16), batch_size=4, xla=False))


def test_paper_layout_counts() -> None:
    # "five Dense layers ... four LeakyReLU, three batch normalization, two dropout"
    d = Discriminator(resolve_precision(recipe_config("paper")))
    assert len(d.hidden) + 1 == 5
    assert sum(n is not None for n in d.norms) == 3
    assert dropout_layers(recipe_config("paper")) == [1, 2]


def test_param_counts_match_the_layer_shapes() -> None:
    g, d = build_models(TINY)
    p, widths = 8 * 8, [4, 8, 16]
    dense = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    expect_g = 2 * 4 + dense + 2 * (8 + 16) + 16 * p + p  # embed + dense + BN(gamma,beta) + out
    assert param_count(g) == expect_g
    expect_d = 2 * p + (p * 16 + 16) + 3 * (16 * 16 + 16) + 3 * 2 * 16 + 16 + 1
    assert param_count(d) == expect_d


def test_generator_shapes_and_range() -> None:
    g, _ = build_models(TINY)
    x = g([tf.random.normal((5, 4)), tf.constant([0, 1, 0, 1, 1])], training=True)
    assert x.shape == (5, 8, 8, 1) and x.dtype == tf.float32
    assert float(tf.reduce_max(tf.abs(x))) <= 1.0


def test_group_batch_norm_matches_numpy_per_group() -> None:
    bn = GroupBatchNorm(0.8)
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32) * 3 + 1
    y = bn(tf.constant(x), training=True, groups=2).numpy()
    for sl in (slice(0, 3), slice(3, 6)):
        half = x[sl]
        ref = (half - half.mean(0)) / np.sqrt(half.var(0) + 1e-3)
        np.testing.assert_allclose(y[sl], ref, rtol=1e-4, atol=1e-4)
    # moving stats moved 20 % of the way to the mean of the group statistics
    want = 0.2 * (x[:3].mean(0) + x[3:].mean(0)) / 2
    np.testing.assert_allclose(bn.moving_mean.numpy(), want, rtol=1e-5, atol=1e-6)


def test_one_concatenated_pass_equals_two_separate_passes() -> None:
    _, d = build_models(TINY)
    rng = np.random.default_rng(1)
    real = tf.constant(rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32))
    fake = tf.constant(rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32))
    y = tf.constant([0, 1, 1, 0])
    u = [tf.constant(rng.uniform(size=(8, 16)).astype(np.float32)) for _ in range(2)]
    both = d([tf.concat([real, fake], 0), tf.concat([y, y], 0)], training=True, groups=2,
             dropout_u=u).numpy()  # fmt: skip
    a = d([real, y], training=True, dropout_u=[w[:4] for w in u]).numpy()
    b = d([fake, y], training=True, dropout_u=[w[4:] for w in u]).numpy()
    np.testing.assert_allclose(both, np.concatenate([a, b]), rtol=1e-4, atol=1e-5)
    # and the grouping matters: one group over the mixed batch gives other logits
    mixed = d([tf.concat([real, fake], 0), tf.concat([y, y], 0)], training=True, groups=1,
              dropout_u=u).numpy()  # fmt: skip
    assert not np.allclose(mixed, both, atol=1e-3)


@pytest.mark.parametrize("bad", [dict(dropout=1.0), dict(strategy="tpu"), dict(lr=0.0),
                                 dict(mixed_precision="fp8"), dict(g_widths=())])  # fmt: skip
def test_config_rejects_bad_values(bad: dict) -> None:
    from cxraug.core.errors import InputError

    with pytest.raises(InputError):
        recipe_config("paper", **bad)


def test_config_json_round_trip_and_noise_schedule() -> None:
    cfg = recipe_config("paper", noise_start=0.1, noise_iterations=100)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert cfg.noise_sigma(0) == pytest.approx(0.1)
    assert cfg.noise_sigma(50) == pytest.approx(0.05)
    assert cfg.noise_sigma(100) == 0.0 and cfg.noise_sigma(5000) == 0.0
