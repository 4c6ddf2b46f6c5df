"""Console helpers: results on stdout, progress and logs on stderr (so `--json` stays clean).

Both consoles print with rich markup OFF: messages carry file names, reasons, manifest cells
and run names, and with markup on a `[word]` in a file name would vanish and a `[/x]` would
raise MarkupError. Styling is applied as data instead (`tagged`, rich `Text`), never parsed
out of a string, so every user-derived string is shown verbatim wherever it is printed.
"""

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
from rich.text import Text

out = Console(markup=False)  # results
err = Console(stderr=True, markup=False)  # progress bars, warnings, errors


def tagged(label: str, style: str, message: str = "") -> Text:
    """'LABEL message' with LABEL in `style` and MESSAGE verbatim (never read as markup)."""
    return Text.assemble((label, style), " " if message else "", message)


def text_column(template: str, style: str = "") -> TextColumn:
    """A progress column whose text (a task's description or fields) is shown verbatim."""
    return TextColumn(template, style=style, markup=False)


def progress(*extra_columns: TextColumn, disable: bool = False) -> Progress:
    """A rich progress bar on stderr: description, bar, n/N, elapsed, ETA (+ extra columns)."""
    return Progress(
        text_column("{task.description}", "bold"),
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
    err.print(tagged("warning:", "yellow", message), highlight=False)
