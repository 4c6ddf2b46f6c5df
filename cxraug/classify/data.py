"""The images `evaluate` trains and scores on: the real rows of processed/dataset.npz and the
manifest's ok synthetic rows, both at the classifier's size (and with source cues removed when
asked: cxraug.classify.cues), the validation split by patient, and the test sets (the
patient-split `test` rows and each test-only source)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxraug.classify.cues import CueFacts, parse_cues, remove_cues
from cxraug.core.dataset import load_dataset
from cxraug.core.errors import CxrError, ImageError, InputError, vassert
from cxraug.core.images import read_gray_u8
from cxraug.core.manifest import LABELS, Record
from cxraug.core.ui import warn
from cxraug.core.workspace import Workspace, run_name_of
from cxraug.prep.resize import resize

NO_SYNTHETIC = "no ok synthetic rows: run `cxraug generate` and `cxraug filter` first"
CELLS_NONE = ("no ok synthetic rows generated for class x source cells (cond_source): train "
              "with --condition class,source, `cxraug generate --source missing` for each "
              "class, then `cxraug filter` (docs/training.md, \"Source conditioning\")")


@dataclass
class Images:
    """Real images at the classifier's size, with what the split and the bootstrap need."""

    x: np.ndarray  # (N, S, S) float32 in [-1, 1], source cues removed when asked
    y: np.ndarray  # (N,) int64 class index (manifest.LABELS)
    split: np.ndarray  # (N,) train / test / external
    patient: np.ndarray  # (N,) "SOURCE/PATIENT" (the image id when the patient is unknown)
    source: np.ndarray  # (N,)
    raw: np.ndarray | None = None  # (N, S, S) as saved, when `x` had source cues removed


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) [-1, 1] -> (N, size, size) by preprocess's resize rule (prep/resize)."""
    if x.shape[1:] == (size, size):
        return x.astype(np.float32, copy=False)
    out = np.stack([resize(im, size, size) for im in x]) if len(x) \
        else np.zeros((0, size, size), np.float32)  # fmt: skip
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def classifier_input(x: np.ndarray, size: int, cues: tuple[str, ...],
                     facts: CueFacts) -> np.ndarray:  # fmt: skip
    """(N, H, W) [-1, 1] -> what the classifier sees: cues removed at the image's own
    resolution (marks and lung fields are found better there), then resized."""
    return _resize(remove_cues(x, cues, facts), size)


def load_real(ws: Workspace, size: int, cues: tuple[str, ...] = (),
              facts: CueFacts | None = None) -> Images:  # fmt: skip
    ds = load_dataset(ws.dataset_path)
    by_id = ws.load_manifest().by_id()
    recs = [by_id.get(str(i)) for i in ds.ids]
    source = np.array([r.source if r is not None else "" for r in recs])
    patient = np.array([f"{r.source}/{r.patient_id}" if r is not None and r.patient_id
                        else f"id/{i}" for r, i in zip(recs, ds.ids, strict=True)])  # fmt: skip
    x = classifier_input(ds.images, size, cues, facts or CueFacts())
    raw = _resize(ds.images, size) if cues else None
    return Images(x, ds.labels.astype(np.int64), ds.splits.astype(str), patient, source, raw)


