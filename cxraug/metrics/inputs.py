"""Input image sets for `cxraug fid`: folders, manifest selections and in-memory arrays.

A set is a list of (content key, loader) pairs; loaders return (H, W) uint8 gray images.
- folder: recursive, image suffixes from cxraug.core.images, hidden folders skipped (so a
  workspace's .cache/ is never scored); files read as saved with images.read_gray_u8; key = file
  sha256. Every file is read with images.read_bytes, the guarded reader of every stage (regular
  files only, size-capped): a FIFO or /dev/zero named by a manifest row is an error, not a hang.
- `manifest:KEY=VALUE,...` (KEY: split, label|class, synthetic, run; `ok` rows only): real rows
  come from processed/dataset.npz quantised with images.to_uint8 (what the GAN was trained on,
  quantised exactly as its saved output), synthetic rows from their PNG files.
- arrays (`fid_from_arrays`): key = sha256 of shape + pixels.
Manifest sets also carry one group per image for the pixel judges' patient-grouped folds:
`patient:<patient_id>` for real rows (`id:<row id>` when blank), `id:<row id>` for synthetic
rows; folders and arrays have none (unknown).
Unreadable images are never skipped: a metric over a silently shrunken set would mislead.
Every failure is listed together in one InputError (exit 3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from cxraug.core.dataset import load_dataset
from cxraug.core.errors import ImageError, InputError, listed
from cxraug.core.fsutil import sha256_bytes
from cxraug.core.images import (
    IMAGE_SUFFIXES,
    looks_like_image_name,
    read_bytes,
    read_gray_u8,
    to_uint8,
)
from cxraug.core.workspace import Workspace, run_name_of

MANIFEST_PREFIX = "manifest:"
MANIFEST_KEYS = ("split", "label", "class", "synthetic", "run", "status")


@dataclass
class ImageSet:
    """Images to score: one content key and one loader ((H, W) uint8) per image."""

    description: str
    keys: list[str]
    loaders: list[Callable[[], np.ndarray]]
    paths: list[str] = field(default_factory=list)  # for error messages ("" for arrays)
    # one group per image (a patient: manifest real rows' patient_id; a synthetic row is its
    # own group); empty = unknown (folders, arrays)
    groups: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def canonical(self) -> ImageSet:
        order = sorted(range(len(self.keys)), key=lambda i: self.keys[i])
        paths = self.paths or [""] * len(self.keys)
        return ImageSet(
            self.description,
            [self.keys[i] for i in order],
            [self.loaders[i] for i in order],
            [paths[i] for i in order],
            [self.groups[i] for i in order] if self.groups else [],
        )


def _identity(img: np.ndarray) -> np.ndarray:
    return img


def _pixels_key(img: np.ndarray) -> str:
    return "px:" + sha256_bytes(str(img.shape).encode() + np.ascontiguousarray(img).tobytes())


def _file_set(description: str, files: Sequence[Path]) -> ImageSet:
    keys, bad = [], []
    for p in files:
        try:  # the guarded reader: a FIFO or /dev/zero in a manifest row must not hang fid
            keys.append("file:" + sha256_bytes(read_bytes(p)))
        except ImageError as e:
            bad.append(f"{p}: {e.reason}")
    _raise_bad(description, bad)
    return ImageSet(
        description, keys, [partial(read_gray_u8, p) for p in files], [str(p) for p in files]
    )


def folder_set(folder: Path) -> ImageSet:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(
            f"{folder} is not a folder; give a folder of images or a manifest "
            "selection such as manifest:split=test,label=covid"
        )
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and looks_like_image_name(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise InputError(
            f"no images in {folder} (looked recursively for "
            f"{', '.join(IMAGE_SUFFIXES)}; hidden folders are skipped)"
        )
    return _file_set(f"folder {folder}", files)


def array_set(images: Sequence[np.ndarray] | np.ndarray, description: str) -> ImageSet:
    imgs = list(images)
    for i, im in enumerate(imgs):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 2:
            got = f"{im.shape} {im.dtype}" if isinstance(im, np.ndarray) else type(im).__name__
            raise InputError(
                f"{description} image {i}: expected a (H, W) uint8 array, got {got}; "
                "convert [-1, 1] floats with cxraug.core.images.to_uint8"
            )
    return ImageSet(
        description,
        [_pixels_key(im) for im in imgs],
        [partial(_identity, im) for im in imgs],
        [f"{description}[{i}]" for i in range(len(imgs))],
    )


def parse_selection(spec: str) -> dict[str, str]:
    """`manifest:split=test,label=covid` -> {"split": "test", "label": "covid"}."""
    body, sel = spec[len(MANIFEST_PREFIX) :], {}
    for part in filter(None, (s.strip() for s in body.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in MANIFEST_KEYS or not value.strip():
            raise InputError(
                f"bad manifest selection {spec!r} at {part!r}; use "
                "manifest:KEY=VALUE,... with KEY in split, label (or class), "
                "synthetic (true/false), run, status (ok (default), rejected or any)"
            )
        sel["label" if key == "class" else key] = value.strip()
    return sel


def manifest_set(spec: str, workspace: Path) -> ImageSet:
    sel = parse_selection(spec)
    ws = Workspace.at(workspace)
    synthetic = None
    if "synthetic" in sel:
        v = sel["synthetic"].lower()
        if v not in ("true", "false"):
            raise InputError(f"{spec}: synthetic={sel['synthetic']!r}; use true or false")
        synthetic = v == "true"
    status: str | None = sel.get("status", "ok").lower()
    if status not in ("ok", "rejected", "any"):
        raise InputError(f"{spec}: status={sel['status']!r}; use ok, rejected or any")
    rows = ws.load_manifest().select(
        label=sel.get("label"),
        split=sel.get("split"),
        synthetic=synthetic,
        status=None if status == "any" else status,
    )
    # "any" = every image that exists and decodes: kept or rejected by `filter`
    rows = [r for r in rows if r.status in ("ok", "rejected")]
    if "run" in sel:
        rows = [r for r in rows if run_name_of(r.run) == run_name_of(sel["run"])]
    if not rows:
        raise InputError(
            f"{spec} matched no rows with status {status} in {ws.manifest_path}; check the "
            "split/label/synthetic/run values (status=any also counts rows `filter` rejected)"
        )
    desc = f"{spec} ({ws.root})"
    real = [r for r in rows if not r.synthetic]
    files = [r.resolve(ws.root) for r in rows if r.synthetic]
    fset = _file_set(desc, files) if files else ImageSet(desc, [], [], [])
    # a patient is a group; a row without patient_id, and a synthetic image, its own group
    fset.groups = [f"id:{r.id}" for r in rows if r.synthetic]
    if real:  # the preprocessed 224 px pixels the GAN was trained on, quantised like its output
        ds = load_dataset(ws.dataset_path)
        index = {str(i): k for k, i in enumerate(ds.ids)}
        missing = [r.id for r in real if r.id not in index]
        if missing:
            raise InputError(
                f"{len(missing)} selected row(s) are not in {ws.dataset_path} "
                f"(e.g. {', '.join(missing[:5])}); re-run `cxraug preprocess`"
            )
        arrays = array_set([to_uint8(ds.images[index[r.id]]) for r in real], desc)
        arrays.paths = [f"{ws.dataset_path}[{r.id}]" for r in real]
        groups = [f"patient:{r.patient_id}" if r.patient_id else f"id:{r.id}" for r in real]
        fset = ImageSet(desc, fset.keys + arrays.keys, fset.loaders + arrays.loaders,
                        fset.paths + arrays.paths, fset.groups + groups)  # fmt: skip
    return fset


def resolve_set(spec: str | Path, workspace: Path) -> ImageSet:
    s = str(spec)
    return manifest_set(s, workspace) if s.startswith(MANIFEST_PREFIX) else folder_set(Path(s))


def _raise_bad(description: str, bad: list[str]) -> None:
    if bad:
        shown = "\n".join(listed(bad, indent="  "))
        raise InputError(
            f"{len(bad)} unusable image(s) in {description}; fix or remove them "
            f"(metric inputs must be complete):\n{shown}"
        )


def check_readable(s: ImageSet) -> None:
    """Decode every image once before the slow part, and list every failure together."""
    bad = []
    for load, path in zip(s.loaders, s.paths, strict=True):
        try:
            load()
        except ImageError as e:
            bad.append(f"{path}: {e.reason}")
    _raise_bad(s.description, bad)
