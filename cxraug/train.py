"""`cxraug train`: run the paper's CGAN training loop on processed/dataset.npz.

Each "epoch" of the paper is one ITERATION: one batch drawn at random with replacement. The
loop runs the compiled step of cxraug.gan.step, checks the losses every iteration (NaN/Inf ->
NumericError, exit 5, last good checkpoint untouched), logs, samples a fixed noise grid, and
checkpoints every --checkpoint-interval iterations and on SIGINT/SIGTERM (then exit 130).
`train(ws, cfg)` starts a run; `resume(ws, run)` (`--resume`) restores weights, optimizer
slots, RNG state and iteration, so that an interrupted and resumed run follows the same
trajectory as an uninterrupted one.

`--strategy multiworker` (cxraug.gan.cluster): every worker runs this loop; only the chief
writes the run folder (config.json, logs, samples, scores, checkpoints, pointers, the
`--force` removal). Input checks and stop signals are agreed between workers before anyone
acts, so that no worker is left waiting alone in a collective.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cxraug.core.dataset import Dataset, load_dataset
from cxraug.core.errors import EXIT_INTERRUPTED, CxrError, InputError, NumericError, vassert
from cxraug.core.fsutil import atomic_write_text, remove_stale_temps, sha256_file
from cxraug.core.ui import err, progress, text_column, warn
from cxraug.core.workspace import RunDir, Workspace, checkpoint_iteration
from cxraug.gan.cells import apportion, dataset_cells, run_sources, with_sources
from cxraug.gan.checkpoint import (
    Checkpoint,
    find_latest,
    mark_best,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from cxraug.gan.cluster import (
    agreed,
    any_worker,
    chief_by_environment,
    describe,
    is_chief,
    same_on_all_workers,
)
from cxraug.gan.config import DEFAULTS, RESUMABLE_CHANGES, TrainConfig
from cxraug.gan.hardware import precision_warning
from cxraug.gan.runlog import RunLog
from cxraug.gan.scoring import ScoreLog, Scorer, minority_class
from cxraug.gan.step import (
    all_finite,
    build_state,
    make_step,
    make_strategy,
    resident_dataset,
    xla_scope,
)
from cxraug.gan.trainset import (
    cells_note,
    cues_note,
    left_out_note,
    training_labels,
    training_set,
    write_training_set,
)


class TrainingInterrupted(CxrError):
    """SIGINT/SIGTERM: a checkpoint was saved, the run can be resumed."""

    exit_code = EXIT_INTERRUPTED


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    checkpoint: Path | None
    metrics: dict[str, float]
    seconds: float
    config: TrainConfig
    left_out_marked: int = 0  # training images left out for editorial marks

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "iteration": self.iteration,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "metrics": self.metrics, "seconds": round(self.seconds, 2),
                "left_out_marked": self.left_out_marked}  # fmt: skip


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the iteration."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
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


def train(
    ws: Workspace,
    cfg: TrainConfig = DEFAULTS,
    *,
    name: str | None = None,
    force: bool = False,
    image_size: int | None = None,
    quiet: bool = False,
    on_iteration: Callable[[int], None] | None = None,
) -> TrainResult:
    """Start run NAME (default: a timestamp) under WORKSPACE/runs with `cfg`. The model's
    image_size and num_classes are the dataset's; `image_size`, if given, must equal it."""
    cfg.check_strategy()  # argument checks: the same on every worker, before a cluster forms
    if cfg.strategy == "multiworker" and name is None:
        raise InputError("--strategy multiworker needs --name: every worker must name the "
                         "same run (the default, a timestamp, differs between hosts)")
    # a bad name (also --name ''): exit 3, nothing touched
    run = ws.run(time.strftime("%Y%m%d-%H%M%S") if name is None else name)
    if not ws.dataset_path.is_file():  # say so before the lock creates runs/NAME/
        load_dataset(ws.dataset_path)  # raises "run `cxraug preprocess` first"
    with _run_lock(run, "cxraug train"):  # a second `train` of this run: exit 7
        strategy = make_strategy(cfg.strategy)  # the workers of a cluster connect here

        def check() -> tuple[Dataset, list[str], dict[str, Any], bool]:  # read-only
            exists = any(run.contents())
            if exists and not force:
                raise InputError(f"run folder {run.path} already exists; pass --resume "
                                 f"{run.name} to continue it, --force to replace it, or choose "
                                 "another --name")  # fmt: skip
            ds, left_out, cue_facts = training_set(ws.dataset_path, cfg.include_marked,
                                                   cfg.cue_steps)  # fmt: skip
            if image_size is not None and image_size != ds.image_size:
                raise InputError(f"--image-size {image_size} differs from the dataset's "
                                 f"{ds.image_size} px; re-run `cxraug preprocess --size ...`")
            if cfg.condition == "class,source":
                with_sources(ds, ws.load_manifest())
            return ds, left_out, cue_facts, exists

        ds, left_out, cue_facts, exists = agreed(strategy, check)
        cfg = cfg.replace(image_size=ds.image_size, num_classes=len(ds.classes),
                          sources=run_sources(ds) if ds.sources is not None else ())
        return _run(run, cfg, ds, None, strategy, sha256_file(ws.dataset_path), left_out,
                    cue_facts, replace=exists, quiet=quiet,
                    on_iteration=on_iteration)  # fmt: skip


