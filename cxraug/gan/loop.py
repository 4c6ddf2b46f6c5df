"""The training loop shared by `cxraug.train.train` and `resume` (TensorFlow: imported only
when a run starts).

`run_training` prepares the run folder, builds the state (cxraug.gan.step), writes the run's
config and training set, then steps: it checks the losses every iteration (NaN/Inf ->
NumericError, exit 5, last good checkpoint untouched), logs, samples a fixed noise grid,
checkpoints (and scores the checkpoint, cxraug.gan.scoring) every --checkpoint-interval
iterations and at the end, and checkpoints on SIGINT/SIGTERM (then exit 130). Only the chief
writes (cxraug.gan.cluster); every worker steps.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cxraug.core.dataset import Dataset
from cxraug.core.errors import InputError, NumericError
from cxraug.core.fsutil import atomic_write_text, remove_stale_temps
from cxraug.core.ui import err, progress, text_column, warn
from cxraug.core.workspace import RunDir, checkpoint_iteration
from cxraug.gan.cells import apportion, dataset_cells
from cxraug.gan.checkpoint import Checkpoint, mark_best, restore, save_checkpoint
from cxraug.gan.cluster import any_worker, describe, is_chief, same_on_all_workers
from cxraug.gan.config import TrainConfig
from cxraug.gan.hardware import precision_warning
from cxraug.gan.result import TrainingInterrupted, TrainResult
from cxraug.gan.runlog import RunLog
from cxraug.gan.scoring import ScoreLog, Scorer, minority_class
from cxraug.gan.step import (
    Step,
    TrainState,
    all_finite,
    build_state,
    make_step,
    resident_dataset,
    xla_scope,
)
from cxraug.gan.trainset import (
    cells_note,
    cues_note,
    left_out_note,
    training_labels,
    write_training_set,
)

_PRECISION = {"none": "fp32", "bf16": "bf16 (mixed: fp32 weights)",
              "fp16": "fp16 (mixed: fp32 weights, loss scaling)"}  # fmt: skip


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the iteration."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def run_training(run: RunDir, cfg: TrainConfig, ds: Dataset, ckpt: Checkpoint | None,
                 strategy: Any, dataset_sha256: str, left_out: list[str],
                 cue_facts: dict[str, Any], *, replace: bool = False, quiet: bool,
                 on_iteration: Callable[[int], None] | None,
                 extractor: Any = None) -> TrainResult:  # fmt: skip
    """Train `run` on `ds` from `ckpt` (None: a new run). `left_out`: the ids of the train
    split left out for editorial marks; `cue_facts`: what --cues did to the images ({}
    without it); `replace`: empty the run folder first (`--force`); `extractor`: the feature
    extractor of the checkpoint scores (None: the fixed-seed random Inception-v3,
    cxraug.gan.scoring)."""
    chief = is_chief(strategy)
    if chief:
        _remove_stale_temps(run, quiet)
    auto = cfg.mixed_precision == "auto"
    state = _build_state(run, cfg, len(ds), ckpt, strategy)
    cfg = state.cfg  # config.json and the checkpoints record bf16 or none
    labels = _start_run(run, cfg, ds, dataset_sha256, left_out, cue_facts, chief=chief,
                        replace=replace, quiet=quiet)  # fmt: skip
    # Scores and sample grids run G locally (no collectives): the chief alone computes them.
    scorer = _make_scorer(cfg, ds, extractor) if cfg.score_samples > 0 and chief else None
    images, labels = resident_dataset(ds.images, labels)
    del ds  # the tf.Variables hold the only copy we need (~0.4 GB at 2,150 x 224 px)
    step = make_step(state, images, labels)
    if not quiet:
        err.print(_start_line(run, state, auto), highlight=False, soft_wrap=True)
    loop = _Loop(state, run, dataset_sha256, chief, scorer,
                 ckpt.path if ckpt is not None else None)  # fmt: skip
    try:
        metrics = loop.iterate(step, quiet, on_iteration)
    finally:
        loop.close()
    return TrainResult(run.path, state.iteration, loop.last_ckpt, metrics,
                       time.perf_counter() - loop.t0, cfg, len(left_out))  # fmt: skip


def _remove_stale_temps(run: RunDir, quiet: bool) -> None:
    """A process killed while writing (SIGKILL, power cut) leaves hidden temp files of up to
    a checkpoint's size; nothing else writes this run's folders now (we hold its lock), so
    they are garbage."""
    stale = [p for d in (run.checkpoints_dir, run.path, run.samples_dir)
             for p in remove_stale_temps(d)]  # fmt: skip
    if stale and not quiet:
        err.print(f"removed {len(stale)} temp file(s) left by an interrupted write in "
                  f"{run.path}", highlight=False)  # fmt: skip


def _build_state(run: RunDir, cfg: TrainConfig, n_images: int, ckpt: Checkpoint | None,
                 strategy: Any) -> TrainState:  # fmt: skip
    """The run's state, restored from `ckpt` if given; "auto" precision is resolved here."""
    state = build_state(cfg, strategy)  # resolves "auto" precision, once: state.cfg is final
    # Workers started with other options, another dataset or another resolved precision
    # would run different graphs and hang or diverge: refuse before anything is written.
    if not same_on_all_workers(strategy, f"{state.cfg.to_json()} {n_images} {run.name} "
                               f"{ckpt.sha256 if ckpt is not None else ''}"):  # fmt: skip
        raise InputError("the workers disagree on the run: start every worker with the same "
                         "command and options (and an explicit --mixed-precision where the "
                         "hosts differ), the same dataset and the same run folder")
    if ckpt is not None:
        restore(state, ckpt)
    if (slow := precision_warning(state.cfg.mixed_precision)) is not None:
        warn(slow)
    return state


