"""Source specs for `cxraug collect` and the readers that turn a local copy into candidate rows.

    [NAME=]cohen:PATH     a checkout of ieee8023/covid-chestxray-dataset (metadata.csv + images/)
    [NAME=]kermany:PATH   Kaggle "Chest X-Ray Images (Pneumonia)": .../{NORMAL,PNEUMONIA}/*
    [NAME=]folder:PATH    one sub-folder per class: covid/ (COVID-19/, COVID/), normal/
    [NAME=]csv:FILE       a CSV naming image files, their labels and patients; which columns
                          hold what and which labels are which class: `CsvLayout` (csvsource.py)

Readers decide from metadata and folder names alone which files are candidates for a class and
which are excluded, and why. They never decode an image (a file without an image suffix has its
first 132 bytes read, to find DICOM files named like IM0001): `cxraug.prep.inspect` checks the
files, and applies `dicom_verdict` to what a DICOM file's header says (any source may hold
DICOM).
Ids are `NAME/<path inside PATH>`, so they are stable across runs and machines.
"""

from __future__ import annotations

import csv
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.core.dicom import DicomFacts
from cxraug.core.errors import InputError
from cxraug.core.images import IMAGE_SUFFIXES
from cxraug.prep.csvsource import CsvLayout, judge_row, layout_warnings, read_table, view_problem

SCHEMES: tuple[str, ...] = ("cohen", "kermany", "folder", "csv")
#: Names that may hold an image, including formats we refuse with a helpful reason (DICOM, GIF).
CANDIDATE_SUFFIXES = IMAGE_SUFFIXES + (".dcm", ".dicom", ".gif")
_SKIP_DIRS = {"__MACOSX", "__pycache__"}
#: folder: class sub-folder names (lower-cased) -> label
FOLDER_CLASSES = {"covid": "covid", "covid-19": "covid", "covid19": "covid", "covid_19": "covid",
                  "normal": "normal"}  # fmt: skip
COHEN_COLUMNS = ("patientid", "finding", "view", "modality", "folder", "filename")
_XRAY_MODALITIES = {"x-ray", "xray", "cr", "dx"}
#: DICOM Modality codes of projection radiographs (OT: a digitised film, secondary capture)
DICOM_RADIOGRAPHS = ("CR", "DX", "DR", "RG", "OT")
# Kermany names: IM-0117-0001.jpeg, NORMAL2-IM-1294-0001-0002.jpeg, person1_virus_6.jpeg;
# NIH ChestX-ray8 names: 00001280_004.png (patient 00001280, follow-up 4).
_KERMANY_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-")
_KERMANY_PERSON = re.compile(r"^(person\d+)_")
_NIH = re.compile(r"^(\d{8})_\d{3}$")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    scheme: str
    root: Path


@dataclass
class Candidate:
    """A file the source lists. status "ok" means "to inspect"; collect may still reject it."""

    id: str
    path: Path  # absolute, symlinks not resolved (a dangling link is reported as such)
    source: str
    source_path: str  # posix path inside the source root
    label: str = ""
    status: str = "ok"
    reason: str = ""
    patient_id: str = ""
    view: str = ""
    license: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Listing:
    spec: SourceSpec
    candidates: list[Candidate]
    skipped: list[str]  # non-image files ignored (README, .DS_Store is not even counted)
    warnings: list[str] = field(default_factory=list)  # for the user; nothing was refused


