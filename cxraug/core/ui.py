"""Console helpers: results on stdout, progress and logs on stderr (so `--json` stays clean)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console()  # results
err = Console(stderr=True)  # progress bars, warnings, errors


def progress(*extra_columns: TextColumn, disable: bool = False) -> Progress:
    """A rich progress bar on stderr: description, bar, n/N, elapsed, ETA (+ extra columns)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=err,
        disable=disable,
        transient=False,
    )


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
