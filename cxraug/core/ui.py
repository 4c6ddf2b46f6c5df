"""Console helpers: results on stdout, progress and logs on stderr (so `--json` stays clean).

Both consoles print with rich markup OFF: messages carry file names, reasons, manifest cells
and run names, and with markup on a `[word]` in a file name would vanish and a `[/x]` would
raise MarkupError. Styling is applied as data instead (`tagged`, rich `Text`), never parsed
out of a string, so every user-derived string is shown verbatim wherever it is printed.

Both consoles also escape control characters in everything they print (`printable`, applied
to the text of every segment just before it is written, after rich has laid it out and before
it adds its own colour codes): a file named with ESC[2J or ESC]0;title BEL, a lone CR, a
backspace, a C1 control or a bidi override shows as `\x1b[2J`, `\r`, `\u202e` instead of
clearing the screen, moving the cursor or reordering the line. Line breaks and tabs stay.
(`--json` output is escaped by json.dumps.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.segment import Segment
from rich.text import Text

#: What a terminal acts on instead of showing: C0 controls but newline and tab, DEL, C1
#: controls (0x9b is a one-byte CSI), and the Unicode marks that reorder or break a line
#: (bidi embeddings/overrides/isolates, line and paragraph separators).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\x1b": "\\x1b"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(text: str) -> str:
    """`text` with every control character (see _CONTROL) written as an escape: \\x1b, \\r."""
    return _CONTROL.sub(_escape, text)


def one_line(text: str) -> str:
    """`printable`, and newlines and tabs escaped too: for a name inside a line of a list."""
    return printable(text).replace("\n", "\\n").replace("\t", "\\t")


class _SafeConsole(Console):
    """A Console that escapes control characters in the text it writes (module docstring).
    Rich's own cursor and colour codes are untouched: they are control segments, or added
    from the segment's style after this, when the buffer is rendered."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        # before rich's Text silently drops CR, BS, BEL, VT and FF: show them as escapes
        return super().render_str(printable(text), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            seg if seg.control else Segment(printable(seg.text), seg.style) for seg in buffer
        )


out = _SafeConsole(markup=False)  # results
err = _SafeConsole(stderr=True, markup=False)  # progress bars, warnings, errors


def tagged(label: str, style: str, message: str = "") -> Text:
    """'LABEL message' with LABEL in `style` and MESSAGE verbatim (never read as markup; its
    control characters escaped)."""
    return Text.assemble((label, style), " " if message else "", printable(message))


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
