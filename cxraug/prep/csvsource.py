"""The rules of a `csv:` source: a CSV that names image files, their labels and their patients.

A hospital's export and published layouts such as Actualmed/UJI (`metadata.csv` with columns
patientid, finding, view, imagename + `images/`) all arrive this way. The user names the
columns and maps label values to classes (`collect --csv-*`, one `CsvLayout`); this module
reads the table through the one owner of CSV files (`core.csvfile`: a cell over the CSV limit
is exit 3 naming its row) and
decides per row, from the cells alone, which class it is for or why it is excluded.
`sources._list_csv` turns the rows into candidates; no image is opened here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxraug.core.csvfile import csv_rows, dict_reader, read_text
from cxraug.core.errors import InputError, listed_inline
from cxraug.core.manifest import LABELS
from cxraug.core.settings import setting

#: CollectConfig field `csv_<name>` -> its --help text; `csv_setting` makes the fields.
CSV_OPTIONS: dict[str, str] = {
    "file_column": "csv: sources: the column naming each image file, relative to --csv-images "
    "(e.g. imagename).",
    "label_column": "csv: sources: the column holding each image's finding (e.g. finding).",
    "classes": "csv: sources: VALUE=CLASS pairs, comma-separated, mapping values of "
    "--csv-label-column (case-insensitive) to normal/covid, e.g. 'COVID-19=covid,No "
    "finding=normal'; rows with another or a blank value are excluded, with the value.",
    "patient_column": "csv: sources: the column holding the patient id (a patient's images "
    "stay in one split); empty: every image counts as its own patient.",
    "view_column": "csv: sources: the column holding the view; when given, frontal views "
    "(AP, PA, ...) are kept and others (lateral: L, LL, ...) excluded.",
    "images": "csv: sources: the folder the file names are relative to, relative to the "
    "CSV's folder (e.g. images); empty: the CSV's own folder.",
}
_SHOWN = 60  # characters of a cell quoted in a reason
#: Column values a message names (with their counts) before "... and K more": fewer than
#: MAX_LISTED because they share one line of an error message with its advice.
VALUES_LISTED = 10


def csv_setting(name: str) -> Any:
    """The CollectConfig field `csv_<name>` (a string option, default empty)."""
    return setting("", CSV_OPTIONS[name])


def view_problem(view: str) -> str:
    """Why a view cell is not a frontal chest X-ray view, '' if it is one (PA, AP, AP Supine,
    AP erect, Frontal). Lateral: L..., and DICOM's RL (right lateral; LL starts with L)."""
    v = view.strip()
    if v in ("", "?"):
        return "view not stated" if not v else "view not stated ('?')"
    if v.upper().startswith("L") or v.upper() == "RL":
        return f"lateral view ({v})"
    if not v.upper().startswith(("AP", "PA", "FRONTAL")):
        return f"not a frontal view ({v})"
    return ""


def shown(cell: str) -> str:
    """A cell quoted in a reason: repr (control characters escaped), long ones cut."""
    return repr(cell if len(cell) <= _SHOWN else cell[:_SHOWN] + "...")


def parse_classes(text: str) -> dict[str, str]:
    """'COVID-19=covid,No finding=normal' -> {'covid-19': 'covid', 'no finding': 'normal'}
    (keys case-folded). A pair ends at the comma after its '=CLASS', so a value may hold
    commas ('COVID-19, ARDS=covid'); the class is what follows the value's last '='."""
    pairs: list[str] = []
    part = ""
    for piece in text.split(","):
        part = f"{part},{piece}" if part else piece
        if "=" in piece:
            pairs.append(part)
            part = ""
    if part.strip():
        raise InputError(f"--csv-classes: {part.strip()!r} has no '=CLASS'; write VALUE=CLASS "
                         "pairs, e.g. 'COVID-19=covid,No finding=normal'")  # fmt: skip
    out: dict[str, str] = {}
    for pair in pairs:
        value, _, cls = pair.rpartition("=")
        key, cls = value.strip().casefold(), cls.strip().lower()
        if cls not in LABELS:
            raise InputError(f"--csv-classes: {pair.strip()!r} maps to {cls!r}, which is not a "
                             f"class; use one of {', '.join(LABELS)}")  # fmt: skip
        if not key:
            raise InputError(f"--csv-classes: {pair.strip()!r} has no value before '='")
        if out.get(key, cls) != cls:
            raise InputError(f"--csv-classes maps {value.strip()!r} to both {out[key]} and {cls}")
        out[key] = cls
    return out