def _run_lock(run: RunDir, command: str) -> AbstractContextManager[None]:
    """The run folder's lock, held by the one process that writes the folder: the chief of a
    multi-worker run (its other workers share the folder on a shared filesystem but never write
    it, so they must not contend for the lock), the only process otherwise. Taken before any
    check, so a second trainer of the run is told "busy" (exit 7) whatever else is wrong."""
    return run.lock(command) if chief_by_environment() else nullcontext()


def resume(
    ws: Workspace,
    run: str,
    *,
    quiet: bool = False,
    on_iteration: Callable[[int], None] | None = None,
    **changes: Any,
) -> TrainResult:
    """Continue RUN (a name under runs/ or a run folder) from its latest checkpoint: same
    iteration, optimizer and RNG state. `changes` are TrainConfig fields: only those in
    RESUMABLE_CHANGES (iterations, the intervals, the strategy) may differ from the run's.
    In a multi-worker run every worker reads the chief's checkpoint: a shared filesystem."""
    run_dir = ws.find_run(run)
    with _run_lock(run_dir, "cxraug train --resume"):  # a second trainer: exit 7
        return _resume(ws, run_dir, quiet=quiet, on_iteration=on_iteration, **changes)


def _resume(ws: Workspace, run_dir: RunDir, *, quiet: bool,
            on_iteration: Callable[[int], None] | None, **changes: Any) -> TrainResult:  # fmt: skip
    latest = find_latest(run_dir)
    if latest is None:
        raise InputError(f"run {run_dir.path} has no usable checkpoint to resume from; "
                         "start a new run (use --force to replace this one)")  # fmt: skip
    ckpt = read_checkpoint(latest)
    unknown = sorted(set(changes) - {f.name for f in fields(TrainConfig)})
    vassert(not unknown, f"unknown training option(s) {', '.join(unknown)}")
    bad = [k for k, v in changes.items()
           if k not in RESUMABLE_CHANGES and getattr(ckpt.config, k) != v]  # fmt: skip
    if bad:
        raise InputError(f"cannot change {', '.join(sorted(bad))} when resuming (the run "
                         f"was started with other values); start a new run instead")
    cfg = ckpt.config.replace(**{k: v for k, v in changes.items() if k in RESUMABLE_CHANGES})
    # The checks above read files only; a cluster forms here, from the run's strategy.
    cfg.check_strategy()
    strategy = make_strategy(cfg.strategy)

    def check() -> tuple[Dataset, list[str], dict[str, Any], str]:
        ds, left_out, cue_facts = training_set(ws.dataset_path, cfg.include_marked,
                                               cfg.cue_steps)  # fmt: skip
        if cfg.sources:  # the cells follow the run's recorded source order
            dataset_cells(with_sources(ds, ws.load_manifest()), cfg.sources)
        if cfg.image_size != ds.image_size:
            raise InputError(f"the run was trained on {cfg.image_size} px images, the "
                             f"dataset now holds {ds.image_size} px; resume needs the same "
                             "dataset")  # fmt: skip
        now = sha256_file(ws.dataset_path)
        started = ckpt.meta.get("dataset_sha256")
        if started is None:  # a run from before checkpoints recorded it
            warn(f"{latest.name} does not record which dataset the run was trained on, so "
                 f"cxraug cannot check that {ws.dataset_path} is unchanged; resuming anyway")
        elif started != now:
            raise InputError(
                f"{ws.dataset_path} changed since run {run_dir.name} started (sha256 "
                f"{str(started)[:12]}... then, {now[:12]}... now): resuming would mix two "
                f"datasets. Restore that dataset, or start a new run (--name NEW, or --name "
                f"{run_dir.name} --force to replace this one)"
            )
        return ds, left_out, cue_facts, now

    ds, left_out, cue_facts, now = agreed(strategy, check)
    return _run(run_dir, cfg, ds, ckpt, strategy, now, left_out, cue_facts, quiet=quiet,
                on_iteration=on_iteration)  # fmt: skip


