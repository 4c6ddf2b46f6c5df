"""`cxraug generate`: synthetic PNGs + manifest rows from a trained run (cxraug.generate)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxraug.cli.app import command, json_option, workspace_option
from cxraug.generate import GenerateConfig


@command("generate", GenerateConfig)
def generate_command(
    cfg: GenerateConfig,
    workspace: Path = workspace_option(),
    json_out: bool = json_option(),
) -> None:
    """Write synthetic PNGs of one class to WORKSPACE/synthetic/CLASS/ from a trained run and
    add one manifest row per image (source synthetic, split train)."""
    from cxraug.core.ui import out
    from cxraug.core.workspace import Workspace
    from cxraug.generate import generate

    if cfg.n is None and not cfg.balance:
        raise typer.BadParameter("give -n COUNT or --balance", param_hint="-n")
    result = generate(Workspace.at(workspace), cfg)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        out.print(result.message, highlight=False, soft_wrap=True)