@dataclass(frozen=True)
class CsvLayout:
    """Which columns of a `csv:` source hold what, and how label values map to classes."""

    file_column: str = ""
    label_column: str = ""
    classes: dict[str, str] = field(default_factory=dict)  # case-folded value -> class
    patient_column: str = ""
    view_column: str = ""
    images: str = ""

    @classmethod
    def parse(cls, *, file_column: str, label_column: str, classes: str, patient_column: str,
              view_column: str, images: str) -> CsvLayout:  # fmt: skip
        """The layout from the --csv-* option values (validated; columns checked on reading)."""
        return cls(file_column.strip(), label_column.strip(), parse_classes(classes),
                   patient_column.strip(), view_column.strip(), images.strip())  # fmt: skip

    @property
    def given(self) -> bool:
        return any((self.file_column, self.label_column, self.classes, self.patient_column,
                    self.view_column, self.images))  # fmt: skip

    def columns(self) -> dict[str, str]:
        """option -> column, for the columns named."""
        named = {"--csv-file-column": self.file_column, "--csv-label-column": self.label_column,
                 "--csv-patient-column": self.patient_column,
                 "--csv-view-column": self.view_column}  # fmt: skip
        return {k: v for k, v in named.items() if v}


@dataclass
class CsvTable:
    """The data rows of a CSV (spreadsheet line, cells with stripped names), and the rows
    the reader could not take (each a message naming its row)."""

    header: list[str]
    rows: list[tuple[int, dict[str, str]]]
    unreadable: list[str]


def read_table(path: Path, layout: CsvLayout) -> CsvTable:
    """Read a `csv:` source's table; InputError when the layout does not fit its header."""
    reader = dict_reader(read_text(path), path.name)
    header = [c.strip() for c in (reader.fieldnames or [])]
    if not any(header):
        raise InputError(f"{path} is empty or has no header row; its first row must name the "
                         "columns")  # fmt: skip
    reader.fieldnames = header
    check_columns(path, header, layout)
    unreadable: list[str] = []
    rows = [(line, cells) for line, _, cells in csv_rows(reader, path.name, unreadable)
            if any(v.strip() for v in cells.values())]  # fmt: skip  # blank lines are no data
    values = Counter(cells[layout.label_column].strip() for _, cells in rows)
    if not any(v.casefold() in layout.classes for v in values):
        raise InputError(
            f"{path}: no row's {layout.label_column} is a value --csv-classes maps to a class; "
            f"the column holds: {held(values)}. Map those values, e.g. --csv-classes "
            "'COVID-19=covid,No finding=normal'"
        )
    return CsvTable(header, rows, unreadable)


def held(values: Counter[str]) -> str:
    """The most common values of a column with their counts, for a message."""
    return listed_inline([f"{shown(v)} ({n})" for v, n in values.most_common()], VALUES_LISTED)


def check_columns(path: Path, header: list[str], layout: CsvLayout) -> None:
    """Every required option given, every named column present once; else one InputError
    that names the columns the file has."""
    have = f"{path.name} has the columns: {', '.join(repr(c) for c in header if c)}"
    need = [opt for opt, v in (("--csv-file-column", layout.file_column),
                               ("--csv-label-column", layout.label_column),
                               ("--csv-classes", layout.classes)) if not v]  # fmt: skip
    if need:
        raise InputError(
            f"csv: source {path} needs {', '.join(need)} (which column names the image files, "
            "which holds the label, and which label values are which class, e.g. "
            "--csv-classes 'COVID-19=covid,No finding=normal'); " + have
        )
    for opt, col in layout.columns().items():
        if col not in header:
            raise InputError(f"{opt} {col!r}: no such column in {path}; {have}")
        if header.count(col) > 1:
            raise InputError(f"{opt} {col!r}: {path.name} has two columns named so; rename one")


@dataclass(frozen=True)
class RowVerdict:
    label: str  # the mapped class, '' when the label value maps to none
    reason: str  # why the row is excluded, '' when it is usable
    patient: str  # the patient cell ('' when no column or blank)
    view: str


def judge_row(cells: dict[str, str], layout: CsvLayout) -> RowVerdict:
    """The class of one row and, if it is excluded, why (the view first, then the label)."""
    value = cells.get(layout.label_column, "").strip()
    label = layout.classes.get(value.casefold(), "") if value else ""
    view = cells.get(layout.view_column, "").strip() if layout.view_column else ""
    reason = view_problem(view) if layout.view_column else ""
    if not reason and not value:
        reason = f"{layout.label_column} is blank"
    elif not reason and not label:
        reason = f"{layout.label_column} {shown(value)} is not mapped to a class (--csv-classes)"
    patient = cells.get(layout.patient_column, "").strip() if layout.patient_column else ""
    return RowVerdict(label, reason, patient, view)


def layout_warnings(path: Path, table: CsvTable, layout: CsvLayout) -> list[str]:
    """What the user should know before trusting the result: no patient column, and mapped
    values that no row holds (a typo in --csv-classes excludes every such row)."""
    out: list[str] = []
    if not layout.patient_column:
        out.append(f"{path}: no --csv-patient-column, so every image counts as its own patient "
                   "and two images of one patient can land in train and test; name the "
                   "patient column if the CSV has one")  # fmt: skip
    values = Counter(c.get(layout.label_column, "").strip() for _, c in table.rows)
    folded = {v.casefold() for v in values}
    unused = [k for k in layout.classes if k not in folded]
    if unused:
        out.append(f"{path}: --csv-classes value(s) {', '.join(map(repr, unused))} match no row; "
                   f"{layout.label_column} holds: {held(values)}")  # fmt: skip
    return out
