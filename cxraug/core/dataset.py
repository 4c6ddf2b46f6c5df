"""The preprocessed training array (`processed/dataset.npz`): the contract between
`preprocess` (writer) and `train` / `filter` / `fid` (readers).

Arrays (all row-aligned):
    images  float32 (N, H, W) in [-1, 1]   (H = W = 224 by default)
    labels  int64   (N,)      index into `classes` (manifest.LABELS: normal=0, covid=1)
    ids     str     (N,)      manifest ids
    splits  str     (N,)      "train", "test" or "external" (test-only sources: read only by
                              `evaluate`; every training reader selects split == "train")
    classes str     (C,)      class names in index order
    marks   str     (N,)      the manifest's `marks` cell of each image (editorial marks found
                              by `preprocess`, or a person's verdict); absent in datasets built
                              before marks were detected (read as None)
Not stored: `sources` (N,) str, each image's manifest `source`, filled by the readers that need
it (a `--condition class,source` run: cxraug.gan.cells.with_sources); None otherwise.

Beside it, which class is scarce (`scarce_class`), on per-class counts of a dataset
(`Dataset.counts`, labels) or of a manifest (`real_counts`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_save_npz
from cxraug.core.manifest import LABELS, Manifest, check_label, is_marked


@dataclass
class Dataset:
    images: np.ndarray  # (N, H, W) float32 in [-1, 1]
    labels: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) str
    splits: np.ndarray  # (N,) str
    classes: tuple[str, ...] = LABELS
    marks: np.ndarray | None = None  # (N,) str, or None: built before marks were detected
    sources: np.ndarray | None = None  # (N,) str manifest sources; not in the file (see above)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, *, split: str | None = None, label: str | None = None) -> Dataset:
        keep = np.ones(len(self), bool)
        if split is not None:
            keep &= self.splits == split
        if label is not None:
            check_label(label, self.classes)
            keep &= self.labels == self.classes.index(label)
        return self.rows(keep)

    def rows(self, keep: np.ndarray) -> Dataset:
        """The images where the (N,) bool mask `keep` is true, every array alike."""
        marks = self.marks[keep] if self.marks is not None else None
        sources = self.sources[keep] if self.sources is not None else None
        return Dataset(self.images[keep], self.labels[keep], self.ids[keep], self.splits[keep],
                       self.classes, marks, sources)  # fmt: skip

    def marked(self) -> np.ndarray:
        """(N,) bool: the images whose `marks` leave them out of training (all False for a
        dataset built before marks were detected)."""
        if self.marks is None:
            return np.zeros(len(self), bool)
        return np.array([is_marked(str(m)) for m in self.marks], bool)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}


def real_counts(manifest: Manifest, split: str = "train") -> dict[str, int]:
    """Usable real rows of `split` per class of LABELS: the manifest's side of what
    `Dataset.counts` gives (scarce_class, generate --balance)."""
    return {c: len(manifest.select(label=c, split=split, synthetic=False)) for c in LABELS}


def scarce_class(counts: Mapping[str, int], classes: Sequence[str] = LABELS) -> str:
    """The class cxraug grows: of the `classes` with images in `counts`, the one with the
    fewest (a class with none is absent, not scarce: nothing could calibrate `filter` for it).
    Ties: the first in `classes` (LABELS: normal before covid), as np.argmin breaks them.
    InputError when no class has an image or `counts` names a class outside `classes`."""
    for label in counts:
        check_label(label, tuple(classes))
    present = [c for c in classes if counts.get(c, 0) > 0]
    if not present:
        raise InputError(f"no {'/'.join(classes)} images to tell which class is scarce; "
                         "give the class (--class)")  # fmt: skip
    return min(present, key=lambda c: counts[c])  # min keeps the first of equals


def save_dataset(path: Path, ds: Dataset) -> None:
    n = len(ds)
    if ds.images.ndim != 3 or ds.images.shape[0] != n or ds.images.shape[1] != ds.images.shape[2]:
        raise ValueError(f"images must be (N, S, S), got {ds.images.shape} for N={n}")
    if ds.marks is not None and len(ds.marks) != n:
        raise ValueError(f"marks must be (N,), got {len(ds.marks)} for N={n}")
    atomic_save_npz(
        Path(path),
        images=ds.images.astype(np.float32, copy=False),
        labels=ds.labels.astype(np.int64, copy=False),
        ids=np.asarray(ds.ids, dtype=str),
        splits=np.asarray(ds.splits, dtype=str),
        classes=np.asarray(ds.classes, dtype=str),
        **({} if ds.marks is None else {"marks": np.asarray(ds.marks, dtype=str)}),
    )


def _corrupt(path: Path, e: BaseException) -> InputError:
    return InputError(f"{path} is corrupt or not a cxraug dataset ({type(e).__name__}: {e}); "
                      "rebuild it with `cxraug preprocess --force`")  # fmt: skip


def load_dataset(path: Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"no preprocessed dataset at {path}; run `cxraug preprocess` in this workspace first"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            ds = Dataset(z["images"], z["labels"], z["ids"], z["splits"],
                         tuple(str(c) for c in z["classes"]),
                         z["marks"] if "marks" in z.files else None)  # fmt: skip
    except OSError as e:
        if e.errno is not None:  # permission denied, I/O error: a system error (exit 6)
            raise
        raise _corrupt(path, e) from e
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError) as e:  # truncated, not a zip
        raise _corrupt(path, e) from e
    if ds.images.size and (float(ds.images.min()) < -1.0 or float(ds.images.max()) > 1.0):
        raise InputError(f"{path}: images are outside [-1, 1]; rebuild it with "
                         "`cxraug preprocess --force`")  # fmt: skip
    return ds