def _synthetic_rows(ws: Workspace, labels: tuple[str, ...], run: str,
                    cells: bool) -> tuple[list[Record], str]:  # fmt: skip
    """The ok TRAIN synthetic rows of `labels` (of `run` when given) whose cond_source is empty
    (cells False: images of the class alone) or not (cells True: images generated for a class
    x source cell, `generate --source`), and, when there are none, why."""
    rows = [r for r in ws.load_manifest() if r.synthetic and r.label in labels]
    what = "/".join(labels)

    if run:
        known = sorted({run_name_of(r.run) for r in rows if r.run})
        if run_name_of(run) not in known:
            ws.find_run(run)  # an unknown run: InputError (exit 3) naming where it looked
            return [], (f"run {run!r} has no synthetic {what} rows; rows exist for runs: "
                        f"{', '.join(known) or 'none'}")  # fmt: skip
        rows = [r for r in rows if run_name_of(r.run) == run_name_of(run)]
    ok = [r for r in rows if r.usable and r.split == "train"]
    mine = [r for r in ok if bool(r.cond_source) == cells]
    if mine:
        return mine, ""
    if cells:
        return [], CELLS_NONE + (f" (the {len(ok)} ok synthetic rows have none)" if ok else "")
    return [], NO_SYNTHETIC + (f" (the {len(ok)} ok synthetic {what} rows were generated for "
                               "class x source cells, cond_source: the cells arm uses them)"
                               if ok else "")  # fmt: skip


def _decode(ws: Workspace, rows: list[Record], size: int, cues: tuple[str, ...],
            facts: CueFacts | None) -> tuple[np.ndarray, list[Record]]:  # fmt: skip
    """(K, S, S) classifier input of the rows' PNGs and the rows read. Decoded by core.images
    and scaled to [-1, 1] exactly as the saved real pixels are (u8 / 127.5 - 1), then made
    classifier input like the real images; unreadable files are left out with a warning."""
    imgs, read = [], []
    for r in rows:
        try:
            imgs.append(read_gray_u8(r.resolve(ws.root)).astype(np.float32) / 127.5 - 1.0)
            read.append(r)
        except ImageError:
            pass
    if len(read) < len(rows):
        warn(f"{len(rows) - len(read)} ok synthetic image(s) could not be read and were left "
             "out; re-run `cxraug filter` to mark them")  # fmt: skip
    if not imgs:
        return np.zeros((0, size, size), np.float32), read
    shapes = {im.shape for im in imgs}
    vassert(len(shapes) == 1, f"synthetic images have several sizes {sorted(shapes)}; "
            "evaluate one run at a time with --run")  # fmt: skip
    x, facts = np.stack(imgs), facts or CueFacts()
    if not cues:
        return classifier_input(x, size, cues, facts), read
    out = np.empty((len(x), size, size), np.float32)
    done = _run_cues(ws, {r.run for r in read}, cues)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, r in enumerate(read):  # a run trained with `train --cues` drew them removed already
        groups.setdefault(tuple(c for c in cues if c not in done[r.run]), []).append(i)
    for steps, idx in groups.items():
        out[idx] = classifier_input(x[idx], size, steps, facts)
    facts.steps = list(cues)
    return out, read


def _run_cues(ws: Workspace, runs: set[str], cues: tuple[str, ...]) -> dict[str, set[str]]:
    """{manifest run reference: the source-cue steps its GAN trained on (config.json `cues`;
    none for runs from before the option)}; a run folder that is gone counts as none, with a
    warning when --cues asks for steps (they may then be applied a second time)."""
    out: dict[str, set[str]] = {}
    for ref in runs:
        try:
            cfg = json.loads(ws.find_run(ref).config_path.read_text(encoding="utf-8"))
            out[ref] = set(parse_cues(str(cfg.get("cues", "none"))))
        except (CxrError, OSError, ValueError, AttributeError):
            out[ref] = set()
            if cues and ref:
                warn(f"run {ref!r}: its config.json cannot be read, so which source cues its "
                     "GAN was trained without is unknown; every --cues step is applied to its "
                     "synthetic images")  # fmt: skip
    return out


def load_synthetic(ws: Workspace, label: str, run: str, size: int, cues: tuple[str, ...] = (),
                   facts: CueFacts | None = None) -> tuple[np.ndarray, str]:  # fmt: skip
    """(K, S, S) of the manifest's ok synthetic `label` rows with an empty cond_source (of
    `run` when given) and, when there are none, why (the synthetic arms' pool)."""
    rows, why = _synthetic_rows(ws, (label,), run, cells=False)
    x, read = _decode(ws, rows, size, cues, facts)
    return x, why or ("" if read else "no readable ok synthetic rows")