def _run(run: RunDir, cfg: TrainConfig, ds: Dataset, ckpt: Checkpoint | None, strategy: Any,
         dataset_sha256: str, left_out: list[str], cue_facts: dict[str, Any], *,
         replace: bool = False, quiet: bool,
         on_iteration: Callable[[int], None] | None) -> TrainResult:  # fmt: skip
    """The training loop shared by `train` and `resume`, on `ds` (`left_out`: the ids of the
    train split left out for editorial marks; `cue_facts`: what --cues did to the images,
    {} without it). `replace`: empty the run folder first
    (`--force`). Only the chief writes (cxraug.gan.cluster); every worker steps."""
    chief = is_chief(strategy)
    if chief:
        # a process killed while writing (SIGKILL, power cut) leaves hidden temp files of up
        # to a checkpoint's size; nothing else writes this run's folders now (we hold its
        # lock), so they are garbage
        stale = [p for d in (run.checkpoints_dir, run.path, run.samples_dir)
                 for p in remove_stale_temps(d)]  # fmt: skip
        if stale and not quiet:
            err.print(f"removed {len(stale)} temp file(s) left by an interrupted write in "
                      f"{run.path}", highlight=False)  # fmt: skip
    auto = cfg.mixed_precision == "auto"
    state = build_state(cfg, strategy)  # resolves "auto" precision, once: state.cfg is final
    cfg = state.cfg  # config.json and the checkpoints record bf16 or none
    # Workers started with other options, another dataset or another resolved precision
    # would run different graphs and hang or diverge: refuse before anything is written.
    if not same_on_all_workers(strategy, f"{cfg.to_json()} {len(ds)} {run.name} "
                               f"{ckpt.sha256 if ckpt is not None else ''}"):  # fmt: skip
        raise InputError("the workers disagree on the run: start every worker with the same "
                         "command and options (and an explicit --mixed-precision where the "
                         "hosts differ), the same dataset and the same run folder")
    if ckpt is not None:
        restore(state, ckpt)
    if (slow := precision_warning(cfg.mixed_precision)) is not None:
        warn(slow)
    labels, per_cell = training_labels(ds, cfg.sources)  # cells in a source-conditioned run
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
    if not quiet and (note := left_out_note(ds, left_out, cfg.include_marked, run)):
        err.print(note, highlight=False, soft_wrap=True)
    for note in (cells_note(per_cell, cfg.sources), cues_note(cue_facts)):
        if not quiet and note:
            err.print(note, highlight=False, soft_wrap=True)
    # Scores and sample grids run G locally (no collectives): the chief alone computes them.
    scorer = _make_scorer(cfg, ds) if cfg.score_samples > 0 and chief else None
    images, labels = resident_dataset(ds.images, labels)
    del ds  # the tf.Variables hold the only copy we need (~0.4 GB at 2,150 x 224 px)
    step = make_step(state, images, labels)
    if not quiet:
        how = ""
        if auto:  # say why, so a surprising choice can be overridden
            native = cfg.mixed_precision == "bf16"
            how = f" (auto: {'native' if native else 'no native'} bf16 matmuls here; " \
                  f"--mixed-precision {'none' if native else 'bf16'} to change)"
        err.print(f"train {run.path}: iterations {state.iteration} -> {cfg.iterations}, batch "
                  f"{cfg.batch_size}, precision {_PRECISION[cfg.mixed_precision]}{how}, XLA "
                  f"{xla_scope(cfg, state.strategy)}{describe(strategy)}", highlight=False,
                  soft_wrap=True)  # fmt: skip
    log = RunLog(run, cfg, resume_from=state.iteration) if chief else None
    scores = ScoreLog(run, resume_from=state.iteration) if scorer is not None else None
    wall0 = float(log.rows[-1]["wall_s"]) if log is not None and log.rows else 0.0
    t0 = time.perf_counter()
    last_ckpt = ckpt.path if ckpt is not None else None
    metrics: dict[str, float] = {}
    info = text_column("{task.fields[info]}")
    try:
        with _StopFlag() as stop, progress(info, disable=quiet) as bar:
            task = bar.add_task("train", total=cfg.iterations, completed=state.iteration, info="")
            if state.iteration == 0 and log is not None:
                log.sample(state.sampler, 0)
            while state.iteration < cfg.iterations:
                sigma = cfg.noise_sigma(state.iteration)
                ts = time.perf_counter()
                metrics = step(sigma, sigma > 0)
                dt = time.perf_counter() - ts
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise NumericError(
                        f"non-finite loss at iteration {state.iteration + 1} "
                        f"(d_loss={metrics['d_loss']}, g_loss={metrics['g_loss']}); stopped. "
                        f"Last good checkpoint: {last_ckpt or 'none'}. Lower --lr, check the "
                        "dataset for NaN pixels, or resume from that checkpoint"
                    )
                state.iteration += 1
                it = state.iteration
                if log is not None:
                    log.record(it, metrics, 1.0 / dt, wall0 + time.perf_counter() - t0)
                bar.update(task, completed=it, info=f"D {metrics['d_loss']:.3f} "
                           f"G {metrics['g_loss']:.3f} {1.0 / dt:.2f} it/s")  # fmt: skip
                if it % cfg.sample_interval == 0 and log is not None:
                    log.sample(state.sampler, it)
                if it % cfg.checkpoint_interval == 0 or it == cfg.iterations:
                    last_ckpt = _checkpoint(state, run, dataset_sha256, chief)
                    if scorer is not None and scores is not None and log is not None:
                        _score(state, scorer, scores, log, run, last_ckpt)
                if on_iteration is not None:
                    on_iteration(it)
                # a signal to any worker stops all of them at the same iteration
                if any_worker(strategy, stop.signum is not None):
                    if last_ckpt is None or checkpoint_iteration(last_ckpt) != it:
                        last_ckpt = _checkpoint(state, run, dataset_sha256, chief)
                    raise TrainingInterrupted(
                        f"training interrupted at iteration {it}; checkpoint saved to "
                        f"{last_ckpt}. Continue with `cxraug train --resume {run.name}`"
                    )
            if last_ckpt is None or checkpoint_iteration(last_ckpt) != state.iteration:
                last_ckpt = _checkpoint(state, run, dataset_sha256, chief)
                if scorer is not None and scores is not None and log is not None:
                    _score(state, scorer, scores, log, run, last_ckpt)
    finally:
        if log is not None:
            if log.rows:
                log.plot()
            log.close()
    return TrainResult(run.path, state.iteration, last_ckpt, metrics,
                       time.perf_counter() - t0, cfg, len(left_out))  # fmt: skip


