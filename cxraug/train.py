"""`cxraug train`: train the CGAN on processed/dataset.npz (the default recipe, conv, or a
named one such as the paper's: cxraug.gan.config).

Each "epoch" of the paper is one ITERATION: one batch drawn at random with replacement.
`train(ws, cfg)` starts a run (`cfg` defaults to `TrainConfig()`, the default recipe: the
same model `cxraug train` trains with no options); `resume(ws, run)` (`--resume`) restores
weights, optimizer slots, RNG state and iteration, so that an interrupted and resumed run
follows the same trajectory as an uninterrupted one. Both check their inputs here, then run
the loop of cxraug.gan.loop (losses checked every iteration, logs, sample grids, checkpoints
and their scores; SIGINT/SIGTERM save a checkpoint, exit 130).

`--strategy multiworker` (cxraug.gan.cluster): every worker runs the loop; only the chief
writes the run folder (config.json, logs, samples, scores, checkpoints, pointers, the
`--force` removal). Input checks and stop signals are agreed between workers before anyone
acts, so that no worker is left waiting alone in a collective.

Importing this module does not import TensorFlow (the CLI imports it for --help): the loop
is imported when a run starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields
from typing import Any

from cxraug.core.dataset import Dataset, load_dataset
from cxraug.core.errors import InputError, vassert
from cxraug.core.fsutil import sha256_file
from cxraug.core.ui import err, warn
from cxraug.core.workspace import RunDir, Workspace
from cxraug.gan.cells import dataset_cells, run_sources, with_sources
from cxraug.gan.checkpoint import Checkpoint, find_latest, read_checkpoint
from cxraug.gan.cluster import agreed, chief_by_environment, make_strategy
from cxraug.gan.config import (
    DEFAULT_RECIPE,
    RECIPES,
    RESUMABLE_CHANGES,
    TrainConfig,
    recipe_config,
)
from cxraug.gan.result import TrainingInterrupted, TrainResult
from cxraug.gan.trainset import model_side, shrunk, training_set

__all__ = ["DEFAULT_RECIPE", "RECIPES", "RESUMABLE_CHANGES", "TrainConfig", "TrainResult",
           "TrainingInterrupted", "recipe_config", "resume", "train"]  # fmt: skip


def train(
    ws: Workspace,
    cfg: TrainConfig = TrainConfig(),  # the default recipe (frozen: safe to share)
    *,
    name: str | None = None,
    force: bool = False,
    image_size: int | None = None,
    quiet: bool = False,
    on_iteration: Callable[[int], None] | None = None,
    extractor: Any = None,
) -> TrainResult:
    """Start run NAME (default: a timestamp) under WORKSPACE/runs with `cfg` (by default the
    default recipe, as `cxraug train` with no options). The model's image_size and
    num_classes are the dataset's (the side divided by cfg.enlarge); `image_size`, if given,
    must equal the dataset's side. `extractor`: the feature extractor of the checkpoint
    scores (None: cxraug.gan.scoring's fixed-seed random Inception-v3; tests pass a tiny
    one)."""
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
            model_side(ds.image_size, cfg.enlarge)  # a side --enlarge does not divide: exit 3
            if cfg.condition == "class,source":
                with_sources(ds, ws.load_manifest())
            return ds, left_out, cue_facts, exists

        ds, left_out, cue_facts, exists = agreed(strategy, check)
        cfg = cfg.replace(image_size=model_side(ds.image_size, cfg.enlarge),
                          num_classes=len(ds.classes),
                          sources=run_sources(ds) if ds.sources is not None else ())
        return _run(run, cfg, ds, None, strategy, sha256_file(ws.dataset_path), left_out,
                    cue_facts, replace=exists, quiet=quiet, on_iteration=on_iteration,
                    extractor=extractor)  # fmt: skip


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
    extractor: Any = None,
    **changes: Any,
) -> TrainResult:
    """Continue RUN (a name under runs/ or a run folder) from its latest checkpoint: same
    iteration, optimizer and RNG state. `changes` are TrainConfig fields: only those in
    RESUMABLE_CHANGES (iterations, the intervals, the strategy) may differ from the run's.
    In a multi-worker run every worker reads the chief's checkpoint: a shared filesystem.
    `extractor`: as in `train`."""
    run_dir = ws.find_run(run)
    with _run_lock(run_dir, "cxraug train --resume"):  # a second trainer: exit 7
        return _resume(ws, run_dir, quiet=quiet, on_iteration=on_iteration,
                       extractor=extractor, **changes)  # fmt: skip


def _resume(ws: Workspace, run_dir: RunDir, *, quiet: bool,
            on_iteration: Callable[[int], None] | None, extractor: Any,
            **changes: Any) -> TrainResult:  # fmt: skip
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
        if cfg.image_size * cfg.enlarge != ds.image_size:
            raise InputError(f"the run was trained on {cfg.image_size * cfg.enlarge} px "
                             f"images, the dataset now holds {ds.image_size} px; resume needs "
                             "the same dataset")  # fmt: skip
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
                on_iteration=on_iteration, extractor=extractor)  # fmt: skip


def _run(run: RunDir, cfg: TrainConfig, ds: Dataset, ckpt: Checkpoint | None, strategy: Any,
         dataset_sha256: str, left_out: list[str], cue_facts: dict[str, Any], *,
         replace: bool = False, quiet: bool, on_iteration: Callable[[int], None] | None,
         extractor: Any) -> TrainResult:  # fmt: skip
    """The loop shared by `train` and `resume` (cxraug.gan.loop.run_training), then, with
    --refine, the refiner's (cxraug.gan.refine) on the same training images: after the GAN,
    so that an interrupted GAN resumes first and a finished run can gain a refiner."""
    # TensorFlow is imported here, where the networks run: `cxraug --help` stays fast
    from cxraug.gan.loop import run_training

    # --enlarge K: G and D see the images shrunk K times; the enlargement, the full ones
    small = ds if cfg.enlarge == 1 else shrunk(ds, cfg.image_size)
    if cfg.enlarge > 1 and not quiet:
        err.print(f"--enlarge {cfg.enlarge}: G and D train on the {ds.image_size} px images "
                  f"shrunk to {cfg.image_size} px", highlight=False, soft_wrap=True)
    result = run_training(run, cfg, small, ckpt, strategy, dataset_sha256, left_out,
                          cue_facts, replace=replace, quiet=quiet, on_iteration=on_iteration,
                          extractor=extractor)  # fmt: skip
    if cfg.refine > 0:  # check_strategy refused --refine in a cluster: one process here
        from cxraug.gan.hardware import resolve_precision
        from cxraug.gan.refine import train_refiner

        if not quiet:
            task = ("blurred crops -> the real crops" if cfg.enlarge == 1 else
                    f"crops shrunk {cfg.enlarge}x and enlarged bilinearly -> the real crops")
            err.print(f"refiner {run.path / 'refiner'}: iterations -> {cfg.refine}, on the "
                      f"same {len(ds)} training images ({task})",
                      highlight=False, soft_wrap=True)  # fmt: skip
        ref = train_refiner(run.path, ds.images, cfg.refine, cfg.seed, dataset_sha256,
                            quiet=quiet, enlarge=cfg.enlarge,
                            precision=resolve_precision(cfg).mixed_precision)  # fmt: skip
        result.refiner, result.refiner_iteration = ref.path, ref.iteration
        result.seconds += ref.seconds
    return result
