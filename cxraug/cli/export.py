"""`cxraug export OUT`: the manifest's images as {split}/{class}/*.png plus index.csv
(cxraug.export)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxraug.cli.app import command, json_option, workspace_option
from cxraug.export import ExportConfig


@command("export", ExportConfig)
def export_command(
    cfg: ExportConfig,
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Folder to create (new or empty, "
                                   "or an earlier export with --force)."),  # fmt: skip
    workspace: Path = workspace_option(),
    json_out: bool = json_option("summary"),
) -> None:
    """Write the manifest's images as OUT/SPLIT/CLASS/*.png with OUT/index.csv and the config:
    a training set that keras.utils.image_dataset_from_directory and torchvision's ImageFolder
    read. Real images get preprocess's crop and resize (8- or 16-bit PNG); synthetic ones are
    chosen by status. Exit 0 ok, 1 some images failed, 3 bad input (e.g. OUT holds other
    files)."""
    from cxraug.core.errors import EXIT_PARTIAL, first
    from cxraug.core.ui import err, out, tagged
    from cxraug.core.workspace import Workspace
    from cxraug.export import export

    res = export(Workspace.at(workspace), out_dir, cfg)
    show = err if json_out else out
    for split, per_class in res.counts.items():
        counts = ", ".join(f"{c} {n}" for c, n in per_class.items())
        show.print(f"{res.out / split}: {counts}", highlight=False)
    show.print(f"{res.written} written, {res.copied} copied, {res.linked} hard-linked; index: "
               f"{res.out / 'index.csv'}", highlight=False)  # fmt: skip
    shown, more = first(res.errors)
    for rid, reason in shown:
        err.print(tagged("failed:", "yellow", f"{rid}: {reason}"), highlight=False, soft_wrap=True)
    if more:
        err.print(f"{more} (see export-config.json)")
    if json_out:
        typer.echo(json.dumps(res.to_json(), indent=2))
    if res.errors:
        raise typer.Exit(EXIT_PARTIAL)
