"""The `cxraug` command line: typer app only. Each command parses options, resolves paths,
calls one library function and prints its result. No logic lives here.

Exit codes are defined and documented in `cxraug.errors` (and README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from cxraug import __version__
from cxraug.errors import EXIT_INTERRUPTED, CxrError
from cxraug.ui import err

app = typer.Typer(
    name="cxraug",
    help="Grow the scarce class of a chest X-ray dataset with a conditional GAN "
    "(Mohammed & Ali 2022): collect -> preprocess -> train -> generate -> filter -> fid.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

F = TypeVar("F", bound=Callable[..., Any])

WORKSPACE_HELP = "Workspace folder holding manifest.csv, processed/, runs/ and synthetic/."


def workspace_option() -> Any:
    return typer.Option(Path("."), "--workspace", "-w", help=WORKSPACE_HELP, show_default=True)


def handle_errors(fn: F) -> F:
    """Turn library errors into a one-paragraph message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CxrError as e:
            err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/bold red]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cxraug {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """cxraug: CGAN augmentation for chest X-rays. Exit codes: 0 ok, 1 some rows failed,
    2 usage, 3 bad input, 4 missing resource, 5 numeric failure, 130 interrupted."""


# ---- collect ------------------------------------------------------------------------------

# ---- preprocess ---------------------------------------------------------------------------

# ---- train --------------------------------------------------------------------------------

# ---- generate -----------------------------------------------------------------------------

# ---- filter -------------------------------------------------------------------------------

# ---- fid ----------------------------------------------------------------------------------


def main() -> None:
    app()
