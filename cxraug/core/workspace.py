"""The workspace layout shared by every command: the ONE owner of every path in it.

    WORKSPACE/
      manifest.csv                  the one dataset manifest (cxraug.core.manifest)
      collect-config.json           what `collect` was run with
      processed/dataset.npz         the training array from `preprocess` (cxraug.core.dataset)
      processed/config.json         the settings and manifest hash it was built from
      runs/NAME/                    one training run each (RunDir below)
      synthetic/CLASS/              PNGs written by `generate` (+ generate-STEM.json)
      synthetic/CLASS-filter-sheet.png   the contact sheet of `filter`
      .cache/fid/                   the feature cache of `fid`
      evaluations/NAME/             one `evaluate` each (EvalDir: config.json, results.json,
                                    roc.png, differences.png)

    runs/NAME/
      config.json                   resolved TrainConfig
      log.csv, tb/, loss.png        what the run logs (cxraug.gan.runlog)
      samples/iter_XXXXXX.png       fixed-noise sample grids
      checkpoints/ckpt-XXXXXXX.npz  checkpoints (cxraug.gan.checkpoint)
      checkpoints/latest            the pointer to the newest complete checkpoint

No other module builds these paths by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cxraug.core.errors import InputError
from cxraug.core.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest

_CHECKPOINT = re.compile(r"^ckpt-(\d{7,})\.npz$")


@dataclass(frozen=True)
class RunDir:
    """One training run's folder and every path inside it."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.csv"

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


@dataclass(frozen=True)
class EvalDir:
    """One evaluation's folder (`cxraug evaluate --name NAME`) and every path inside it."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

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
    def collect_config_path(self) -> Path:
        return self.root / "collect-config.json"

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
        """The folder of run NAME (it may not exist yet)."""
        return RunDir(self.runs_dir / name)

    def run_ref(self, run: RunDir) -> str:
        """How the manifest's `run` column names a run: runs/NAME."""
        return (self.runs_dir / run.name).relative_to(self.root).as_posix()

    def find_run(self, run: str) -> RunDir:
        """A run given as a path, a name under WORKSPACE/runs, or a path relative to WORKSPACE."""
        for cand in (Path(run), self.runs_dir / run, self.root / run):
            if RunDir(cand).is_run():
                return RunDir(cand.resolve())
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
        return self.synthetic_dir / label

    def rejected_dir(self, label: str) -> Path:
        return self.synthetic_class_dir(label) / "rejected"

    def synthetic_id(self, label: str, stem: str) -> str:
        """Manifest id of a generated image: synthetic/CLASS/STEM (STEM = RUN-sSEED-INDEX)."""
        return (self.synthetic_class_dir(label) / stem).relative_to(self.root).as_posix()

    def synthetic_png(self, label: str, stem: str) -> Path:
        return self.synthetic_class_dir(label) / f"{stem}.png"

    def generate_config_path(self, label: str, stem: str) -> Path:
        return self.synthetic_class_dir(label) / f"generate-{stem}.json"

    def filter_sheet_path(self, label: str) -> Path:
        return self.synthetic_dir / f"{label}-filter-sheet.png"

    # ---- fid ---------------------------------------------------------------------------
    @property
    def fid_cache_dir(self) -> Path:
        return self.root / ".cache" / "fid"

    # ---- evaluate ----------------------------------------------------------------------
    @property
    def evaluations_dir(self) -> Path:
        return self.root / "evaluations"

    def evaluation(self, name: str) -> EvalDir:
        """The folder of evaluation NAME (it may not exist yet)."""
        return EvalDir(self.evaluations_dir / name)