def _start_run(run: RunDir, cfg: TrainConfig, ds: Dataset, dataset_sha256: str,
               left_out: list[str], cue_facts: dict[str, Any], *, chief: bool, replace: bool,
               quiet: bool) -> Any:  # fmt: skip
    """Write the run's config and training set (the chief, emptying the folder first if
    `replace`), print what was left out; the training labels (cells in a source-conditioned
    run)."""
    labels, per_cell = training_labels(ds, cfg.sources)
    if chief:
        if replace:  # empty the folder, but keep the lock file we hold
            for p in list(run.contents()):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        atomic_write_text(run.config_path, cfg.to_json() + "\n")
        write_training_set(run, ds, dataset_sha256, cfg.include_marked, left_out, per_cell,
                           cue_facts)  # fmt: skip
    notes = (left_out_note(ds, left_out, cfg.include_marked, run),
             cells_note(per_cell, cfg.sources), cues_note(cue_facts))  # fmt: skip
    for note in notes:
        if not quiet and note:
            err.print(note, highlight=False, soft_wrap=True)
    return labels


def _start_line(run: RunDir, state: TrainState, auto: bool) -> str:
    """The one line that says what runs: iterations, batch, precision (and why, if auto)."""
    cfg, how = state.cfg, ""
    if auto:  # say why, so a surprising choice can be overridden
        native = cfg.mixed_precision == "bf16"
        how = f" (auto: {'native' if native else 'no native'} bf16 matmuls here; " \
              f"--mixed-precision {'none' if native else 'bf16'} to change)"
    return (f"train {run.path}: iterations {state.iteration} -> {cfg.iterations}, batch "
            f"{cfg.batch_size}, precision {_PRECISION[cfg.mixed_precision]}{how}, XLA "
            f"{xla_scope(cfg, state.strategy)}{describe(state.strategy)}")


def _make_scorer(cfg: TrainConfig, ds: Dataset, extractor: Any) -> Scorer:
    """Scores the class with the fewest training images (the one `generate` grows); in a
    source-conditioned run its samples come from the class's observed cells, in proportion."""
    label = minority_class(ds.labels, cfg.num_classes)
    sub = ds.images[ds.labels == label]
    ids = [str(i) for i in ds.ids[ds.labels == label]]
    cells = None
    if cfg.sources:
        cells = apportion(dataset_cells(ds, cfg.sources)[ds.labels == label], cfg.score_samples)
    return Scorer(sub, ids, label, cfg.score_samples, cfg.latent_dim, cfg.seed,
                  extractor=extractor, cells=cells)  # fmt: skip


