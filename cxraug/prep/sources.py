"""Source specs for `cxraug collect` and the readers that turn a local copy into candidate rows.

    [NAME=]cohen:PATH     a checkout of ieee8023/covid-chestxray-dataset (metadata.csv + images/)
    [NAME=]kermany:PATH   Kaggle "Chest X-Ray Images (Pneumonia)": .../{NORMAL,PNEUMONIA}/*
    [NAME=]folder:PATH    one sub-folder per class: covid/ (COVID-19/, COVID/), normal/

Readers decide from metadata and folder names alone which files are candidates for a class and
which are excluded, and why. They never open an image: `cxraug.prep.inspect` checks the files.
Ids are `NAME/<path inside PATH>`, so they are stable across runs and machines.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.core.csvfile import read_table
from cxraug.core.errors import InputError
from cxraug.core.images import IMAGE_SUFFIXES

SCHEMES: tuple[str, ...] = ("cohen", "kermany", "folder")
#: Names that may hold an image, including formats we refuse with a helpful reason (DICOM, GIF).
CANDIDATE_SUFFIXES = IMAGE_SUFFIXES + (".dcm", ".dicom", ".gif")
_SKIP_DIRS = {"__MACOSX", "__pycache__"}
#: folder: class sub-folder names (lower-cased) -> label
FOLDER_CLASSES = {"covid": "covid", "covid-19": "covid", "covid19": "covid", "covid_19": "covid",
                  "normal": "normal"}  # fmt: skip
COHEN_COLUMNS = ("patientid", "finding", "view", "modality", "folder", "filename")
_XRAY_MODALITIES = {"x-ray", "xray", "cr", "dx"}
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


def parse_source(text: str) -> SourceSpec:
    """`[NAME=]SCHEME:PATH` -> SourceSpec; the path must exist and be a folder."""
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
    if not root.is_dir():
        raise InputError(f"source {text!r}: {root} is a file; give the dataset's folder")
    default = scheme if scheme != "folder" else root.name
    return SourceSpec(name or default, scheme, root)


def list_source(spec: SourceSpec) -> Listing:
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
            if p.suffix.lower() in CANDIDATE_SUFFIXES:
                images.append(p)
            elif e.is_dir():
                stack.append(p)
            else:
                others.append(p)
    return sorted(images), sorted(others)


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
    if v in ("", "?"):
        return "view not stated" if not v else "view not stated ('?')"
    if v.upper().startswith("L"):
        return f"lateral view ({v})"
    if not v.upper().startswith(("AP", "PA")):
        return f"not a frontal view ({v})"
    if f.lower() == "todo":
        return "finding not yet labelled (todo)"
    if not f:
        return "finding not stated"
    # "COVID-19", "COVID-19, ARDS", and later releases' "Pneumonia/Viral/COVID-19"
    tokens = {t.strip().upper() for t in re.split(r"[,/;]", f)}
    if not tokens & {"COVID-19", "COVID19", "COVID"}:
        return f"finding {f!r} is not COVID-19"
    return ""


def _read_cohen_metadata(path: Path) -> list[dict[str, str]]:
    header, rows = read_table(path)  # a cell over the CSV limit: exit 3 naming the row
    missing = [c for c in COHEN_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; cohen: expects the "
                         "metadata.csv of ieee8023/covid-chestxray-dataset")  # fmt: skip
    return rows


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
