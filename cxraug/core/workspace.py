"""The workspace layout shared by every command: the ONE owner of every path in it.

    WORKSPACE/
      manifest.csv                  the one dataset manifest (cxraug.core.manifest)
      .cxraug.lock                  the workspace lock of the manifest writers (cxraug.core.lock)
      collect-config.json           what `collect` was run with
      .patient-salt                 the secret salt of DICOM patient-id hashes (cxraug.core.dicom;
                                    made by the first collect that reads a DICOM patient id)
      processed/dataset.npz         the training array from `preprocess` (cxraug.core.dataset)
      processed/config.json         the settings and manifest hash it was built from
      runs/NAME/                    one training run each (RunDir below)
      synthetic/CLASS/              PNGs written by `generate` (+ generate-STEM.json; while
                                    it runs, .generate-STEM.pending.json, and while `filter
                                    --move-rejected` moves files, .filter-moves.pending.json:
                                    cxraug.core.pending)
      synthetic/CLASS-filter-sheet.png   the contact sheet of `filter`
      .cache/fid/                   the feature cache of `fid`
      evaluations/NAME/             one `evaluate` each (EvalDir: config.json, results.json,
                                    roc.png, differences.png)

    runs/NAME/
      .lock                         held by the one `train` writing this run (cxraug.core.lock)
      config.json                   resolved TrainConfig
      training_set.json             which images the run trains on (cxraug.gan.trainset)
      log.csv, tb/, loss.png        what the run logs (cxraug.gan.runlog)
      samples/iter_XXXXXX.png       fixed-noise sample grids
      checkpoints/ckpt-XXXXXXX.npz  checkpoints (cxraug.gan.checkpoint)
      checkpoints/latest            the pointer to the newest complete checkpoint
      checkpoints/best              the pointer to the best-scored checkpoint (never pruned)
      scores.csv, scores.png        the checkpoint scores that chose `best` (cxraug.gan.scoring)

No other module builds these paths by hand, and the manifest's `run` cells (runs/NAME) are
written by `run_ref` and read back by `run_name_of`.

Every user-given name that becomes a path component (a run name, a class, a synthetic file
stem, and evaluation names) passes the one name rule (cxraug.core.names), so that no name can
climb out of its folder (`..`, `/`, an absolute path).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from cxraug.core.errors import InputError
from cxraug.core.fsutil import remove_stale_temps
from cxraug.core.lock import hold
from cxraug.core.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from cxraug.core.names import check_name, check_run_name, name_problem

F = TypeVar("F", bound=Callable[..., Any])
_CHECKPOINT = re.compile(r"^ckpt-(\d{7,})\.npz$")
RUN_LOCK_NAME = ".lock"

@dataclass(frozen=True)
class _OutputDir:
    """A named output folder (a run, an evaluation) holding its saved config."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"


@dataclass(frozen=True)
class RunDir(_OutputDir):
    """One training run's folder and every path inside it."""

    @property
    def log_path(self) -> Path:
        return self.path / "log.csv"

    @property
    def training_set_path(self) -> Path:
        """Which images the run trains on: the dataset's hash, the images left out for
        editorial marks (cxraug.train)."""
        return self.path / "training_set.json"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def loss_plot_path(self) -> Path:
        return self.path / "loss.png"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    def sample_path(self, iteration: int) -> Path:
        return self.samples_dir / f"iter_{iteration:06d}.png"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest_pointer(self) -> Path:
        return self.checkpoints_dir / "latest"

    @property
    def best_pointer(self) -> Path:
        """Names the best-scored checkpoint (cxraug.gan.scoring); that file is never pruned."""
        return self.checkpoints_dir / "best"

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.csv"

    @property
    def scores_plot_path(self) -> Path:
        return self.path / "scores.png"

    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints_dir / f"ckpt-{iteration:07d}.npz"

    def checkpoint_files(self) -> list[Path]:
        """Checkpoint files sorted by iteration (oldest first); temp files are not listed."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints_dir.iterdir()
                 if (m := _CHECKPOINT.match(p.name))]  # fmt: skip
        return [p for _, p in sorted(found)]

    def is_run(self) -> bool:
        return self.config_path.is_file() or self.checkpoints_dir.is_dir()

    @property
    def lock_path(self) -> Path:
        return self.path / RUN_LOCK_NAME

    def lock(self, command: str) -> AbstractContextManager[None]:
        """Held by the one `train` that writes this run; a second one gets exit 7."""
        return hold(self.lock_path, command, f"run {self.name}")

    def contents(self) -> Iterator[Path]:
        """What the run folder holds, its lock file aside."""
        if self.path.is_dir():
            yield from (p for p in self.path.iterdir() if p.name != RUN_LOCK_NAME)


@dataclass(frozen=True)
class EvalDir(_OutputDir):
    """One evaluation's folder (`cxraug evaluate --name NAME`) and every path inside it."""

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def roc_plot_path(self) -> Path:
        return self.path / "roc.png"

    @property
    def differences_plot_path(self) -> Path:
        return self.path / "differences.png"