class _Loop:
    """The iterations of one run and what they write: the log and sample grids, checkpoints
    and their scores (the chief's; other workers step and read the variables only)."""

    def __init__(self, state: TrainState, run: RunDir, dataset_sha256: str, chief: bool,
                 scorer: Scorer | None, last_ckpt: Path | None) -> None:  # fmt: skip
        self.state, self.run, self.dataset_sha256, self.chief = state, run, dataset_sha256, chief
        self.scorer, self.last_ckpt = scorer, last_ckpt
        self.log = RunLog(run, state.cfg, resume_from=state.iteration) if chief else None
        self.scores = ScoreLog(run, resume_from=state.iteration) if scorer is not None else None
        rows = self.log.rows if self.log is not None else []
        self.wall0 = float(rows[-1]["wall_s"]) if rows else 0.0
        self.t0 = time.perf_counter()

    def iterate(self, step: Step, quiet: bool,
                on_iteration: Callable[[int], None] | None) -> dict[str, float]:  # fmt: skip
        """Step to cfg.iterations; the last iteration's metrics."""
        state, cfg, log = self.state, self.state.cfg, self.log
        metrics: dict[str, float] = {}
        info = text_column("{task.fields[info]}")
        with StopFlag() as stop, progress(info, disable=quiet) as bar:
            task = bar.add_task("train", total=cfg.iterations, completed=state.iteration, info="")
            if state.iteration == 0 and log is not None:
                log.sample(state.sampler, 0)
            while state.iteration < cfg.iterations:
                metrics, per_s = self._step(step)
                it = state.iteration
                bar.update(task, completed=it, info=f"D {metrics['d_loss']:.3f} "
                           f"G {metrics['g_loss']:.3f} {per_s:.2f} it/s")  # fmt: skip
                if it % cfg.sample_interval == 0 and log is not None:
                    log.sample(state.sampler, it)
                if it % cfg.checkpoint_interval == 0 or it == cfg.iterations:
                    self.save(score=True)
                if on_iteration is not None:
                    on_iteration(it)
                # a signal to any worker stops all of them at the same iteration
                if any_worker(state.strategy, stop.signum is not None):
                    self.save(score=False, unless_saved=True)
                    raise TrainingInterrupted(
                        f"training interrupted at iteration {it}; checkpoint saved to "
                        f"{self.last_ckpt}. Continue with `cxraug train --resume "
                        f"{self.run.name}`"
                    )
            self.save(score=True, unless_saved=True)
        return metrics

    def _step(self, step: Step) -> tuple[dict[str, float], float]:
        """One iteration, its losses checked and logged: (metrics, iterations per second)."""
        state = self.state
        sigma = state.cfg.noise_sigma(state.iteration)
        ts = time.perf_counter()
        metrics = step(sigma, sigma > 0)
        per_s = 1.0 / (time.perf_counter() - ts)
        if not all(math.isfinite(v) for v in metrics.values()):
            raise NumericError(
                f"non-finite loss at iteration {state.iteration + 1} "
                f"(d_loss={metrics['d_loss']}, g_loss={metrics['g_loss']}); stopped. "
                f"Last good checkpoint: {self.last_ckpt or 'none'}. Lower --lr, check the "
                "dataset for NaN pixels, or resume from that checkpoint"
            )
        state.iteration += 1
        if self.log is not None:
            self.log.record(state.iteration, metrics, per_s,
                            self.wall0 + time.perf_counter() - self.t0)  # fmt: skip
        return metrics, per_s

    def save(self, *, score: bool, unless_saved: bool = False) -> None:
        """Checkpoint the state (`unless_saved`: only if this iteration has no checkpoint
        yet), then, with `score`, score it and move checkpoints/best if it is the best."""
        state = self.state
        if unless_saved and self.last_ckpt is not None \
                and checkpoint_iteration(self.last_ckpt) == state.iteration:  # fmt: skip
            return
        if not all_finite(state):  # every worker reads the variables, only the chief writes
            raise NumericError(f"weights became non-finite at iteration {state.iteration}; "
                               "the last good checkpoint was kept. Lower --lr and resume")
        self.last_ckpt = save_checkpoint(state, self.run, state.cfg.keep_checkpoints,
                                         dataset_sha256=self.dataset_sha256,
                                         write=self.chief)  # fmt: skip
        if score and self.scorer is not None and self.scores is not None \
                and self.log is not None:  # fmt: skip
            s = self.scorer(state.sampler, state.iteration, self.last_ckpt.name)
            best = self.scores.add(s)
            mark_best(self.run, self.run.checkpoints_dir / best.checkpoint,
                      {**asdict(best), "eligible": best.eligible})  # fmt: skip
            self.log.scalars(state.iteration, {
                "score/kid": s.kid, "score/kept": s.kept, "score/memorised": s.memorised,
                "score/precision": s.precision, "score/recall": s.recall,
                "score/c2st": s.c2st})  # fmt: skip

    def close(self) -> None:
        """Plot the losses and close the log (also after an error or an interruption)."""
        if self.log is not None:
            if self.log.rows:
                self.log.plot()
            self.log.close()
