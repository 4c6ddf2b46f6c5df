"""`cxraug train`: start a run or resume one (cxraug.train)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cxraug.cli.app import command, given, json_option, workspace_option
from cxraug.core.names import RUN_NAME_MAX
from cxraug.train import DEFAULT_RECIPE, RECIPES, TrainConfig, recipe_config

MLP_ONLY = {"g_widths", "d_widths", "bn_momentum", "dropout"}

#: --help's epilog: which recipe is the default and where its measurements are (the ablation
#: table has one home, bench/RESULTS.md "Ablation"; README.md and docs/training.md point to it)
EPILOG = (
    f"[b]Recipes[/b]: {DEFAULT_RECIPE} (the default: the best measured in ~30 min), paper "
    "(the paper's exact setup: --recipe paper; every option not given takes Table 2's value) "
    "and cascade (opt-in: G at 56 px on 224 px data, then a learnt 4x enlargement; ~70 min here; "
    'docs/training.md, "The resolution cascade"). Which recipe, '
    'measured: bench/RESULTS.md, "Ablation" (every arm\'s kept share, FID against the '
    "real-vs-real baseline and precision/recall, with the sample grids and the seeds); what "
    'each part of the recipe does: docs/training.md, "Recipes".'
)


def _paper() -> str:
    """The paper recipe's headline values, read from its config (never restated by hand)."""
    p = recipe_config("paper")
    return (f"Table 2: {p.arch} G/D, batch {p.batch_size}, Adam {p.lr:g}/{p.beta_1:g}, "
            f"{p.iterations:,} iterations")


def _recipe_then_given(options: dict[str, Any], kwargs: dict[str, Any]) -> TrainConfig:
    """The config a new run trains: --recipe's values, then the options given. Built before
    the command runs, so `--recipe cascade --enlarge 2` is checked with the cascade's
    --refine, not the default recipe's 0 (it was refused until 2026-12-06)."""
    return recipe_config(kwargs["recipe"], **options)


@command("train", TrainConfig, epilog=EPILOG, build=_recipe_then_given)
def train_command(
    ctx: typer.Context,
    cfg: TrainConfig,
    workspace: Path = workspace_option(),
    recipe: str = typer.Option(DEFAULT_RECIPE, help=f"{' | '.join(RECIPES)}. The defaults "
        f"shown are recipe {DEFAULT_RECIPE}'s (the best measured in ~30 min, docs/training.md); "
        f"with --recipe paper every option not given takes the paper's value "
        f"({_paper()})."),  # fmt: skip
    name: str | None = typer.Option(None, help="Run name: WORKSPACE/runs/NAME "
                                    "(letters, digits, '.', '_', '-'; at most "
                                    f"{RUN_NAME_MAX}) "
                                    "\\[default: a timestamp]."),  # fmt: skip
    resume: str | None = typer.Option(None, metavar="RUN", help="Continue RUN (a name under "
        "runs/ or that folder's path) from its latest checkpoint: same iteration, optimizer and "
        "RNG state. Only --iterations, the intervals, --strategy and --refine may change "
        "(--refine N on a finished run trains its refiner alone)."),  # fmt: skip
    force: bool = typer.Option(False, "--force", help="Replace an existing run folder."),
    image_size: int | None = typer.Option(None, help="Must equal the dataset's size "
                                          "\\[default: the dataset's]."),  # fmt: skip
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_out: bool = json_option(),
) -> None:
    """Train a CGAN (--recipe conv, or the paper's: --recipe paper) on
    WORKSPACE/processed/dataset.npz (train split). 'Epochs' are ITERATIONS (one random batch
    each). Writes runs/NAME/: config.json, training_set.json, log.csv, tb/, samples/,
    loss.png, checkpoints/ (with the pointers latest and, when checkpoints are scored,
    best), scores.csv and scores.png (with --score-samples > 0). Ctrl-C saves a checkpoint
    (exit 130); resume with --resume NAME. Exit 5 on NaN/Inf losses (last good checkpoint
    kept)."""
    from cxraug.core.ui import out, warn
    from cxraug.core.workspace import Workspace
    from cxraug.train import resume as resume_run
    from cxraug.train import train

    ws = Workspace.at(workspace)
    if resume is not None:  # only the options given on the command line may change
        result = resume_run(ws, resume, quiet=quiet, **given(ctx, TrainConfig))
    else:
        options = given(ctx, TrainConfig)
        if unused := sorted(set(options) & MLP_ONLY if cfg.arch == "conv" else set()):
            warn(f"{', '.join('--' + u.replace('_', '-') for u in unused)} only apply to "
                 "--arch mlp (the paper's networks): ignored by this conv run")  # fmt: skip
        result = train(ws, cfg, name=name, force=force, image_size=image_size, quiet=quiet)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        m = result.metrics
        losses = f" d_loss {m['d_loss']:.4f} g_loss {m['g_loss']:.4f}" if m else ""
        refiner = f"; refiner {result.refiner}" if result.refiner else ""
        out.print(f"{result.run_dir}: iteration {result.iteration}{losses}; "
                  f"checkpoint {result.checkpoint}{refiner}", highlight=False, soft_wrap=True)