@dataclass
class Cells:
    """The cells arm's pool: ok synthetic rows of both classes generated for a class x source
    cell (a non-empty cond_source)."""

    x: np.ndarray  # (M, S, S) classifier input
    y: np.ndarray  # (M,) int64 class index
    cond_source: np.ndarray  # (M,) the source whose look each image was generated in
    reason: str = ""  # why there are none

    def counts(self, data: Images) -> dict[str, dict[str, dict[str, int]]]:
        """{class: {cond_source: {"synthetic": images, "real_train": the real TRAIN images of
        that class and source (0: a cell the data lacks)}}}."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        train = data.split == "train"
        for k, c in enumerate(LABELS):
            for s in sorted(set(self.cond_source[self.y == k])):
                out.setdefault(c, {})[str(s)] = {
                    "synthetic": int(((self.y == k) & (self.cond_source == s)).sum()),
                    "real_train": int((train & (data.y == k) & (data.source == s)).sum())}
        return out


def load_cells(ws: Workspace, run: str, size: int, cues: tuple[str, ...] = (),
               facts: CueFacts | None = None) -> Cells:  # fmt: skip
    rows, why = _synthetic_rows(ws, LABELS, run, cells=True)
    x, read = _decode(ws, rows, size, cues, facts)
    y = np.array([LABELS.index(r.label) for r in read], np.int64)
    src = np.array([r.cond_source for r in read], dtype=str)
    return Cells(x, y, src, why or ("" if read else "no readable ok synthetic rows"))


def validation_split(
    patient: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) positions into these TRAIN images: per class, whole patients (shuffled) are
    moved to validation until it holds ~fraction of the class; at least one patient each."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(patient):
        groups.setdefault(str(p), []).append(i)
    val: list[int] = []
    for c in np.unique(y):
        mine = [g for g in groups.values() if np.bincount(y[g]).argmax() == c]
        target = max(1, round(fraction * sum(len(g) for g in mine)))
        n = 0
        for k in rng.permutation(len(mine))[: max(len(mine) - 1, 0)]:
            if n >= target:
                break
            val.extend(mine[k])
            n += len(mine[k])
    mask = np.zeros(len(y), bool)
    mask[val] = True
    return np.nonzero(~mask)[0], np.nonzero(mask)[0]


def test_sets(data: Images, min_per_class: int) -> tuple[dict[str, np.ndarray],
                                                           dict[str, dict[str, Any]]]:  # fmt: skip
    """{name: image positions} of the scoreable test sets, and every set's description."""
    sets = {"test": np.nonzero(data.split == "test")[0]}
    for src in sorted(set(data.source[data.split == "external"])):
        sets[f"external:{src}"] = np.nonzero((data.split == "external") & (data.source == src))[0]
    info: dict[str, dict[str, Any]] = {}
    usable: dict[str, np.ndarray] = {}
    for name, idx in sets.items():
        counts = {c: int((data.y[idx] == k).sum()) for k, c in enumerate(LABELS)}
        d: dict[str, Any] = {"n_images": len(idx), "n_patients": len(set(data.patient[idx])),
                             "counts": counts, "status": "ok", "reason": ""}  # fmt: skip
        few = [f"{n} {c}" for c, n in counts.items() if n < min_per_class]
        if few:
            one = [c for c, n in counts.items() if n == 0]
            why = (f"one class only (no {', '.join(one)} images): AUC, balanced accuracy and "
                   "one of sensitivity/specificity are undefined; add images of both classes"
                   if one else f"too few images for a CI ({', '.join(few)}; need at least "
                   f"{min_per_class} per class)")  # fmt: skip
            if name == "test":
                raise InputError(f"the patient-split test rows: {why}. Collect more patients "
                                 "or raise --test-fraction in `cxraug collect`")  # fmt: skip
            d.update(status="skipped", reason=why)
        else:
            usable[name] = idx
        info[name] = d
    return usable, info
