"""`cxraug collect`: record local dataset copies in the manifest (cxraug.collect)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxraug.cli.app import command, json_option, workspace_option
from cxraug.collect import CollectConfig


@command("collect", CollectConfig)
def collect_command(
    cfg: CollectConfig,
    sources: list[str] = typer.Argument(
        ..., metavar="SOURCE...", show_default=False,
        help="[NAME=]cohen:PATH (ieee8023/covid-chestxray-dataset checkout), "
        "[NAME=]kermany:PATH (Kaggle chest_xray: .../NORMAL, .../PNEUMONIA), "
        "[NAME=]folder:PATH (sub-folders covid/ and normal/) or [NAME=]csv:FILE (a CSV naming "
        "image files, labels and patients: see the --csv-* options; NAME defaults to the "
        "CSV's folder name). See docs/datasets.md.",
    ),  # fmt: skip
    workspace: Path = workspace_option(),
    json_out: bool = json_option("summary"),
) -> None:
    """Record the images of local dataset copies in WORKSPACE/manifest.csv (nothing is copied):
    check every file, mark exclusions, duplicates and unreadable files, and split train/test
    by patient. Exit 0 when every file is usable, 1 when some are unusable, 3 on bad input."""
    from cxraug.collect import collect, summary_lines, summary_tables
    from cxraug.core.errors import EXIT_PARTIAL
    from cxraug.core.ui import err, out
    from cxraug.core.workspace import Workspace

    result = collect(Workspace.at(workspace), sources, cfg)
    show = err if json_out else out  # --json keeps stdout machine-readable
    for table in summary_tables(result):
        show.print(table)
    for line in summary_lines(result):
        show.print(line, highlight=False, markup=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    if result.n_errors:
        raise typer.Exit(EXIT_PARTIAL)
