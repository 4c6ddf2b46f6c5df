"""The class x source cells of a run trained with `--condition class,source`.

Such a run conditions G and D on ONE integer per image, its cell

    cell = class * S + source          (class: manifest.LABELS index; source: index into the
                                        run's TrainConfig.sources, S = len(sources))

and the networks split it back (cxraug.gan.conv): every conditional parameter is a class part
plus a source part, so a cell never seen in training (e.g. covid x a normals-only hospital)
still has an input: the covid factor plus that hospital's factor. Whether that input renders
"covid in that hospital's look" is a HYPOTHESIS, not a guarantee: the data only pins down the
sums of the cells it holds. Where every source holds one class, class and source factors of
a cell receive identical gradients and are not separable at all (docs/training.md).

Without source conditioning the cell IS the class index (S = 1), so nothing changes.
This module is numpy only; the order of the sources is the run's recorded order.
"""

from __future__ import annotations

import numpy as np

from cxraug.core.dataset import Dataset
from cxraug.core.errors import InputError, vassert
from cxraug.core.manifest import LABELS, Manifest

#: `generate --source` values that choose several sources; no source may carry these names.
MISSING, ALL = "missing", "all"


def encode(labels: np.ndarray, source_index: np.ndarray, num_sources: int) -> np.ndarray:
    """(N,) class indices and (N,) source indices -> (N,) int32 cells."""
    s = np.asarray(source_index, np.int64)
    vassert(num_sources >= 1 and bool(((s >= 0) & (s < num_sources)).all()),
            f"source indices must lie in 0..{num_sources - 1}")  # fmt: skip
    return (np.asarray(labels, np.int64) * num_sources + s).astype(np.int32)


def decode(cells: np.ndarray, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) cells -> ((N,) class indices, (N,) source indices)."""
    c = np.asarray(cells, np.int64)
    return c // num_sources, c % num_sources


def cell_name(cell: int, sources: tuple[str, ...], classes: tuple[str, ...] = LABELS) -> str:
    """'covid/nih' for a source-conditioned run's cell; the class name without sources."""
    if not sources:
        return classes[cell]
    k, s = divmod(int(cell), len(sources))
    return f"{classes[k]}/{sources[s]}"


def with_sources(ds: Dataset, manifest: Manifest) -> Dataset:
    """`ds` with `sources` filled from the manifest's `source` column, row by row (the dataset
    file does not store it; `evaluate` reads it the same way)."""
    by_id = manifest.by_id()
    recs = [by_id.get(str(i)) for i in ds.ids]
    lost = [str(i) for i, r in zip(ds.ids, recs, strict=True) if r is None or not r.source]
    if lost:
        raise InputError(f"{len(lost)} training image(s) have no source in the manifest (e.g. "
                         f"{lost[0]}); --condition class,source needs every row's `source`: "
                         "re-run `cxraug collect` and `cxraug preprocess`")  # fmt: skip
    ds.sources = np.array([r.source for r in recs if r is not None], dtype=str)
    return ds


def run_sources(ds: Dataset) -> tuple[str, ...]:
    """A new run's sources, in the order its cells use: sorted names of the training images'
    sources. Refuses fewer than two, and names `generate --source` reserves."""
    assert ds.sources is not None
    names = tuple(sorted(set(ds.sources.tolist())))
    vassert(len(names) >= 2,
            f"--condition class,source needs training images from 2 or more sources; the train "
            f"split holds only {', '.join(names) or 'none'}: use --condition class")  # fmt: skip
    for bad in (n for n in names if n in (MISSING, ALL)):
        raise InputError(f"a source named {bad!r} clashes with `generate --source {bad}`; "
                         "collect it under another name")  # fmt: skip
    return names


def dataset_cells(ds: Dataset, sources: tuple[str, ...]) -> np.ndarray:
    """(N,) int32 cell of each training image, with the run's recorded source order."""
    assert ds.sources is not None
    index = {s: k for k, s in enumerate(sources)}
    new = sorted(set(ds.sources.tolist()) - set(index))
    if new:
        raise InputError(f"the train split now holds source(s) {', '.join(new)} that the run "
                         f"was not trained on (its sources: {', '.join(sources)}); resume needs "
                         "the same data: start a new run")  # fmt: skip
    return encode(ds.labels, np.array([index[s] for s in ds.sources], np.int64), len(sources))


def cell_counts(cells: np.ndarray, sources: tuple[str, ...],
                classes: tuple[str, ...] = LABELS) -> dict[str, int]:  # fmt: skip
    """{'covid/cohen': 300, ..., 'covid/nih': 0}: images per cell, every cell listed."""
    n = len(classes) * max(1, len(sources))
    counts = np.bincount(np.asarray(cells, np.int64), minlength=n)
    return {cell_name(c, sources, classes): int(counts[c]) for c in range(n)}


def apportion(cells: np.ndarray, n: int) -> np.ndarray:
    """(n,) int32 labels that split n samples over the distinct `cells` in proportion to how
    often each occurs (largest remainders; ties to the lower cell), in cell order. The
    checkpoint scores sample a class this way: its observed cells, as its real images mix them."""
    values, counts = np.unique(np.asarray(cells, np.int64), return_counts=True)
    exact = counts / counts.sum() * n
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((values, -(exact - quota)))  # largest remainder first
    quota[order[: n - int(quota.sum())]] += 1
    return np.repeat(values, quota).astype(np.int32)


def target_sources(choice: str, sources: tuple[str, ...], label: str,
                   manifest: Manifest) -> tuple[str, ...]:  # fmt: skip
    """The sources `generate --source CHOICE` draws `label` images for: one NAME of the run,
    `missing` (the run's sources with no usable real train image of `label` in the manifest:
    the cells the classifier lacks; () when none is missing) or `all`."""
    if choice == ALL:
        return sources
    if choice == MISSING:
        have = {r.source for r in manifest.select(label=label, split="train", synthetic=False)}
        return tuple(s for s in sources if s not in have)
    vassert(choice in sources, f"--source {choice!r} is not a source of the run; use one of "
                               f"{', '.join(sources)}, or {MISSING} or {ALL}")  # fmt: skip
    return (choice,)
