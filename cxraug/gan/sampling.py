"""Which training images each iteration's batch holds (`--sampling`), drawn in-graph from the
run's tf.random.Generator (so resume equals uninterrupted).

uniform (the paper's Keras-GAN loop and recipe; the default until 2026-12-05): idx ~
U{0..N-1}^B with replacement, so each class appears in proportion to its count. On the shared
data the scarce class (COVID, ~260 of ~1,260 training images once marked ones are left out) is
~21 % of every batch: G's COVID images get a fifth of the updates, and at 2,000-4,800
iterations its normal images showed ribs while its COVID images stayed soft and grew alike
(bench/RESULTS.md "What more time buys, and balanced batches").

balanced (the default): each row first draws a class uniformly from the classes present, then
an image of that class uniformly: every class is ~1/K of every batch. With source conditioning
the labels are cells (class x source, cxraug.gan.cells); balancing is over CLASSES, and within
a class the sources keep their proportions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cxraug.core.tf_setup import tf
from cxraug.gan.cells import decode


@dataclass(frozen=True)
class ClassTable:
    """The training images grouped by class: `order` lists image indices class by class,
    class k's images are order[starts[k] : starts[k] + counts[k]] (classes with no image are
    left out, so every drawn class has images)."""

    order: Any  # (N,) int64 tensor
    starts: Any  # (K,) int64
    counts: Any  # (K,) int64

    @classmethod
    def from_labels(cls, labels: np.ndarray, num_sources: int = 1) -> ClassTable:
        """labels (N,) int: classes, or cells class * num_sources + source."""
        klass = decode(np.asarray(labels, np.int64), max(1, num_sources))[0]
        order = np.argsort(klass, kind="stable")
        _, counts = np.unique(klass, return_counts=True)  # the classes present, in order
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return cls(tf.constant(order, tf.int64), tf.constant(starts, tf.int64),
                   tf.constant(counts, tf.int64))  # fmt: skip


def draw_indices(rng: Any, b: int, n_images: int, table: ClassTable | None) -> Any:
    """(b,) int64 indices into the training images: uniform over images when `table` is None,
    else a uniform class, then a uniform image of it (module docstring)."""
    if table is None:
        return rng.uniform([b], 0, n_images, dtype=tf.int64)
    k = rng.uniform([b], 0, int(table.counts.shape[0]), dtype=tf.int64)
    count = tf.gather(table.counts, k)
    # floor(u * count) with u in [0, 1): uniform on 0..count-1 (the clamp guards float rounding)
    u = rng.uniform([b], dtype=tf.float64)
    j = tf.minimum(tf.cast(tf.floor(u * tf.cast(count, tf.float64)), tf.int64), count - 1)
    return tf.gather(table.order, tf.gather(table.starts, k) + j)


def class_table(cfg: Any, labels: Any) -> ClassTable | None:
    """The table `draw_indices` needs for cfg.sampling (None for uniform); labels (N,)."""
    if cfg.sampling == "uniform":
        return None
    return ClassTable.from_labels(np.asarray(labels), cfg.num_sources)
