"""`cxraug evaluate`: does the augmentation help a classifier? (cxraug.evaluate)"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxraug.cli.app import command, json_option, workspace_option
from cxraug.evaluate import EvaluateConfig


@command("evaluate", EvaluateConfig)
def evaluate_command(
    cfg: EvaluateConfig,
    workspace: Path = workspace_option(),
    name: str = typer.Option("default", help="Save under WORKSPACE/evaluations/NAME/."),
    json_out: bool = json_option("results"),
    force: bool = typer.Option(False, "--force", help="Overwrite evaluations/NAME/."),
) -> None:
    """Score whether the synthetic images help a COVID-vs-normal classifier
    (docs/evaluate.md). Train the classifier under several arms (real only, oversampling,
    classical augmentation, + synthetic, + both, + count-matched real duplicates; opt-in:
    synthetic ratios, selected synthetic images, pre-training on synthetic images, `cells`:
    the missing class x source cells of a --condition class,source run) with the
    same budget and seeds, and score each on the test split and on every test-only source,
    with CIs over patients, paired differences and a shortcut check; --cues removes source
    cues from every input. Exit 1 when an arm or a test set had to be
    skipped, 3 on bad input."""
    from rich.table import Table

    from cxraug.core.errors import EXIT_PARTIAL
    from cxraug.core.ui import err, out, tagged
    from cxraug.core.workspace import Workspace
    from cxraug.evaluate import evaluate, report_tables

    result = evaluate(Workspace.at(workspace), cfg, name=name, force=force)
    show = err if json_out else out  # --json keeps stdout machine-readable
    for item in report_tables(result):
        show.print(item, highlight=False, soft_wrap=not isinstance(item, Table))
    for line in result.skipped:
        err.print(tagged("skipped:", "yellow", line), highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    if result.skipped:
        raise typer.Exit(EXIT_PARTIAL)