_PRECISION = {"none": "fp32", "bf16": "bf16 (mixed: fp32 weights)",
              "fp16": "fp16 (mixed: fp32 weights, loss scaling)"}  # fmt: skip


def _make_scorer(cfg: TrainConfig, ds: Dataset) -> Scorer:
    """Scores the class with the fewest training images (the one `generate` grows); in a
    source-conditioned run its samples come from the class's observed cells, in proportion."""
    label = minority_class(ds.labels, cfg.num_classes)
    sub = ds.images[ds.labels == label]
    ids = [str(i) for i in ds.ids[ds.labels == label]]
    cells = None
    if cfg.sources:
        cells = apportion(dataset_cells(ds, cfg.sources)[ds.labels == label], cfg.score_samples)
    return Scorer(sub, ids, label, cfg.score_samples, cfg.latent_dim, cfg.seed,
                  extractor=SCORE_EXTRACTOR(), cells=cells)  # fmt: skip


#: Feature extractor for checkpoint scores, as a factory so tests can swap in a tiny one;
#: returning None means the fixed-seed random Inception-v3 (cxraug.gan.scoring).
SCORE_EXTRACTOR: Callable[[], Any] = lambda: None  # noqa: E731


def _score(state: Any, scorer: Scorer, scores: ScoreLog, log: RunLog, run: RunDir,
           ckpt: Path) -> None:  # fmt: skip
    """Score the checkpoint just written; move checkpoints/best if it is the best so far."""
    s = scorer(state.sampler, state.iteration, ckpt.name)
    best = scores.add(s)
    mark_best(run, run.checkpoints_dir / best.checkpoint,
              {**asdict(best), "eligible": best.eligible})  # fmt: skip
    log.scalars(state.iteration, {"score/kid": s.kid, "score/kept": s.kept,
                                  "score/memorised": s.memorised, "score/precision": s.precision,
                                  "score/recall": s.recall, "score/c2st": s.c2st})  # fmt: skip


def _checkpoint(state: Any, run: RunDir, dataset_sha256: str, write: bool = True) -> Path:
    """Check and save the state; every worker reads the variables, only the chief writes."""
    if not all_finite(state):
        raise NumericError(f"weights became non-finite at iteration {state.iteration}; the "
                           "last good checkpoint was kept. Lower --lr and resume")  # fmt: skip
    return save_checkpoint(state, run, state.cfg.keep_checkpoints,
                           dataset_sha256=dataset_sha256, write=write)  # fmt: skip
