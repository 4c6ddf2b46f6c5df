"""`cxraug filter`: a reproducible, explained keep/reject decision for every synthetic image.

The paper removed "noisy" synthetic images by eye; this stage replaces that with checks whose
thresholds are calibrated on the REAL TRAINING images of the same class (cxraug.quality.decide;
scores, nearest-real search and the contact sheet: the rest of cxraug.quality).

    filter_synthetic(ws, config, label=...)   manifest rows -> statuses, reasons, notes, sheet
                                              (--move-rejected: cxraug.quality.moves)
    filter_folder(ws, folder, config, ...)    a folder of PNGs -> report only (CSV optional)

Every synthetic row of the class (status ok, rejected or error) is re-evaluated on each run,
so the same inputs and options always give the same statuses; real rows are never touched.
An image file that cannot be read is rejected as "unreadable: <why>".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from cxraug.core import pending
from cxraug.core.csvfile import write_rows
from cxraug.core.dataset import load_dataset, real_counts, scarce_class
from cxraug.core.errors import ImageError, InputError
from cxraug.core.fsutil import atomic_write_json, atomic_write_text
from cxraug.core.images import looks_like_image_name, read_gray_u8, to_uint8
from cxraug.core.manifest import Manifest, check_label
from cxraug.core.ui import progress, warn
from cxraug.core.workspace import Workspace, manifest_writer
from cxraug.quality.decide import (
    Decision,
    Evaluation,
    FilterConfig,
    calibrate,
    decide,
    judge,
)
from cxraug.quality.moves import save_verdicts
from cxraug.quality.scores import SCORE_NAMES
from cxraug.quality.sheet import write_sheet

__all__ = [
    "Decision",
    "FilterConfig",
    "FilterResult",
    "calibrate",
    "decide",
    "judge",
    "filter_folder",
    "filter_synthetic",
    "load_reference",
    "summary_table",
]

REEVALUATED_STATUSES = ("ok", "rejected", "error")


@dataclass
class FilterResult:
    label: str
    decisions: list[Decision]
    evaluation: Evaluation | None
    n_real: int
    sheet_path: Path | None = None
    config_path: Path | None = None
    report_path: Path | None = None
    moved: int = 0
    move_failures: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return sum(d.kept for d in self.decisions)

    def by_reason(self) -> dict[str, int]:
        """Rejected images counted by their primary (first) reason."""
        return dict(sorted(Counter(d.primary for d in self.decisions if not d.kept).items()))

    def to_json(self) -> dict[str, object]:
        ev = self.evaluation
        return {
            "class": self.label,
            "n_synthetic": len(self.decisions),
            "n_real": self.n_real,
            "kept": self.kept,
            "rejected": len(self.decisions) - self.kept,
            "rejected_by_reason": self.by_reason(),
            "thresholds": ev.calibration.thresholds if ev else {},
            "sheet": str(self.sheet_path) if self.sheet_path else None,
            "config": str(self.config_path) if self.config_path else None,
            "report": str(self.report_path) if self.report_path else None,
            "moved": self.moved,
            "move_failures": self.move_failures,
            "decisions": [
                {
                    "id": d.id,
                    "status": "ok" if d.kept else "rejected",
                    "reason": d.reason,
                    "scores": d.scores,
                }
                for d in self.decisions
            ],
        }


def load_reference(ws: Workspace, label: str, config: FilterConfig) -> tuple[np.ndarray, list[str]]:
    """The real TRAINING images of `label` as saved pixels: (M, H, W) uint8 and their ids."""
    check_label(label)
    ds = load_dataset(ws.dataset_path).subset(split="train", label=label)
    if len(ds) < config.min_real:
        raise InputError(
            f"{ws.dataset_path} holds {len(ds)} real {label} training image(s); the filter "
            f"needs at least {config.min_real} to calibrate its thresholds. Collect more real "
            f"{label} images and re-run `cxraug preprocess`"
        )
    return to_uint8(ds.images), [str(i) for i in ds.ids]


def _read_images(
    paths: list[Path], size: tuple[int, int]
) -> tuple[list[int], list[np.ndarray], dict[int, str]]:
    """Read every file; returns (readable indices, their (H, W) uint8 pixels, {index: why not})."""
    ok_idx: list[int] = []
    imgs: list[np.ndarray] = []
    bad: dict[int, str] = {}
    with progress() as bar:
        task = bar.add_task("reading synthetic images", total=len(paths))
        for i, p in enumerate(paths):
            try:
                img = read_gray_u8(p)
            except ImageError as e:
                bad[i] = f"unreadable: {e.reason}"
            else:
                if img.shape != size:
                    raise InputError(
                        f"{p} is {img.shape[1]}x{img.shape[0]} but the real training images are "
                        f"{size[1]}x{size[0]}; filter compares images at the processed size "
                        "(a resize would change the noise scores), so generate with a model "
                        "trained on this dataset or re-run `cxraug preprocess` at that size"
                    )
                ok_idx.append(i)
                imgs.append(img)
            bar.advance(task)
    return ok_idx, imgs, bad


def _judge(
    ids: list[str], paths: list[Path], real: np.ndarray, real_ids: list[str], config: FilterConfig
) -> tuple[list[Decision], Evaluation]:
    ok_idx, imgs, bad = _read_images(paths, (real.shape[1], real.shape[2]))
    stack = np.stack(imgs) if imgs else np.zeros((0, *real.shape[1:]), np.uint8)
    ev = judge(stack, [ids[i] for i in ok_idx], calibrate(real, real_ids, config))
    by_index = dict(zip(ok_idx, ev.decisions, strict=True))
    decisions = [
        by_index[i] if i in by_index else Decision(ids[i], False, ("unreadable",), (bad[i],))
        for i in range(len(ids))
    ]
    return decisions, ev


def _without_filter_note(note: str) -> str:
    """A row's note less what an earlier `filter` wrote (its "filter: ..." part, always the
    last): what `generate` wrote there (the enlargement, the refiner file and its hash, the
    grey-level reference) stays, and a second `filter` replaces its own scores only."""
    if note.startswith("filter: "):
        return ""
    return note.split("; filter: ")[0]


@manifest_writer("cxraug filter")
def filter_synthetic(
    ws: Workspace,
    config: FilterConfig = FilterConfig(),
    *,
    label: str | None = None,
    move_rejected: bool = False,
    sheet: Path | None = None,
    force: bool = False,
) -> FilterResult:
    """Judge every synthetic `label` row (default: config.label; None: the scarce class) of
    the manifest and record the verdicts in it, holding the workspace lock (another manifest
    writer running: exit 7). The sheet and its config are written before the manifest is saved;
    with `move_rejected` the files move with the save (cxraug.quality.moves)."""
    manifest = ws.load_manifest()
    label, config = _with_class(ws, config, label, manifest)
    pending.sweep(ws, manifest)  # files an interrupted generate or filter left without rows
    rows = sorted((r for r in manifest if r.synthetic and r.label == label
                   and r.status in REEVALUATED_STATUSES), key=lambda r: r.id)  # fmt: skip
    if not rows:
        raise InputError(
            f"no synthetic {label} rows in {ws.manifest_path}; run `cxraug generate --class "
            f"{label}` first (or use --folder DIR to judge a folder of PNGs)"
        )
    sheet_path = _output_path(sheet, ws.filter_sheet_path(label), force)
    if sheet is not None:  # the default sheet and its config are filter's own, replaced each run
        _check_config_beside(sheet_path, force)
    real, real_ids = load_reference(ws, label, config)
    paths = [r.resolve(ws.root) for r in rows]  # before any move: for the sheet
    decisions, ev = _judge([r.id for r in rows], paths, real, real_ids, config)
    for rec, d in zip(rows, decisions, strict=True):
        rec.set_status("ok" if d.kept else "rejected", d.reason)
        rec.note = "; ".join(t for t in (_without_filter_note(rec.note),
                                          d.note() if d.scores else "") if t)  # fmt: skip
    result = FilterResult(label, decisions, ev, len(real_ids))
    thumbs = {r.id: p for r, p in zip(rows, paths, strict=True)}
    moves = save_verdicts(ws, manifest, label, rows, decisions, move=move_rejected,
                          write_outputs=lambda: _write_outputs(result, thumbs, config,
                                                               sheet_path))  # fmt: skip
    result.moved, result.move_failures = moves.moved, moves.failures
    for f in result.move_failures:
        warn(f)
    return result


def filter_folder(
    ws: Workspace,
    folder: Path,
    config: FilterConfig = FilterConfig(),
    *,
    label: str | None = None,
    report: Path | None = None,
    sheet: Path | None = None,
    force: bool = False,
) -> FilterResult:
    """Judge a folder of images (not recursive) without touching the manifest; ids are the
    file names. Writes the CSV report and the sheet only when asked."""
    label, config = _with_class(ws, config, label)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--folder {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and looks_like_image_name(p))
    if not files:
        raise InputError(f"no images (.png, .jpg, ...) in {folder}")
    report_path = _output_path(report, None, force)
    sheet_path = _output_path(sheet, None, force)
    _check_config_beside(sheet_path or report_path, force)
    real, real_ids = load_reference(ws, label, config)
    decisions, ev = _judge([p.name for p in files], files, real, real_ids, config)
    result = FilterResult(label, decisions, ev, len(real_ids), report_path=report_path)
    if report_path is not None:
        atomic_write_text(report_path, _report_csv(decisions, files))
    _write_outputs(result, {p.name: p for p in files}, config, sheet_path or report_path)
    return result


def _with_class(ws: Workspace, config: FilterConfig, label: str | None,
                manifest: Manifest | None = None) -> tuple[str, FilterConfig]:  # fmt: skip
    """The class judged (`label`, else config.label, else the scarce class of the manifest's
    train split: cxraug.core.dataset.scarce_class) and the config naming it, so that the
    saved config records the class as resolved."""
    chosen = config.label if label is None else label
    if chosen is None:
        chosen = scarce_class(real_counts(manifest or ws.load_manifest()))
    check_label(chosen)
    return chosen, replace(config, label=chosen)


def _output_path(given: Path | None, default: Path | None, force: bool) -> Path | None:
    """A user-named output must not overwrite an existing file without --force."""
    if given is None:
        return default
    if Path(given).exists() and not force:
        raise InputError(
            f"{given} already exists; pass --force to overwrite it or choose another path"
        )
    return Path(given)


def _config_beside(anchor: Path) -> Path:
    """The resolved-config JSON written next to a sheet or report: NAME.config.json."""
    return anchor.with_name(anchor.stem + ".config.json")


def _check_config_beside(anchor: Path | None, force: bool) -> None:
    """The config JSON beside a user-named sheet/report is an output too: not overwritten
    without --force either."""
    if anchor is not None and not force and _config_beside(anchor).exists():
        raise InputError(f"{_config_beside(anchor)} (written beside {anchor.name}) already "
                         "exists; pass --force to overwrite it or choose another path")  # fmt: skip


def _report_csv(decisions: list[Decision], files: list[Path]) -> str:
    rows = []
    for d, p in zip(decisions, files, strict=True):
        score = [f"{d.scores[k]:.6g}" if k in d.scores else ""
                 for k in (*SCORE_NAMES, "nn_real", "realism")]  # fmt: skip
        rows.append([d.id, str(p), "ok" if d.kept else "rejected", d.reason, *score[:-1],
                     d.nearest_real, score[-1]])  # realism last: empty without --realism
    return write_rows(["id", "path", "status", "reason", *SCORE_NAMES, "nn_real",
                       "nearest_real", "realism"], rows)  # fmt: skip


def _write_outputs(
    result: FilterResult, thumbs: dict[str, Path], config: FilterConfig, anchor: Path | None
) -> None:
    """Contact sheet (when `anchor` is a .png) and the resolved config + thresholds JSON."""
    if anchor is None or result.evaluation is None:
        return
    if anchor.suffix.lower() == ".png":
        write_sheet(anchor, result.decisions, thumbs, config)
        result.sheet_path = anchor
    result.config_path = _config_beside(anchor)
    payload = {
        "class": result.label,
        "n_real": result.n_real,
        "kept": result.kept,
        "rejected": len(result.decisions) - result.kept,
        "rejected_by_reason": result.by_reason(),
        **result.evaluation.calibration.to_json(),
    }
    atomic_write_json(result.config_path, payload)


def summary_table(result: FilterResult) -> Group:
    """Kept / rejected counts per primary reason, with the thresholds that decided them."""
    n = len(result.decisions)
    # the title as its own line: a table title wraps at the (narrow) table's width
    title = Text(f"filter: {result.label}, {n} synthetic vs {result.n_real} real training images",
                 style="bold")  # fmt: skip
    t = Table()
    t.add_column("decision")
    t.add_column("images", justify="right")
    t.add_row(Text("kept", style="green"), str(result.kept))
    for key, count in result.by_reason().items():
        t.add_row(Text(f"rejected: {key}", style="red"), str(count))
    if result.moved:
        t.add_row("files moved", str(result.moved))
    paths = [
        Text(f"{label}: {p}", overflow="fold")
        for label, p in (
            ("sheet", result.sheet_path),
            ("config", result.config_path),
            ("report", result.report_path),
        )
        if p is not None
    ]
    return Group(title, t, *paths)
