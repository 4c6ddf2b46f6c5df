"""`cxraug fid`: FID, KID and precision/recall of two image sets (cxraug.fid)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxraug.cli.app import command, json_option, workspace_option
from cxraug.fid import FidConfig


@command("fid", FidConfig)
def fid_command(
    cfg: FidConfig,
    real: str = typer.Argument(
        ..., help="REAL set: a folder of images (recursive) or a manifest selection such as "
        "manifest:split=test,label=covid (keys: split, label|class, synthetic, run, status: "
        "ok (default), rejected or any)."
    ),  # fmt: skip
    fake: str = typer.Argument(
        ..., help="FAKE set, same syntax, e.g. a synthetic/ folder or "
        "manifest:synthetic=true,label=covid."
    ),  # fmt: skip
    workspace: Path = workspace_option(),
    weights: Path | None = typer.Option(
        None, help="Inception-v3 notop .h5 weights file (default: the Keras cache)."
    ),
    cache_dir: Path | None = typer.Option(
        None, help="Feature cache folder (default: WORKSPACE/.cache/fid)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    json_out: bool = json_option("report"),
    out: Path | None = typer.Option(None, help="Also save the report (with its config) as JSON."),
    force: bool = typer.Option(
        False, "--force", help="Overwrite --out, --spectrum and --sheet if they exist."
    ),
    spectrum: Path | None = typer.Option(
        None, help="Write the spectrum plot (PNG) here (default with --out: OUT's folder, "
        "named <OUT stem>.spectrum.png; without either: no plot)."
    ),  # fmt: skip
    sheet: Path | None = typer.Option(
        None, help="Write a PNG of --sheet-n seeded REAL images (top) and FAKE ones (bottom)."
    ),
) -> None:
    """FID, KID and precision/recall of FAKE against REAL, with a real-vs-real baseline,
    plus pixel judges: a classifier two-sample test per size and a spectrum check
    (docs/fid.md). Results on stdout, progress and warnings on stderr."""
    from cxraug.core.ui import out as console
    from cxraug.fid import PixelJudges, judges_table, report_table, run_fid

    report = run_fid(real, fake, cfg, workspace=workspace, weights=weights,
                     cache_dir=cache_dir, use_cache=not no_cache, out=out, force=force,
                     spectrum=spectrum, sheet=sheet)  # fmt: skip
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(report_table(report))
        console.print(judges_table(PixelJudges(report.c2st, report.spectrum,
                                               report.c2st_groups)))  # fmt: skip