def checkpoint_iteration(path: Path) -> int | None:
    """The iteration in a checkpoint file's name, None if it is not one."""
    m = _CHECKPOINT.match(Path(path).name)
    return int(m.group(1)) if m else None


def run_name_of(ref: str) -> str:
    """The run NAME in a reference to a run: a manifest `run` cell (runs/NAME, `run_ref`), a
    run name, or a path to the run folder (a trailing '/' allowed)."""
    return ref.rstrip("/").split("/")[-1]


def manifest_writer(command: str) -> Callable[[F], F]:
    """Decorator for a stage function whose first argument is its Workspace and which
    reads, modifies and writes the manifest: it runs holding the workspace lock
    (`Workspace.lock`; another manifest writer running: exit 7), after removing the temp files
    a killed manifest writer left (`Workspace.remove_killed_temps`)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def locked(ws: Workspace, *args: Any, **kwargs: Any) -> Any:
            with ws.lock(command):
                ws.remove_killed_temps()
                return fn(ws, *args, **kwargs)

        return cast(F, locked)

    return decorate


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: Path | str = ".") -> Workspace:
        return cls(Path(root).expanduser().resolve())

    # ---- manifest and collect ----------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def lock_path(self) -> Path:
        return self.root / ".cxraug.lock"

    def lock(self, command: str) -> AbstractContextManager[None]:
        """Held for the whole read-modify-write of a manifest-writing command (collect,
        preprocess, generate, filter): a second one is refused with exit 7 instead of silently
        overwriting the first one's rows. Readers need no lock: the manifest is replaced
        atomically, so they see the old file or the new one."""
        return hold(self.lock_path, command, f"workspace {self.root}")

    def remove_killed_temps(self) -> list[Path]:
        """Delete the temp files (cxraug.core.fsutil.TEMP_NAME) a killed manifest writer left:
        of the manifest, its backup and collect's config in the root, of filter's sheet in
        synthetic/, and any in synthetic/CLASS/ and its rejected/ (PNGs, journals). Only
        manifest writers write there, so call it holding the workspace lock."""
        ours = re.compile(rf"({re.escape(MANIFEST_NAME)}(\.bak)?|collect-config\.json)$")
        removed = remove_stale_temps(self.root, ours)
        sheets = re.compile(r".+-filter-sheet(\.png|\.config\.json)$")
        removed += remove_stale_temps(self.synthetic_dir, sheets)
        for d in self.synthetic_dir.iterdir() if self.synthetic_dir.is_dir() else ():
            if d.is_dir():
                removed += remove_stale_temps(d) + remove_stale_temps(d / "rejected")
        return removed

    @property
    def collect_config_path(self) -> Path:
        return self.root / "collect-config.json"

    @property
    def patient_salt_path(self) -> Path:
        """The secret salt of the DICOM patient-id hashes (never printed, never exported)."""
        return self.root / ".patient-salt"

    def load_manifest(self) -> Manifest:
        return read_manifest(self.manifest_path)

    def save_manifest(self, manifest: Manifest) -> None:
        write_manifest(self.manifest_path, manifest)

    def relpath(self, p: Path) -> str:
        """Path as stored in the manifest: relative if inside the workspace, else absolute."""
        p = Path(p).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    # ---- preprocess --------------------------------------------------------------------
    @property
    def processed_dir(self) -> Path:
        return self.root / "processed"

    @property
    def dataset_path(self) -> Path:
        return self.processed_dir / "dataset.npz"

    @property
    def dataset_config_path(self) -> Path:
        return self.processed_dir / "config.json"

    # ---- training runs -----------------------------------------------------------------
    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> RunDir:
        """The folder of run NAME (it may not exist yet); NAME must pass `check_run_name`."""
        return RunDir(self.runs_dir / check_run_name(name))

    def run_ref(self, run: RunDir) -> str:
        """How the manifest's `run` column names a run: runs/NAME (read back: run_name_of)."""
        return (self.runs_dir / run.name).relative_to(self.root).as_posix()

    def find_run(self, run: str) -> RunDir:
        """A run of this workspace: a name under WORKSPACE/runs, or the path of such a folder
        (absolute, or relative to the current folder or to WORKSPACE). A path that leads
        anywhere else is refused: a run folder is written to (resume) and named in the
        manifest, so it must be WORKSPACE/runs/NAME."""
        if not run.strip():
            raise InputError(f"the run name is empty; give the name of a run listed in "
                             f"{self.runs_dir} (e.g. --run conv)")  # fmt: skip
        if name_problem(run) is None:
            cands = [self.runs_dir / run]
        else:  # a path: normalised textually (symlinked runs/NAME folders stay allowed)
            p = Path(run).expanduser()
            cands = [Path(os.path.abspath(p))] if p.is_absolute() else \
                [Path(os.path.abspath(p)), Path(os.path.abspath(self.root / p))]
            runs = os.path.realpath(self.runs_dir)
            inside = [c for c in cands if os.path.realpath(c.parent) == runs
                      and name_problem(c.name) is None]  # fmt: skip
            if not inside:
                raise InputError(f"run {run!r} is not a folder of {self.runs_dir}; give the "
                                 "name of a run listed there (e.g. --run paper)")  # fmt: skip
            cands = [self.runs_dir / c.name for c in inside]
        for cand in cands:
            if RunDir(cand).is_run():
                return RunDir(cand)
        raise InputError(f"no training run {run!r} (looked in {self.runs_dir}); give a run "
                         "folder or a name listed under WORKSPACE/runs")  # fmt: skip

    def newest_run(self) -> RunDir:
        """The run whose `latest` checkpoint pointer was written last."""
        runs = [RunDir(p) for p in self.runs_dir.iterdir()] if self.runs_dir.is_dir() else []
        with_ckpt = [r for r in runs if r.path.is_dir() and r.latest_pointer.is_file()]
        if not with_ckpt:
            raise InputError(f"no trained run with a checkpoint under {self.runs_dir}; run "
                             "`cxraug train` first or pass --run / --checkpoint")  # fmt: skip
        return max(with_ckpt, key=lambda r: r.latest_pointer.stat().st_mtime)

    @staticmethod
    def run_of_checkpoint(checkpoint: Path) -> RunDir:
        """The run folder that holds a checkpoint file (RUN/checkpoints/FILE)."""
        return RunDir(Path(checkpoint).resolve().parent.parent)

    # ---- generate and filter -----------------------------------------------------------
    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"

    def synthetic_class_dir(self, label: str) -> Path:
        return self.synthetic_dir / check_name(label, "class")

    def rejected_dir(self, label: str) -> Path:
        return self.synthetic_class_dir(label) / "rejected"

    def synthetic_id(self, label: str, stem: str) -> str:
        """Manifest id of a generated image: synthetic/CLASS/STEM (STEM = RUN-sSEED-INDEX)."""
        return (self.synthetic_class_dir(label) / stem).relative_to(self.root).as_posix()

    def synthetic_png(self, label: str, stem: str) -> Path:
        return self.synthetic_class_dir(label) / f"{check_name(stem, 'image name')}.png"

    def generate_config_path(self, label: str, stem: str) -> Path:
        return self.synthetic_class_dir(label) / f"generate-{check_name(stem, 'image name')}.json"

    def generate_journal(self, label: str, stem: str) -> Path:
        """Files `generate` is about to write or delete (cxraug.core.pending)."""
        return self.synthetic_class_dir(label) / f".generate-{stem}.pending.json"

    def filter_journal(self, label: str) -> Path:
        """Files `filter --move-rejected` is about to link or unlink (cxraug.core.pending)."""
        return self.synthetic_class_dir(label) / ".filter-moves.pending.json"

    def pending_journals(self) -> list[Path]:
        """Journals left by interrupted `generate` and `filter` runs, any class."""
        if not self.synthetic_dir.is_dir():
            return []
        return sorted(self.synthetic_dir.glob("*/.*.pending.json"))

    def filter_sheet_path(self, label: str) -> Path:
        return self.synthetic_dir / f"{check_name(label, 'class')}-filter-sheet.png"

    # ---- fid ---------------------------------------------------------------------------
    @property
    def fid_cache_dir(self) -> Path:
        return self.root / ".cache" / "fid"

    # ---- evaluate ----------------------------------------------------------------------
    @property
    def evaluations_dir(self) -> Path:
        return self.root / "evaluations"

    def evaluation(self, name: str) -> EvalDir:
        """The folder of evaluation NAME (it may not exist yet); NAME must pass `check_name`."""
        return EvalDir(self.evaluations_dir / check_name(name, "evaluation name"))
