"""The one reader of every CSV file cxraug reads, and the writer of every one it writes for
people: the manifest, crop-box files (`--crop-boxes`, `--suggest-crops`), a cohen
`metadata.csv`, a `csv:` source's table, the `filter --report`, an export's `index.csv`. A
run's `log.csv` and `scores.csv` are read here too (their owners write them: numbers only).

Reading: UTF-8 (a spreadsheet's BOM dropped) with line ends left as they are, so a quoted "\\r"
inside a name stays a "\\r" (Python's text mode would turn it into "\\n"); and any `csv.Error`
(a cell longer than the csv module's 131,072-character limit, a quote that never closes) becomes
the caller's InputError naming the file and the row (exit 3), never a traceback.

Writing: cells a spreadsheet would run as a formula get a leading ' (`csv_safe`, read back
without it by `csv_plain`), and a row holding a "\\r" is quoted whole (the csv module quotes a
cell holding "\\n" but not one holding a lone "\\r", which a reader then takes for the end of
the row). What cxraug writes therefore reads back cell for cell.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from cxraug.core.errors import InputError

#: What the csv module reads in one cell (its default `field_size_limit`). cxraug never raises
#: it: a cell this long in a manifest, a crop-box file or a metadata.csv is a mistake (often a
#: quote that never closes and swallows the rest of the file).
CELL_LIMIT = 131_072

#: A cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV
#: injection"): `=HYPERLINK(...)`, `+cmd|...`, `-2+3`, `@SUM(...)`, and a tab or CR before one.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPE = "'"  # what a spreadsheet itself puts before text it must not evaluate
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # -1.5, +2, -3e-4: left as is


def _escaped(cell: str) -> bool:
    """Does the cell as stored carry cxraug's leading ' (one a reader must remove)?"""
    return cell.startswith(_ESCAPE) and cell[1:2] != "" and cell[1] in (*FORMULA_STARTS, _ESCAPE)


def csv_safe(cell: str) -> str:
    """A cell as written to a CSV cxraug produces: text a spreadsheet would evaluate (it starts
    with = + - @ tab or CR, and is not a plain number such as -1.5) gets a leading ', and so
    does text that already starts with ' before one of those or another ', so that
    `csv_plain(csv_safe(x)) == x` for every x."""
    if (cell.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(cell)) or _escaped(cell):
        return _ESCAPE + cell
    return cell


def csv_plain(cell: str) -> str:
    """The text of a cell `csv_safe` wrote: the leading ' it added, and only that, removed."""
    return cell[1:] if _escaped(cell) else cell


# ---- writing ------------------------------------------------------------------------------


def write_rows(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """CSV text of a header and rows, every cell through `csv_safe`, that reads back exactly
    (`dict_reader` + `csv_rows`)."""
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in (header, *rows):
        cells = [csv_safe(str(c)) for c in row]
        (quoted if any("\r" in c for c in cells) else plain).writerow(cells)
    return buf.getvalue()


# ---- reading ------------------------------------------------------------------------------


def read_text(path: Path, exc: type[InputError] = InputError) -> str:
    """The text of a CSV file: UTF-8 (BOM dropped), line ends untouched."""
    try:
        # bytes, not read_text: its newline translation would turn a quoted "\r" into "\n"
        return Path(path).read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise exc(f"{path} is not UTF-8 text ({e}); save it as CSV UTF-8") from e


def _problem(name: str, row: int, e: csv.Error) -> str:
    """What to tell the user about a csv.Error at spreadsheet row `row` of file `name`."""
    if "field larger than field limit" in str(e):
        return (f"{name} row {row}: a cell is longer than {CELL_LIMIT:,} characters, the most a "
                "CSV cell may hold here; shorten it (a long note?), or close the quote that "
                "runs on from there to the end of the file")  # fmt: skip
    return f"{name} row {row}: not valid CSV ({e}); fix that row (an unbalanced quote?)"


def dict_reader(text: str, name: str, exc: type[InputError] = InputError) -> csv.DictReader[str]:
    """A DictReader over `text` whose header has been read (a bad header: `exc`, row 1)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames  # reads the header now, inside the try
    except csv.Error as e:
        raise exc(_problem(name, 1, e)) from None
    if header is not None:  # write_rows neutralised the header's cells too
        reader.fieldnames = [csv_plain(c) for c in header]
    return reader


def _guarded(
    reader: csv.DictReader[str], name: str, exc: type[InputError]
) -> Iterator[tuple[int, dict[str | None, str | None]]]:
    """(spreadsheet line, raw row) of each data row (header = line 1); a row the csv module
    cannot read stops the reading with `exc` naming the file and that row."""
    rows = iter(reader)
    line = 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as e:
            raise exc(_problem(name, line + 1, e)) from None
        line += 1
        yield line, row  # type: ignore[misc]


def csv_rows(
    reader: csv.DictReader[str], name: str, errors: list[str],
    exc: type[InputError] = InputError, whole: bool = False,
) -> Iterator[tuple[int, str, dict[str, str]]]:  # fmt: skip
    """(spreadsheet line, "NAME row N", row) for each data row of a user-edited CSV, its cells
    through `csv_plain`; a row with more cells than the header (or, with `whole`, fewer) is
    reported in `errors` and skipped; a row the csv module cannot read stops the reading with
    `exc` naming it."""
    for line, row in _guarded(reader, name, exc):
        where = f"{name} row {line}"
        if None in row:
            errors.append(f"{where}: more cells than header columns (an unquoted comma?)")
            continue
        if whole and None in row.values():  # a cut-off line: its missing cells are not empty
            errors.append(f"{where}: {sum(v is not None for v in row.values())} of {len(row)} "
                          "cells (a cut-off line?); complete the row or delete it")  # fmt: skip
            continue
        yield line, where, {str(k): csv_plain(v or "") for k, v in row.items()}


def read_csv(
    path: Path, exc: type[InputError] = InputError
) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as {column: cell}) of a CSV file whose rows the caller checks itself (a
    run's log, a cohen metadata.csv): missing cells read "", cells beyond the header are
    dropped, no cell is changed."""
    path = Path(path)
    reader = dict_reader(read_text(path, exc), str(path), exc)
    rows = [{k: v or "" for k, v in row.items() if k is not None}
            for _, row in _guarded(reader, str(path), exc)]  # fmt: skip
    return list(reader.fieldnames or []), rows
