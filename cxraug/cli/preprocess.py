"""`cxraug preprocess`: the manifest's images -> processed/dataset.npz (cxraug.preprocess), or
suggested crop boxes for review (cxraug.preprocess.suggest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cxraug.cli.app import command, json_option, workspace_option
from cxraug.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from rich.console import Console

    from cxraug.preprocess import PreprocessResult


@command("preprocess", PreprocessConfig)
def preprocess_command(
    cfg: PreprocessConfig,
    workspace: Path = workspace_option(),
    crop_boxes: Path | None = typer.Option(
        None, "--crop-boxes", show_default=False,
        help="CSV with id (or path),x0,y0,x1,y1 in original pixels (x1/y1 exclusive); valid "
        "boxes are saved into the manifest first. See docs/preprocess.md.",
    ),  # fmt: skip
    suggest_path: Path | None = typer.Option(
        None, "--suggest-crops", show_default=False,
        help="Do not build the dataset: write an automatic chest box per image to this CSV "
        "for review (then pass it back with --crop-boxes).",
    ),  # fmt: skip
    contact_sheet: Path | None = typer.Option(
        None, "--contact-sheet", show_default=False,
        help="Also write a PNG grid of thumbnails with each crop box drawn and the id printed "
        "(NAME-001.png, ... beyond 200 images).",
    ),  # fmt: skip
    force: bool = typer.Option(False, "--force", help="Rebuild the dataset even when it is up "
                               "to date or was built with other settings, read the rows an "
                               "earlier preprocess marked error again (those that now read "
                               "become ok), and overwrite an existing --suggest-crops or "
                               "--contact-sheet file."),  # fmt: skip
    json_out: bool = json_option("summary"),
) -> None:
    """Turn the manifest's usable real images into WORKSPACE/processed/dataset.npz: decode,
    crop, resize to SIZE x SIZE (INTER_AREA when both sides shrink, else INTER_CUBIC), scale to
    [-1, 1]. Unreadable images become error rows. Exit 0 ok, 1 some images failed, 3 bad input
    (e.g. crop-boxes rows)."""
    from cxraug.core.errors import EXIT_PARTIAL
    from cxraug.core.ui import err, out
    from cxraug.core.workspace import Workspace
    from cxraug.preprocess import preprocess, suggest

    if suggest_path is not None and crop_boxes is not None:
        raise typer.BadParameter("use either --suggest-crops or --crop-boxes, not both")
    ws = Workspace.at(workspace)
    show = err if json_out else out  # --json keeps stdout machine-readable
    if suggest_path is not None:
        sres = suggest(ws, cfg, suggest_path, contact_sheet=contact_sheet, force=force)
        show.print(f"wrote {sres.n_boxes} suggested boxes to {sres.boxes_path} "
                   f"({sres.n_fallback} fall back to the full image); review them, then run "
                   f"`cxraug preprocess --crop-boxes {sres.boxes_path}`",
                   highlight=False)  # fmt: skip
        errors, sheets, payload = sres.errors, sres.contact_sheets, sres.to_json()
    else:
        res = preprocess(ws, cfg, crop_boxes, force=force, contact_sheet=contact_sheet)
        _print_dataset(show, res, ws.manifest_path)
        errors, sheets, payload = res.errors, res.contact_sheets, res.to_json()
    for sheet in sheets:
        show.print(f"contact sheet: {sheet}", highlight=False)
    _print_failures(errors)
    if json_out:
        typer.echo(json.dumps(payload, indent=2))
    if errors:
        raise typer.Exit(EXIT_PARTIAL)


def _print_dataset(show: Console, res: PreprocessResult, manifest_path: Path) -> None:
    """What preprocess built (or found up to date), and the images with editorial marks."""
    from cxraug.core.manifest import MARK_REASONS
    from cxraug.preprocess import summary_table

    if res.crop_boxes_applied:
        show.print(f"saved {res.crop_boxes_applied} crop box(es) into {manifest_path}")
    if res.up_to_date:
        show.print(f"{res.dataset_path} is up to date ({res.n_images} images, same "
                   "settings and manifest); nothing to do", highlight=False)  # fmt: skip
    else:
        show.print(summary_table(res))
        show.print(f"{res.n_images} images in {res.seconds:.1f} s ({res.images_per_s:.1f} "
                   f"images/s, {res.reduced} JPEGs DCT-reduced) -> {res.dataset_path} "
                   f"(settings: {res.config_path.name})", highlight=False)  # fmt: skip
    if res.marked:
        found = ", ".join(f"{k} {res.marks[k]}" for k in MARK_REASONS if res.marks.get(k))
        show.print(f"{res.marked} images with editorial marks ({found}): `cxraug train` "
                   "leaves them out (--include-marked keeps them); see the marks column "
                   f"of {manifest_path}", highlight=False, soft_wrap=True)  # fmt: skip


def _print_failures(errors: list[tuple[str, str]]) -> None:
    """The images that could not be read (id: reason), the first MAX_LISTED of them."""
    from cxraug.core.errors import first
    from cxraug.core.ui import err, one_line, tagged

    shown, more = first(errors)
    for rid, reason in shown:
        err.print(tagged("failed:", "yellow", f"{one_line(rid)}: {reason}"), highlight=False,
                  soft_wrap=True)  # fmt: skip
    if more:
        err.print(f"{more} (see the manifest's reason column)")