def parse_source(text: str) -> SourceSpec:
    """`[NAME=]SCHEME:PATH` -> SourceSpec; the path must exist and be a folder (csv: a file)."""
    name = ""
    body = text
    if "=" in text.split(":", 1)[0]:
        name, body = text.split("=", 1)
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise InputError(f"source {text!r}: name {name!r} must be letters, digits, '_', '-' "
                             "or '.', e.g. nih=folder:/data/nih")  # fmt: skip
    scheme, sep, path_s = body.partition(":")
    if not sep or scheme not in SCHEMES:
        raise InputError(
            f"source {text!r}: unknown form; write SCHEME:PATH with SCHEME one of "
            f"{', '.join(SCHEMES)} (optionally NAME= before it), e.g. cohen:covid-chestxray-dataset"
        )
    if not path_s:
        raise InputError(f"source {text!r}: the path after '{scheme}:' is empty")
    root = Path(os.path.abspath(Path(path_s).expanduser()))
    if not root.exists():
        raise InputError(f"source {text!r}: {root} does not exist; check the path")
    if scheme == "csv":
        if not root.is_file():
            tables = sorted(p.name for p in root.glob("*.csv")) if root.is_dir() else []
            hint = f" (it holds {', '.join(tables)})" if tables else ""
            raise InputError(f"source {text!r}: {root} is not a file; csv: takes the CSV file "
                             f"itself, e.g. csv:{root / 'metadata.csv'}{hint}")  # fmt: skip
        return SourceSpec(name or root.parent.name, scheme, root)
    if not root.is_dir():
        raise InputError(f"source {text!r}: {root} is a file; give the dataset's folder")
    default = scheme if scheme != "folder" else root.name
    return SourceSpec(name or default, scheme, root)


