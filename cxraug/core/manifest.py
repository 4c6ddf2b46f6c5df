"""The one owner of the dataset manifest (`manifest.csv` at the workspace root).

Every command reads and writes the manifest only through this module. The columns are
documented in docs/manifest.md; this module is the executable form of that contract.

A manifest is a plain CSV so that users can edit it with a spreadsheet or pandas. On read,
every row is validated and all problems are reported together, each with the row number a
spreadsheet shows (the header is row 1). Columns the user adds are kept and written back.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from cxraug.core.csvfile import csv_plain as csv_plain
from cxraug.core.csvfile import csv_rows as csv_rows
from cxraug.core.csvfile import csv_safe as csv_safe
from cxraug.core.csvfile import dict_reader, read_text, write_rows
from cxraug.core.errors import InputError, ManifestError, listed
from cxraug.core.fsutil import atomic_write_text

SCHEMA_VERSION = "1"
MANIFEST_NAME = "manifest.csv"

#: Class names in model-index order (the paper conditions on COVID-19 = 1).
LABELS: tuple[str, ...] = ("normal", "covid")
#: external = a whole source kept for testing only (`collect --test-only NAME`): `preprocess`
#: keeps it, `evaluate` scores on it, and no stage ever trains, calibrates or selects on it.
SPLITS: tuple[str, ...] = ("train", "test", "external")
#: ok = usable; excluded = deliberately left out (e.g. lateral view); error = unreadable file;
#: duplicate = exact copy of another row; rejected = synthetic image refused by `filter`.
STATUSES: tuple[str, ...] = ("ok", "excluded", "error", "duplicate", "rejected")

COLUMNS: tuple[str, ...] = (
    "manifest_version", "id", "path", "label", "split", "status", "reason",
    "source", "source_path", "patient_id", "view", "license", "sha256",
    "width", "height", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "marks",
    "synthetic", "run", "checkpoint_sha256", "seed", "noise_index", "cond_source", "note",
)  # fmt: skip
REQUIRED: tuple[str, ...] = ("id", "path", "label", "split", "status")
#: What `preprocess` writes in the `marks` column (cxraug.prep.marks), joined by "+";
#: annotation: a DICOM header's BurnedInAnnotation YES (text burned into the pixels).
MARK_REASONS: tuple[str, ...] = ("colour", "stroke", "text", "border", "annotation")
#: A person's verdict in the `marks` column, which `preprocess` never overwrites: "clean"
#: (keep the image in training) or "marked", each optionally followed by ": a note".
MARK_VERDICTS: tuple[str, ...] = ("clean", "marked")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


def marks_cell(reasons: Iterable[str]) -> str:
    """The `marks` cell for the detector's reasons ("" = none found), in MARK_REASONS order."""
    found = set(reasons)
    return "+".join(r for r in MARK_REASONS if r in found)


def is_verdict(cell: str) -> bool:
    """Is the `marks` cell a person's verdict (kept by `preprocess`), not the detector's?"""
    return cell.split(":", 1)[0].strip().lower() in MARK_VERDICTS


def is_marked(cell: str) -> bool:
    """Does the `marks` cell leave the image out of training: detector reasons, or a
    person's "marked"; empty and "clean" do not."""
    return cell.strip() != "" and cell.split(":", 1)[0].strip().lower() != "clean"


def label_index(label: str) -> int:
    return LABELS.index(label)


def check_label(label: str, classes: tuple[str, ...] = LABELS,
                exc: type[InputError] = InputError) -> str:  # fmt: skip
    """`label` if it is a known class, else `exc` naming the classes (the one such check)."""
    if label not in classes:
        raise exc(f"unknown class {label!r}; use one of {', '.join(classes)}")
    return label


def whole_number(cell: str) -> int | None:
    """A user-edited CSV cell as a whole number: None for an empty cell (pandas writes "nan"
    for empty numeric cells, and "640.0" once a column holds one); ValueError otherwise."""
    v = cell.strip()
    if v == "" or v.lower() == "nan":
        return None
    f = float(v)  # ValueError for text
    if not f.is_integer():  # also inf
        raise ValueError(f"{cell!r} is not a whole number")
    return int(f)


