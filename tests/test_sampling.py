"""`--sampling`: which training images each batch holds (cxraug.gan.sampling).

Expectations from the definition: balanced draws each class with probability 1/K and each of
a class's images with probability 1/count; uniform is the old draw, number for number."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from cxraug.core.errors import InputError
from cxraug.core.tf_setup import tf
from cxraug.gan.config import TrainConfig
from cxraug.gan.sampling import ClassTable, class_table, draw_indices

N_DRAWS = 40_000


def test_uniform_is_the_old_draw_number_for_number() -> None:
    """With no table the indices are rng.uniform's, so runs without --sampling (and resumed
    old runs) draw the very batches they drew before the option existed."""
    a, b = tf.random.Generator.from_seed(3), tf.random.Generator.from_seed(3)
    uniform = TrainConfig(sampling="uniform")
    got = draw_indices(a, 64, 100, class_table(uniform, np.zeros(100, np.int32)))
    want = b.uniform([64], 0, 100, dtype=tf.int64)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_balanced_draws_each_class_half_the_time_and_its_images_uniformly() -> None:
    """90 images of class 0, 10 of class 1, shuffled: over 40,000 draws class 1's share is
    0.5 (sd 0.0025: 0.02 is 8 sd), and its 10 images and class 0's 90 are each hit uniformly
    (chi-square goodness of fit, p > 1e-3)."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.r_[np.zeros(90, np.int32), np.ones(10, np.int32)])
    table = ClassTable.from_labels(labels)
    idx = draw_indices(tf.random.Generator.from_seed(1), N_DRAWS, 100, table).numpy()
    assert idx.min() >= 0 and idx.max() < 100
    drawn = labels[idx]
    assert abs(float(drawn.mean()) - 0.5) < 0.02
    for k, n in ((0, 90), (1, 10)):
        hits = np.bincount(idx[drawn == k], minlength=100)[labels == k]
        assert hits.size == n and hits.min() > 0
        assert scipy.stats.chisquare(hits).pvalue > 1e-3


def test_balanced_over_classes_keeps_the_sources_in_proportion() -> None:
    """Cells class * 2 + source: class 1 has 30 images of source 0 and 10 of source 1,
    class 0 has 160 of source 0. Balancing is over classes (each 0.5); within class 1 the
    sources keep 3 : 1 (0.75 +- 0.02)."""
    labels = np.r_[np.full(160, 0), np.full(30, 2), np.full(10, 3)].astype(np.int32)
    table = ClassTable.from_labels(labels, num_sources=2)
    idx = draw_indices(tf.random.Generator.from_seed(2), N_DRAWS, labels.size, table).numpy()
    cells = labels[idx]
    assert abs(float((cells >= 2).mean()) - 0.5) < 0.02
    assert abs(float((cells[cells >= 2] == 2).mean()) - 0.75) < 0.02


def test_a_missing_class_is_never_drawn_and_the_option_is_checked() -> None:
    """Labels of class 1 only (class 0 absent): every draw is of class 1. Bad values and old
    configs: an unknown --sampling is refused; a config from before the option reads uniform."""
    table = ClassTable.from_labels(np.ones(7, np.int32))
    idx = draw_indices(tf.random.Generator.from_seed(0), 500, 7, table).numpy()
    assert set(np.unique(idx)) == set(range(7))
    with pytest.raises(InputError, match="sampling"):
        TrainConfig(sampling="stratified")
    old = TrainConfig().to_dict()  # the default since 2026-12-05: balanced
    del old["sampling"]
    assert TrainConfig().sampling == "balanced"
    assert TrainConfig.from_dict(old).sampling == "uniform"  # how every older run trained


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_both_steps_draw_their_batches_through_the_class_table(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wiring: with --sampling balanced each arch's step hands draw_indices the table of its
    training labels (seen while the step is traced); with uniform it hands None."""
    from test_recipes import CONV_TINY
    from test_train import TINY, toy_images

    from cxraug.gan import conv_step, mlp_step
    from cxraug.gan.config import recipe_config
    from cxraug.gan.step import build_state, make_step, resident_dataset

    module = conv_step if arch == "conv" else mlp_step
    seen: list[ClassTable | None] = []

    def spy(rng: object, b: int, n: int, table: ClassTable | None) -> object:
        seen.append(table)
        return draw_indices(rng, b, n, table)

    monkeypatch.setattr(module, "draw_indices", spy)
    img, labels = toy_images()
    for sampling in ("balanced", "uniform"):
        cfg = recipe_config("paper", **{**(CONV_TINY if arch == "conv" else TINY), "image_size": 16,
                                        "sampling": sampling})  # fmt: skip
        make_step(build_state(cfg), *resident_dataset(img, labels))(0.0, False)
        table = seen[-1]
        if sampling == "uniform":
            assert table is None
        else:
            assert table is not None
            np.testing.assert_array_equal(table.counts.numpy(), np.bincount(labels))
