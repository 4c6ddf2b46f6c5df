"""`cxraug filter`: keep or reject every synthetic image, with a reason (cxraug.filter)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxraug.cli.app import command, json_option, workspace_option
from cxraug.filter import FilterConfig


@command("filter", FilterConfig)
def filter_command(
    cfg: FilterConfig,
    workspace: Path = workspace_option(),
    folder: Path | None = typer.Option(
        None, help="Judge a folder of PNGs instead of the manifest rows (report only)."
    ),
    report: Path | None = typer.Option(None, help="With --folder: write a CSV report here."),
    move_rejected: bool = typer.Option(
        False, "--move-rejected", help="Move rejected PNGs to synthetic/CLASS/rejected/ (and "
        "kept ones back) and update their manifest paths."
    ),  # fmt: skip
    sheet: Path | None = typer.Option(
        None, help="Contact sheet PNG (default synthetic/CLASS-filter-sheet.png; with --folder "
        "only when given). The resolved config is saved beside it as NAME.config.json."
    ),  # fmt: skip
    json_out: bool = json_option(),
    force: bool = typer.Option(False, "--force",
                               help="Overwrite an existing --sheet/--report file."),  # fmt: skip
) -> None:
    """Keep or reject every synthetic image, with a reason (docs/filter.md): memorised copies
    of real images, bad quality, near-duplicates. Exit 0 even when images are rejected."""
    from cxraug.core.ui import out
    from cxraug.core.workspace import Workspace
    from cxraug.filter import filter_folder, filter_synthetic, summary_table

    ws = Workspace.at(workspace)
    if folder is not None:
        if move_rejected:
            raise typer.BadParameter("--move-rejected works on manifest rows, not with --folder")
        result = filter_folder(ws, folder, cfg, report=report, sheet=sheet, force=force)
    else:
        if report is not None:
            raise typer.BadParameter("--report goes with --folder; manifest rows get their "
                                     "reasons in manifest.csv")  # fmt: skip
        result = filter_synthetic(ws, cfg, move_rejected=move_rejected, sheet=sheet, force=force)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        out.print(summary_table(result))