@dataclass
class Record:
    """One image (real or synthetic). Paths are absolute, or relative to the workspace root."""

    id: str
    path: str
    label: str = ""
    split: str = ""
    status: str = "ok"
    reason: str = ""
    source: str = ""
    source_path: str = ""
    patient_id: str = ""
    view: str = ""
    license: str = ""
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    crop: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1), original pixels, x1/y1 excl.
    marks: str = ""  # editorial marks preprocess found ("text+stroke"), or a person's verdict
    synthetic: bool = False
    run: str = ""
    checkpoint_sha256: str = ""
    seed: int | None = None
    noise_index: int | None = None
    cond_source: str = ""  # the source a source-conditioned generator drew it for (else "")
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # user columns, written back untouched

    @property
    def usable(self) -> bool:
        return self.status == "ok"

    def resolve(self, root: Path) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else Path(root) / p

    def set_status(self, status: str, reason: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.status, self.reason = status, reason

    def add_note(self, note: str) -> None:
        """Append `note` to the note cell ("; " between notes)."""
        self.note = f"{self.note}; {note}" if self.note else note


_SCALAR_FIELDS = [f.name for f in fields(Record) if f.name not in ("crop", "extra")]


def _to_row(r: Record) -> dict[str, str]:
    def s(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    row = {name: s(getattr(r, name)) for name in _SCALAR_FIELDS}
    row["manifest_version"] = SCHEMA_VERSION
    x0, y0, x1, y1 = r.crop if r.crop is not None else (None, None, None, None)
    row.update(crop_x0=s(x0), crop_y0=s(y0), crop_x1=s(x1), crop_y1=s(y1))
    row.update(r.extra)
    return row


def _parse_int(value: str, column: str, errors: list[str], where: str) -> int | None:
    try:
        return whole_number(value)
    except ValueError:
        errors.append(f"{where}: {column}={value!r} is not a whole number")
        return None


def _parse_row(row: dict[str, str], where: str, errors: list[str]) -> Record | None:
    """One CSV row as a Record, or None with every problem of the row appended to `errors`."""
    n_before = len(errors)
    g = {k: ("" if v is None or v.strip().lower() == "nan" else v.strip()) for k, v in row.items()}
    label, split, status, synthetic = _parse_words(g, where, errors)
    ints, crop = _parse_numbers(g, where, errors)
    if len(errors) > n_before:
        return None
    known = set(COLUMNS)
    return Record(
        id=g.get("id", ""), path=g.get("path", ""), label=label, split=split, status=status,
        reason=g.get("reason", ""), source=g.get("source", ""),
        source_path=g.get("source_path", ""),
        patient_id=g.get("patient_id", ""), view=g.get("view", ""),
        license=g.get("license", ""), sha256=g.get("sha256", "").lower(),
        width=ints["width"], height=ints["height"], crop=crop, marks=g.get("marks", ""),
        synthetic=synthetic,
        run=g.get("run", ""), checkpoint_sha256=g.get("checkpoint_sha256", ""),
        seed=ints["seed"], noise_index=ints["noise_index"],
        cond_source=g.get("cond_source", ""), note=g.get("note", ""),
        extra={k: (v or "") for k, v in row.items() if k not in known and k is not None},
    )  # fmt: skip


def _parse_words(g: dict[str, str], where: str,
                 errors: list[str]) -> tuple[str, str, str, bool]:  # fmt: skip
    """The version, id and path present; (label, split, status, synthetic) checked."""
    version = g.get("manifest_version", "")
    if version not in ("", SCHEMA_VERSION):
        errors.append(
            f"{where}: manifest_version={version!r}, this cxraug reads version {SCHEMA_VERSION}"
        )
    label, split, status = (g.get(k, "").lower() for k in ("label", "split", "status"))
    if not g.get("id", ""):
        errors.append(f"{where}: id is empty; give every row a unique id")
    if not g.get("path", ""):
        errors.append(f"{where}: path is empty; give the image file's path")
    if status not in STATUSES:
        errors.append(f"{where}: status={g.get('status')!r}; use one of {', '.join(STATUSES)}")
    if label and label not in LABELS:
        known_labels = ", ".join(LABELS)
        errors.append(f"{where}: label={g.get('label')!r} is unknown; use one of {known_labels}")
    if status == "ok" and not label:
        errors.append(f"{where}: label is empty on a usable row; use one of {', '.join(LABELS)}")
    if split and split not in SPLITS:
        errors.append(f"{where}: split={g.get('split')!r}; use one of {', '.join(SPLITS)}")
    if status == "ok" and not split:
        errors.append(f"{where}: split is empty on a usable row; use train, test or external")
    synth_s = g.get("synthetic", "").lower()
    if synth_s not in _TRUE | _FALSE:
        errors.append(f"{where}: synthetic={g.get('synthetic')!r}; use true or false")
    return label, split, status, synth_s in _TRUE


def _parse_numbers(
    g: dict[str, str], where: str, errors: list[str]
) -> tuple[dict[str, int | None], tuple[int, int, int, int] | None]:
    """The whole-number cells ({column: value}) and the crop box, checked."""
    ints = {
        c: _parse_int(g.get(c, ""), c, errors, where)
        for c in ("width", "height", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "seed",
                  "noise_index")
    }  # fmt: skip
    for c in ("width", "height", "noise_index"):
        v = ints[c]
        if v is not None and v < 0:
            errors.append(f"{where}: {c}={v} is negative")
    cvals = [ints[c] for c in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]
    crop: tuple[int, int, int, int] | None = None
    if any(v is not None for v in cvals):
        if any(v is None for v in cvals):
            errors.append(f"{where}: crop box needs all of crop_x0, crop_y0, crop_x1, crop_y1 "
                          "(or none of them)")  # fmt: skip
        else:
            x0, y0, x1, y1 = (int(v) for v in cvals)  # type: ignore[arg-type]
            msg = crop_box_problem((x0, y0, x1, y1), ints["width"], ints["height"])
            if msg:
                errors.append(f"{where}: {msg}")
            crop = (x0, y0, x1, y1)
    return ints, crop


def crop_box_problem(
    box: tuple[int, int, int, int], width: int | None, height: int | None
) -> str | None:
    """Why a crop box (x0, y0, x1, y1; x1/y1 exclusive) is invalid, or None if it is fine."""
    x0, y0, x1, y1 = box
    if min(x0, y0) < 0:
        return f"crop box {box} has a negative coordinate"
    if x1 <= x0:
        return f"crop box {box}: x1 ({x1}) must be greater than x0 ({x0})"
    if y1 <= y0:
        return f"crop box {box}: y1 ({y1}) must be greater than y0 ({y0})"
    if width is not None and x1 > width:
        return f"crop box {box}: x1 ({x1}) is beyond the image width ({width})"
    if height is not None and y1 > height:
        return f"crop box {box}: y1 ({y1}) is beyond the image height ({height})"
    if (x1 - x0) < 8 or (y1 - y0) < 8:
        return f"crop box {box} is smaller than 8x8 pixels"
    return None


class Manifest:
    """The records of one manifest file, in file order, with their extra columns."""

    def __init__(self, records: Iterable[Record] = (), extra_columns: Iterable[str] = ()) -> None:
        self.records: list[Record] = list(records)
        self.extra_columns: list[str] = list(extra_columns)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def ids(self) -> set[str]:
        return {r.id for r in self.records}

    def by_id(self) -> dict[str, Record]:
        return {r.id: r for r in self.records}

    def select(
        self,
        *,
        label: str | None = None,
        split: str | None = None,
        synthetic: bool | None = None,
        status: str | None = "ok",
    ) -> list[Record]:
        """Records matching every given criterion (default: usable rows only)."""
        if label is not None:
            check_label(label, exc=ManifestError)
        return [
            r for r in self.records
            if (label is None or r.label == label)
            and (split is None or r.split == split)
            and (synthetic is None or r.synthetic == synthetic)
            and (status is None or r.status == status)
        ]  # fmt: skip

    def add(self, record: Record) -> None:
        if record.id in self.ids():
            raise ManifestError(f"a row with id {record.id!r} already exists in the manifest")
        self.records.append(record)

    def validate(self) -> None:
        """Re-validate in-memory records by round-tripping them through the CSV rules."""
        parse_manifest_text(to_csv_text(self), "<in-memory manifest>")


def to_csv_text(m: Manifest) -> str:
    cols = list(COLUMNS) + [c for c in m.extra_columns if c not in COLUMNS]
    rows = (_to_row(r) for r in m.records)
    return write_rows(cols, ([row.get(c, "") for c in cols] for row in rows))


def problems_message(name: str, errors: list[str], consequence: str = "") -> str:
    """"NAME has N problem(s)[; consequence]. Fix them and re-run:" + the first
    MAX_LISTED lines, one per problem."""
    return (f"{name} has {len(errors)} problem(s){consequence}; fix them and re-run:\n"
            + "\n".join(listed(errors, indent="  ")))  # fmt: skip


def parse_manifest_text(text: str, name: str = MANIFEST_NAME) -> Manifest:
    text = text.removeprefix("\ufeff")  # Excel writes a UTF-8 BOM
    if not text.strip():
        raise ManifestError(f"{name} is empty; run `cxraug collect` to create it")
    reader = dict_reader(text, name, ManifestError)
    header = reader.fieldnames or []
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ManifestError(f"{name}: duplicate column(s) {', '.join(dup)}; keep one of each")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ManifestError(
            f"{name}: missing column(s) {', '.join(missing)}; the header must include "
            f"{', '.join(REQUIRED)} (see docs/manifest.md)"
        )
    errors: list[str] = []
    records: list[Record] = []
    seen: dict[str, int] = {}
    for line, where, row in csv_rows(reader, name, errors, ManifestError, whole=True):
        rec = _parse_row(row, where, errors)
        if rec is None:
            continue
        if rec.id in seen:
            errors.append(f"{where}: id {rec.id!r} repeats row {seen[rec.id]}; ids must be unique")
            continue
        seen[rec.id] = line
        records.append(rec)
    if errors:
        raise ManifestError(problems_message(name, errors))
    return Manifest(records, [c for c in header if c not in COLUMNS])


def manifest_text(path: Path, lenient: bool = False) -> str:
    """The manifest file's text, or ManifestError saying what is there instead: nothing, a
    folder, or something that is not a regular file (a FIFO would block the read forever).
    `lenient`: bytes that are not UTF-8 become U+FFFD instead of an error."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows a symlink: what would be read
    except FileNotFoundError:
        raise ManifestError(
            f"no manifest at {path}; run `cxraug collect SOURCE...` in this workspace first, "
            "or point --workspace at the folder that holds manifest.csv"
        ) from None
    if stat.S_ISDIR(mode):
        raise ManifestError(f"{path} is a folder, not a manifest file; move it aside (cxraug "
                            "never deletes it), then run `cxraug collect` or put the manifest "
                            "file back")  # fmt: skip
    if not stat.S_ISREG(mode):
        raise ManifestError(f"{path} is not a regular file (a FIFO, socket or device); replace "
                            "it with the manifest CSV file")  # fmt: skip
    if lenient:
        return path.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")
    return read_text(path, ManifestError)


def read_manifest(path: Path) -> Manifest:
    return parse_manifest_text(manifest_text(path), Path(path).name)


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Validate, then write atomically (temp file + rename): a crash never tears the file.
    A manifest.csv that is a symlink stays one: the file it points to is replaced."""
    manifest.validate()
    atomic_write_text(Path(os.path.realpath(path)), to_csv_text(manifest))
