"""Which images a run trains on: the dataset's train split, less the images with editorial
marks (the manifest's `marks` column, cxraug.prep.marks) unless `--include-marked`.

Figures cropped from papers carry arrows, panel letters and text that a GAN copies into its
images, so `train` leaves them out by default. The choice is part of the run's config
(`TrainConfig.include_marked`, not changeable on resume) and the ids left out are written to
runs/NAME/training_set.json with the dataset's hash, so the training set can be rebuilt.
Only training leaves them out: `fid`, `filter` and `evaluate` still see every real image.

`--cues` (cxraug.prep.cues, the same steps as `evaluate --cues`) then removes source cues from
the images kept, at the dataset's resolution, before G and D see them; what the steps did is
written to training_set.json as well.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxraug.core.dataset import Dataset, load_dataset
from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_write_json
from cxraug.core.workspace import RunDir
from cxraug.gan.cells import cell_counts, dataset_cells
from cxraug.prep.cues import CueFacts, remove_cues


def training_set(dataset_path: Path, include_marked: bool, cues: tuple[str, ...] = ()
                 ) -> tuple[Dataset, list[str], dict[str, Any]]:  # fmt: skip
    """(the train-split images to train on, with the source-cue steps `cues` applied; the ids
    left out for editorial marks; what the cue steps did, {} without any). A dataset built
    before marks were detected (`Dataset.marks` None) loses nothing."""
    ds, left_out = _kept(dataset_path, include_marked)
    if not cues:
        return ds, left_out, {}
    facts = CueFacts()
    images = remove_cues(ds.images, cues, facts)
    return dataclasses.replace(ds, images=images), left_out, facts.to_json()


def _kept(dataset_path: Path, include_marked: bool) -> tuple[Dataset, list[str]]:
    ds = load_dataset(dataset_path).subset(split="train")
    if len(ds) == 0:
        raise InputError(f"{dataset_path} has no train-split images; re-run `cxraug preprocess`")
    if include_marked or ds.marks is None:  # None: built before marks were detected
        return ds, []
    marked = ds.marked()
    kept = ds.rows(~marked)
    emptied = [c for i, c in enumerate(ds.classes)
               if (ds.labels == i).any() and not (kept.labels == i).any()]  # fmt: skip
    if emptied:
        raise InputError(f"every {' and every '.join(emptied)} training image has editorial "
                         "marks (the manifest's marks column); pass --include-marked, or write "
                         "clean in the marks cells of the images that are fine and re-run "
                         "`cxraug preprocess`")  # fmt: skip
    return kept, [str(i) for i in ds.ids[marked]]


def model_side(side: int, enlarge: int) -> int:
    """The side G and D work at: the dataset's `side` divided by --enlarge, which must divide
    it (the enlargement then gives back exactly the dataset's side)."""
    if side % enlarge:
        raise InputError(f"--enlarge {enlarge} does not divide the dataset's {side} px side; "
                         "give a K that does (224 px: 2, 4, 7, 8, ...) or preprocess to "
                         "another --size")  # fmt: skip
    return side // enlarge


def shrink(images: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W) float32 -> (N, side, side) by OpenCV's area average (no aliasing when
    shrinking; what `preprocess` shrinks with). The one place a cascade's images are shrunk:
    the GAN's training images and the enlargement's degraded inputs both come from here."""
    out = np.empty((len(images), side, side), np.float32)
    for i, im in enumerate(images):
        out[i] = cv2.resize(np.asarray(im, np.float32), (side, side),
                            interpolation=cv2.INTER_AREA)  # fmt: skip
    return out


def shrunk(ds: Dataset, side: int) -> Dataset:
    """The dataset with every image shrunk to `side` px (`shrink`), labels and ids as they are."""
    return dataclasses.replace(ds, images=shrink(ds.images, side))


def write_training_set(run: RunDir, ds: Dataset, dataset_sha256: str, include_marked: bool,
                       left_out: list[str], per_cell: dict[str, int] | None = None,
                       cues: dict[str, Any] | None = None) -> None:  # fmt: skip
    """runs/NAME/training_set.json: the dataset's hash, the images trained on per class (and
    per class x source cell in a source-conditioned run), the ids left out for editorial
    marks, and what `--cues` did (absent without it)."""
    extra: dict[str, Any] = {} if per_cell is None else {"per_cell": per_cell}
    extra.update({"cues": cues} if cues else {})
    atomic_write_json(run.training_set_path, {
        "dataset_sha256": dataset_sha256,
        "include_marked": include_marked,
        "marks_detected": ds.marks is not None,  # False: a dataset from before detection
        "images": len(ds),
        "per_class": ds.counts(),
        **extra,
        "left_out_marked": len(left_out),
        "left_out_ids": left_out,
    })  # fmt: skip


def left_out_note(ds: Dataset, left_out: list[str], include_marked: bool,
                  run: RunDir) -> str | None:  # fmt: skip
    """What to tell the user about the images left out, or None when there is nothing."""
    if include_marked:
        return None
    if ds.marks is None:
        return ("note: the dataset was built before editorial marks were detected, so none "
                "are left out; re-run `cxraug preprocess` to detect them")  # fmt: skip
    if left_out:
        return (f"left out {len(left_out)} training images with editorial marks "
                f"(--include-marked to keep them; the ids: {run.training_set_path})")
    return None


def training_labels(
    ds: Dataset, sources: tuple[str, ...]
) -> tuple[np.ndarray, dict[str, int] | None]:
    """(the label G and D get per image, images per cell or None). Without sources the label
    is the class; with them the cell class * S + source in the run's order (cxraug.gan.cells)."""
    if not sources:
        return ds.labels, None
    cells = dataset_cells(ds, sources)
    return cells, cell_counts(cells, sources, ds.classes)


def cells_note(per_cell: dict[str, int] | None, sources: tuple[str, ...]) -> str | None:
    """What to tell the user about a source-conditioned run's cells, or None."""
    if per_cell is None:
        return None
    unseen = [c for c, k in per_cell.items() if k == 0]
    return (f"conditioned on class and source ({', '.join(sources)}); cells without training "
            f"images, drawn from the additive class and source factors alone: "
            f"{', '.join(unseen) or 'none'}")  # fmt: skip


def cues_note(facts: dict[str, Any]) -> str | None:
    """What to tell the user about the source cues removed from the training images."""
    if not facts:
        return None
    return (f"source cues removed ({'+'.join(facts['steps'])}) from the "
            f"{facts['images']} training images: marks masked on {facts['marked_images']}, "
            f"lung fields not found (central crop) on {facts['lung_crop_fallbacks']}")  # fmt: skip