def list_source(spec: SourceSpec, csv_layout: CsvLayout | None = None) -> Listing:
    """The candidates of one source; csv: sources read their columns from `csv_layout`."""
    if spec.scheme == "csv":
        return _list_csv(spec, csv_layout or CsvLayout())
    reader = {"cohen": _list_cohen, "kermany": _list_kermany, "folder": _list_folder}
    return reader[spec.scheme](spec)


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(image-named entries, other files) under root, sorted; hidden entries are ignored.

    An image-named entry may be a directory or a dangling link: it is returned (not entered) so
    that collect records it as an error instead of silently skipping it."""
    images: list[Path] = []
    others: list[Path] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:  # a symlink loop
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or e.name in _SKIP_DIRS:
                continue
            p = Path(e.path)
            if p.suffix.lower() in CANDIDATE_SUFFIXES or _unnamed_dicom(p):
                images.append(p)
            elif e.is_dir():
                stack.append(p)
            else:
                others.append(p)
    return sorted(images), sorted(others)


def _unnamed_dicom(p: Path) -> bool:
    """A DICOM file named without .dcm, as PACS exports name them (IM0001, 1.2.840.1.17):
    no suffix or a numeric one, and "DICM" at byte 128. Only regular files are opened (a FIFO
    would block), without blocking, and only their first 132 bytes are read."""
    if p.suffix and not p.suffix[1:].isdigit():
        return False
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):
            return False
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            head = os.read(fd, 132)
        finally:
            os.close(fd)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _candidate(spec: SourceSpec, p: Path, **kw: object) -> Candidate:
    rel = _rel(p, spec.root)
    return Candidate(id=f"{spec.name}/{rel}", path=p, source=spec.name, source_path=rel,
                     **kw)  # type: ignore[arg-type]  # fmt: skip


def patient_from_name(name: str) -> str:
    """Patient id encoded in a Kermany or NIH file name, '' when the name carries none."""
    stem = Path(name).stem
    m = _KERMANY_IM.match(stem) or _KERMANY_PERSON.match(stem)
    if m:
        return f"kermany-{m.group(1)}"
    m = _NIH.match(stem)
    return f"nih-{m.group(1)}" if m else ""


# ---- kermany ----------------------------------------------------------------------------------


def _list_kermany(spec: SourceSpec) -> Listing:
    images, others = _walk(spec.root)
    cands: list[Candidate] = []
    for p in images:
        parts = [s.upper() for s in p.relative_to(spec.root).parts[:-1]]
        cls = next((s for s in reversed([spec.root.name.upper(), *parts])
                    if s in ("NORMAL", "PNEUMONIA")), "")  # fmt: skip
        if cls == "NORMAL":
            cands.append(_candidate(spec, p, label="normal", patient_id=patient_from_name(p.name)))
        elif cls == "PNEUMONIA":
            cands.append(_candidate(spec, p, status="excluded",
                                    reason="pneumonia (not a paper class)",
                                    patient_id=patient_from_name(p.name)))  # fmt: skip
        else:
            cands.append(_candidate(spec, p, status="excluded",
                                    reason="not inside a NORMAL/ or PNEUMONIA/ folder"))
    if not any(c.status == "ok" or c.reason.startswith("pneumonia") for c in cands):
        raise InputError(
            f"{spec.root}: no NORMAL/ or PNEUMONIA/ folder with images found; kermany: expects "
            "the Kaggle layout chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg"
        )
    return Listing(spec, cands, [_rel(p, spec.root) for p in others])


# ---- folder -----------------------------------------------------------------------------------


def _list_folder(spec: SourceSpec) -> Listing:
    images, others = _walk(spec.root)
    accepted = "covid/ (or COVID-19/, COVID/) and normal/ (or NORMAL/), case-insensitive"
    unknown = sorted({p.relative_to(spec.root).parts[0] for p in images
                      if len(p.relative_to(spec.root).parts) > 1
                      and p.relative_to(spec.root).parts[0].lower() not in FOLDER_CLASSES})
    if unknown:
        raise InputError(
            f"{spec.root}: class folder(s) {', '.join(repr(u) for u in unknown)} are not a class "
            f"cxraug knows; accepted names: {accepted}. Rename them, or move them out of "
            f"{spec.root}"
        )  # fmt: skip
    cands: list[Candidate] = []
    for p in images:
        parts = p.relative_to(spec.root).parts
        if len(parts) == 1:
            cands.append(_candidate(spec, p, status="excluded",
                                    reason="not inside a class folder (covid/, normal/)"))
            continue
        cands.append(_candidate(spec, p, label=FOLDER_CLASSES[parts[0].lower()],
                                patient_id=patient_from_name(p.name)))  # fmt: skip
    if not any(c.status == "ok" for c in cands):
        raise InputError(f"{spec.root}: no images in class folders; folder: expects {accepted}, "
                         "each holding image files")  # fmt: skip
    return Listing(spec, cands, [_rel(p, spec.root) for p in others])


# ---- cohen ------------------------------------------------------------------------------------


def cohen_verdict(modality: str, view: str, finding: str) -> str:
    """Why a covid-chestxray-dataset metadata row is excluded, '' if it is a frontal COVID X-ray."""
    mod, v, f = modality.strip(), view.strip(), finding.strip()
    if mod.lower() not in _XRAY_MODALITIES:
        if not mod:
            return "modality not stated"
        return f"{mod} scan ({v})" if v else f"{mod} scan"
    problem = view_problem(v)
    if problem:
        return problem
    if f.lower() == "todo":
        return "finding not yet labelled (todo)"
    if not f:
        return "finding not stated"
    # "COVID-19", "COVID-19, ARDS", and later releases' "Pneumonia/Viral/COVID-19"
    tokens = {t.strip().upper() for t in re.split(r"[,/;]", f)}
    if not tokens & {"COVID-19", "COVID19", "COVID"}:
        return f"finding {f!r} is not COVID-19"
    return ""


def dicom_verdict(facts: DicomFacts) -> str:
    """Why a decoded DICOM radiograph is left out ('' = kept): not a projection radiograph (CT,
    MR, ...), or a lateral / non-frontal ViewPosition. An unstated view is kept (many CR files
    leave ViewPosition empty); `dicom_note` says so."""
    if facts.modality and facts.modality not in DICOM_RADIOGRAPHS:
        return (f"{facts.modality} object (DICOM Modality {facts.modality}); only projection "
                f"radiographs ({', '.join(DICOM_RADIOGRAPHS)}) are used")  # fmt: skip
    return view_problem(facts.view) if facts.view else ""


def dicom_note(facts: DicomFacts, patient_tag: str = "PatientID") -> str:
    """The manifest note of a DICOM row: modality, the VOI transform used, what is missing."""
    parts = [f"DICOM {facts.modality or '(modality not stated)'}", f"VOI: {facts.voi}"]
    if not facts.view:
        parts.append("ViewPosition not stated")
    if not facts.patient:
        parts.append(f"no {patient_tag} in the header")
    if facts.burned_in:
        parts.append("BurnedInAnnotation YES")
    return ", ".join(parts)


def _read_cohen_metadata(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text ({e}); save it as CSV UTF-8") from e
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COHEN_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; cohen: expects the "
                         "metadata.csv of ieee8023/covid-chestxray-dataset")  # fmt: skip
    return [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]


def _outside(rel: str) -> bool:
    """A metadata.csv path that leaves the checkout: absolute (also C:/... or ~), or with '..'."""
    p = Path(rel)
    return p.is_absolute() or rel.startswith(("~", "\\")) or ".." in p.parts or ":" in p.parts[0]


def _list_cohen(spec: SourceSpec) -> Listing:
    meta = spec.root / "metadata.csv"
    if not meta.is_file():
        raise InputError(f"{spec.root} has no metadata.csv; cohen: expects a checkout of "
                         "ieee8023/covid-chestxray-dataset (metadata.csv + images/)")  # fmt: skip
    rows = _read_cohen_metadata(meta)
    # metadata rows that share one file (the same image entered under two patients) get ids
    # NAME/images/x.jpg, NAME/images/x.jpg#2, ...; collect links their patients in the split
    users: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        rel = Path(row["folder"].strip() or "images", row["filename"].strip()).as_posix()
        if not _outside(rel):
            users.setdefault(rel, []).append(i + 2)  # spreadsheet row numbers
    nth: dict[str, int] = {}
    cands: list[Candidate] = []
    for i, row in enumerate(rows):
        folder, fname = row["folder"].strip() or "images", row["filename"].strip()
        rel = Path(folder, fname).as_posix()
        nth[rel] = nth.get(rel, 0) + 1
        rid = f"{spec.name}/{rel}" + (f"#{nth[rel]}" if nth[rel] > 1 else "")
        reason = cohen_verdict(row["modality"], row["view"], row["finding"])
        if not fname:
            reason = f"metadata.csv row {i + 2} has no filename"
        status = "excluded" if reason else "ok"
        if _outside(rel):  # never read: such a row could make collect hash any file on disk
            status, reason = "error", (
                f"metadata.csv row {i + 2}: folder/filename {rel!r} leads outside the dataset "
                "folder (absolute, or with '..'); refused, not read. Fix that row")  # fmt: skip
        c = Candidate(
            id=rid, path=spec.root / rel, source=spec.name, source_path=rel,
            label="covid" if status == "ok" else "", status=status,
            reason=reason, patient_id=f"cohen-{row['patientid'].strip()}",
            view=row["view"].strip(), license=row.get("license", "").strip(),
        )  # fmt: skip
        if len(users.get(rel, ())) > 1:
            c.notes.append(f"metadata.csv rows {', '.join(map(str, users[rel]))} list this file")
        cands.append(c)
    listed = {spec.root / rel for rel in users}
    others: list[Path] = []
    for folder in sorted({Path(rel).parts[0] for rel in users if len(Path(rel).parts) > 1}):
        if not (spec.root / folder).is_dir():
            continue
        images, other = _walk(spec.root / folder)
        others += other
        for p in images:
            if p not in listed:
                cands.append(_candidate(spec, p, status="excluded", reason="not in metadata.csv"))
    return Listing(spec, cands, [_rel(p, spec.root) for p in others])


# ---- csv --------------------------------------------------------------------------------------


def _file_cell_problem(cell: str, column: str) -> str:
    """Why a file cell of a csv: source cannot be read, '' if it can (after `\\` -> `/`)."""
    if not cell:
        return f"the {column} cell is empty"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cell):
        return f"{column} {cell!r} holds a control character"
    if _outside(cell):  # never read: such a row could make collect hash any file on disk
        return (f"{column} {cell!r} leads outside the images folder (absolute, or with '..'); "
                "refused, not read")  # fmt: skip
    return ""


def _csv_files(spec: SourceSpec, rows: list[tuple[int, dict[str, str]]], column: str,
               base: Path, top: Path) -> tuple[dict[int, str], dict[int, str]]:  # fmt: skip
    """({line: file path inside top}, {line: why the row names no readable file})."""
    rels: dict[int, str] = {}
    problems: dict[int, str] = {}
    for line, cells in rows:
        cell = cells[column].strip().replace("\\", "/")  # a Windows export's sub\x.png
        problem = _file_cell_problem(cell, column)
        if problem:
            problems[line] = f"{spec.root.name} row {line}: {problem}. Fix that row"
        else:
            rels[line] = (base / os.path.normpath(cell)).relative_to(top).as_posix()
    return rels, problems


def _list_csv(spec: SourceSpec, layout: CsvLayout) -> Listing:
    table = read_table(spec.root, layout)
    folder = spec.root.parent
    base = Path(os.path.normpath(folder / layout.images))
    if not base.is_dir():
        raise InputError(f"--csv-images {layout.images!r}: {base} is not a folder; give the "
                         f"folder holding the images, relative to {folder}")  # fmt: skip
    # ids are NAME/<path inside the CSV's folder> (NAME/images/x.png), or inside --csv-images
    # when that lies elsewhere; a row that names no readable file: NAME/metadata.csv#rowN
    top = folder if base == folder or folder in base.parents else base
    rels, problems = _csv_files(spec, table.rows, layout.file_column, base, top)
    users: dict[str, list[int]] = {}
    for line, rel in rels.items():
        users.setdefault(rel, []).append(line)
    nth: Counter[str] = Counter()
    cands: list[Candidate] = []
    for line, cells in table.rows:
        v = judge_row(cells, layout)
        c = Candidate(id=f"{spec.name}/{spec.root.name}#row{line}", path=spec.root,
                      source=spec.name, source_path=spec.root.name, label=v.label,
                      status="excluded" if v.reason else "ok", reason=v.reason, view=v.view,
                      patient_id=f"{spec.name}-{v.patient}" if v.patient else "")  # fmt: skip
        if layout.patient_column and not v.patient:
            c.notes.append(f"{layout.patient_column} is blank: counted as its own patient")
        if line in problems:
            c.status, c.reason = "error", problems[line]
        else:
            rel = rels[line]
            nth[rel] += 1
            c.id = f"{spec.name}/{rel}" + (f"#{nth[rel]}" if nth[rel] > 1 else "")
            c.path, c.source_path = top / rel, rel
            if len(users[rel]) > 1:
                rows = ", ".join(map(str, users[rel]))
                c.notes.append(f"{spec.root.name} rows {rows} list this file")
        c.label = "" if c.status == "excluded" else c.label
        cands.append(c)
    # rows the CSV reader could not take (e.g. more cells than the header): one error row each
    cands += [Candidate(id=f"{spec.name}/{spec.root.name}#unreadable{k}", path=spec.root,
                        source=spec.name, source_path=spec.root.name, status="error", reason=msg)
              for k, msg in enumerate(table.unreadable, 1)]  # fmt: skip
    listed = {top / rel for rel in users}
    images, others = _walk(base)
    cands += [_candidate(SourceSpec(spec.name, spec.scheme, top), p, status="excluded",
                         reason=f"not in {spec.root.name}")
              for p in images if p not in listed]  # fmt: skip
    skipped = [_rel(p, top) for p in others if p != spec.root]
    return Listing(spec, cands, skipped, layout_warnings(spec.root, table, layout))
