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
Ids are `NAME/<path inside PATH>`, so they are stable across runs and machines. What a reader
returns, and the folder walk they share: cxraug.prep.listing.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from cxraug.core.csvfile import read_csv
from cxraug.core.dicom import DicomFacts
from cxraug.core.errors import InputError
from cxraug.prep.csvsource import CsvLayout, judge_row, layout_warnings, read_table, view_problem
from cxraug.prep.listing import (
    Candidate,
    Listing,
    SourceSpec,
    candidate,
    outside,
    patient_from_name,
    rel_path,
    walk,
)

SCHEMES: tuple[str, ...] = ("cohen", "kermany", "folder", "csv")
#: folder: class sub-folder names (lower-cased) -> label
FOLDER_CLASSES = {"covid": "covid", "covid-19": "covid", "covid19": "covid", "covid_19": "covid",
                  "normal": "normal"}  # fmt: skip
COHEN_COLUMNS = ("patientid", "finding", "view", "modality", "folder", "filename")
_XRAY_MODALITIES = {"x-ray", "xray", "cr", "dx"}
#: DICOM Modality codes of projection radiographs (OT: a digitised film, secondary capture)
DICOM_RADIOGRAPHS = ("CR", "DX", "DR", "RG", "OT")


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


# ---- kermany ----------------------------------------------------------------------------------


def _list_kermany(spec: SourceSpec) -> Listing:
    images, others = walk(spec.root)
    cands: list[Candidate] = []
    for p in images:
        parts = [s.upper() for s in p.relative_to(spec.root).parts[:-1]]
        cls = next((s for s in reversed([spec.root.name.upper(), *parts])
                    if s in ("NORMAL", "PNEUMONIA")), "")  # fmt: skip
        if cls == "NORMAL":
            cands.append(candidate(spec, p, label="normal", patient_id=patient_from_name(p.name)))
        elif cls == "PNEUMONIA":
            cands.append(candidate(spec, p, status="excluded",
                                    reason="pneumonia (not a paper class)",
                                    patient_id=patient_from_name(p.name)))  # fmt: skip
        else:
            cands.append(candidate(spec, p, status="excluded",
                                    reason="not inside a NORMAL/ or PNEUMONIA/ folder"))
    if not any(c.status == "ok" or c.reason.startswith("pneumonia") for c in cands):
        raise InputError(
            f"{spec.root}: no NORMAL/ or PNEUMONIA/ folder with images found; kermany: expects "
            "the Kaggle layout chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg"
        )
    return Listing(spec, cands, [rel_path(p, spec.root) for p in others])


# ---- folder -----------------------------------------------------------------------------------


def _list_folder(spec: SourceSpec) -> Listing:
    images, others = walk(spec.root)
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
            cands.append(candidate(spec, p, status="excluded",
                                    reason="not inside a class folder (covid/, normal/)"))
            continue
        cands.append(candidate(spec, p, label=FOLDER_CLASSES[parts[0].lower()],
                                patient_id=patient_from_name(p.name)))  # fmt: skip
    if not any(c.status == "ok" for c in cands):
        raise InputError(f"{spec.root}: no images in class folders; folder: expects {accepted}, "
                         "each holding image files")  # fmt: skip
    return Listing(spec, cands, [rel_path(p, spec.root) for p in others])


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
    header, rows = read_csv(path)  # a cell over the CSV limit: exit 3 naming the row
    missing = [c for c in COHEN_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; cohen: expects the "
                         "metadata.csv of ieee8023/covid-chestxray-dataset")  # fmt: skip
    return rows


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
        if not outside(rel):
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
        if outside(rel):  # never read: such a row could make collect hash any file on disk
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
        images, other = walk(spec.root / folder)
        others += other
        for p in images:
            if p not in listed:
                cands.append(candidate(spec, p, status="excluded", reason="not in metadata.csv"))
    return Listing(spec, cands, [rel_path(p, spec.root) for p in others])


# ---- csv --------------------------------------------------------------------------------------


def _file_cell_problem(cell: str, column: str) -> str:
    """Why a file cell of a csv: source cannot be read, '' if it can (after `\\` -> `/`)."""
    if not cell:
        return f"the {column} cell is empty"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cell):
        return f"{column} {cell!r} holds a control character"
    if outside(cell):  # never read: such a row could make collect hash any file on disk
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
    images, others = walk(base)
    cands += [candidate(SourceSpec(spec.name, spec.scheme, top), p, status="excluded",
                         reason=f"not in {spec.root.name}")
              for p in images if p not in listed]  # fmt: skip
    skipped = [rel_path(p, top) for p in others if p != spec.root]
    return Listing(spec, cands, skipped, layout_warnings(spec.root, table, layout))
