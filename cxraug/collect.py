"""`cxraug collect`: record the images of local dataset copies in the workspace manifest.

Nothing is copied: each manifest row points at the file where it lies. Pipeline (the order
of work is this module's; the machinery is in cxraug.prep):
    sources.list_source (metadata/folder rules) -> inspect every file in 2 processes (sha256,
    size, full decode check, 256-bit difference hash: prep.inspect) -> exact duplicates ->
    near-duplicates (reported, not removed: prep.duplicates) -> train/test split by patient
    group (prep.split) -> merge user edits -> write.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from cxraug.core.dicom import PatientKey, load_salt, parse_tag, save_salt
from cxraug.core.errors import MAX_LISTED, InputError, first, listed, vassert
from cxraug.core.fsutil import atomic_write_json, atomic_write_text
from cxraug.core.images import (
    max_file_mb_setting,
    max_megapixels_setting,
)
from cxraug.core.manifest import (
    LABELS,
    SPLITS,
    Manifest,
    Record,
    manifest_text,
    parse_manifest_text,
)
from cxraug.core.settings import SEED, WORKERS, Settings, between, setting
from cxraug.core.ui import one_line, warn
from cxraug.core.workspace import Workspace, manifest_writer
from cxraug.prep.csvsource import CSV_OPTIONS, CsvLayout, csv_setting
from cxraug.prep.duplicates import (
    mark_exact_duplicates,
    near_duplicate_pairs,
    note_near_duplicates,
)
from cxraug.prep.inspect import FileCheck, inspect_files
from cxraug.prep.listing import Candidate, Listing, SourceSpec, patient_from_name
from cxraug.prep.loading import refuse_own_failure
from cxraug.prep.merge import MergeInfo, merge_previous
from cxraug.prep.sources import dicom_note, list_source, parse_source
from cxraug.prep.split import assign_splits


@dataclass(frozen=True)
class CollectConfig(Settings):
    test_fraction: float = setting(
        0.2, "Share of each class put in the test split, by patient.",
        bounds=between(0.0, 1.0, hi_open=True),
    )  # fmt: skip
    seed: int = setting(0, "Seed of the patient-level train/test split.",
                        bounds=SEED)  # np.random.default_rng  # fmt: skip
    workers: int = setting(2, "Processes that hash and decode files.", bounds=WORKERS)
    near_dup_bits: int = setting(
        14,
        "Report image pairs whose 256-bit dHash differ in at most this many bits as "
        "near-duplicates (kept, noted; kept in one split).",
        bounds=between(0, 256),
    )
    test_only: str = setting(
        "",
        "Comma-separated source NAMEs kept for testing only (e.g. another hospital's images): "
        "their rows get split external, which no stage trains, calibrates or selects on; "
        "`evaluate` scores on them.",
    )
    csv_file_column: str = csv_setting("file_column")
    csv_label_column: str = csv_setting("label_column")
    csv_classes: str = csv_setting("classes")
    csv_patient_column: str = csv_setting("patient_column")
    csv_view_column: str = csv_setting("view_column")
    csv_images: str = csv_setting("images")
    patient_tag: str = setting(
        "PatientID",
        "DICOM attribute (keyword, or gggg,eeee) that identifies a DICOM file's patient; stored "
        "only as a salted hash (the salt: WORKSPACE/.patient-salt).",
    )
    fast_decode: bool = True  # JPEG check at 1/2..1/8 scale (libjpeg still reads every byte)
    max_megapixels: float = max_megapixels_setting()
    max_file_mb: float = max_file_mb_setting()
    force: bool = setting(
        False,
        "Rebuild an existing manifest.csv. Kept for ids that still exist: crop boxes, extra "
        "columns, label corrections, status excluded; synthetic rows are kept. Recomputed (and "
        "listed): split, other statuses. Old file saved as manifest.csv.bak.",
    )
    show_progress: bool = True

    def check(self) -> None:
        # the option values that are not numbers: a bad one is an InputError (exit 3) when the
        # config is built, before any file is read
        if self.patient_tag != "PatientID":
            parse_tag(self.patient_tag)
        self.csv_layout()

    def csv_layout(self) -> CsvLayout:
        """The csv: sources' layout from the --csv-* options."""
        return CsvLayout.parse(**{k: getattr(self, f"csv_{k}") for k in CSV_OPTIONS})


def _to_record(c: Candidate, chk: FileCheck, ws: Workspace, patient_tag: str) -> Record:
    notes = list(c.notes)
    status, reason = c.status, c.reason
    view, patient = c.view, c.patient_id
    if chk.dicom is not None:  # the header outranks a file name's guess, not a csv column
        view = view or chk.dicom.view
        if not patient or patient == patient_from_name(c.path.name):
            patient = chk.dicom.patient or patient
        notes.append(dicom_note(chk.dicom, patient_tag))
    if chk.error:
        if status == "ok":
            status, reason = ("excluded" if chk.excluded else "error"), chk.error
        elif not chk.excluded:
            notes.append(f"file also unusable: {chk.error}")
    try:  # stored relative when the data lies inside the workspace, else absolute
        path = c.path.relative_to(ws.root).as_posix()
    except ValueError:
        path = str(c.path)
    return Record(
        id=c.id, path=path, label=c.label, status=status, reason=reason, source=c.source,
        source_path=c.source_path, patient_id=patient, view=view, license=c.license,
        sha256=chk.sha256, width=chk.width, height=chk.height, note="; ".join(notes),
    )  # fmt: skip


@dataclass
class CollectResult:
    manifest_path: Path
    config_path: Path
    table: list[tuple[str, str, str, int]]  # (source, label, status, rows)
    splits: dict[str, dict[str, int]]  # label -> {"train", "test", "train_patients", ...}
    exact_duplicates: int
    near_duplicates: list[tuple[str, str, int]]  # (id, id, dHash bits)
    skipped_files: dict[str, int]  # source -> non-image files ignored
    errors: list[tuple[str, str]]  # (id, reason) of rows with status error
    merge: MergeInfo | None = None

    @property
    def n_errors(self) -> int:
        return len(self.errors)

    def status_counts(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for _, _, status, n in self.table:
            c[status] += n
        return dict(c)

    def to_json(self) -> dict[str, object]:
        return {
            "manifest": str(self.manifest_path), "config": str(self.config_path),
            "status_counts": self.status_counts(),
            "rows": [dict(source=s, label=lb, status=st, count=n) for s, lb, st, n in self.table],
            "splits": self.splits, "exact_duplicates": self.exact_duplicates,
            "near_duplicate_pairs": [dict(a=a, b=b, bits=d) for a, b, d in self.near_duplicates],
            "skipped_files": self.skipped_files,
            "errors": [dict(id=i, reason=r) for i, r in self.errors],
            "merge": asdict(self.merge) if self.merge else None,
        }  # fmt: skip


def _split_counts(records: list[Record]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for label in LABELS:
        d: dict[str, int] = {}
        for split in SPLITS:
            rows = [r for r in records if r.status == "ok" and r.label == label
                    and r.split == split and not r.synthetic]  # fmt: skip
            d[split] = len(rows)
            d[f"{split}_patients"] = len({r.patient_id or r.id for r in rows})
        out[label] = d
    return out


def collect(workspace: Workspace, sources: list[str], config: CollectConfig) -> CollectResult:
    """Build WORKSPACE/manifest.csv from local copies of the sources (nothing is copied),
    holding the workspace lock (another manifest writer running: exit 7). The sources are
    read first (they lie outside the workspace): a bad one changes nothing, not even a new
    workspace folder."""
    specs, layout, test_only = _check_sources(sources, config)
    listings = [list_source(s, layout) for s in specs]
    for message in (m for listing in listings for m in listing.warnings):
        warn(message)
    return _collect(workspace, listings, test_only, config)


def _check_sources(sources: list[str],
                   config: CollectConfig) -> tuple[list[SourceSpec], CsvLayout, list[str]]:
    """The parsed sources, the csv: layout and the --test-only names, or InputError (exit 3)."""
    vassert(sources, "give at least one SOURCE, e.g. cohen:covid-chestxray-dataset")
    specs = [parse_source(s) for s in sources]
    layout = config.csv_layout()
    vassert(not layout.given or any(s.scheme == "csv" for s in specs), "the --csv-* options "
            "describe csv: sources, and none is given; write NAME=csv:PATH/metadata.csv")
    names = Counter(s.name for s in specs)
    clash = sorted(n for n, k in names.items() if k > 1)
    vassert(not clash, f"two sources are named {', '.join(clash)}; name them apart with "
                       "NAME=, e.g. nih=folder:/data/nih kaggle=folder:/data/kaggle")  # fmt: skip
    test_only = [n.strip() for n in config.test_only.split(",") if n.strip()]
    unknown = sorted(set(test_only) - set(names))
    vassert(not unknown, f"--test-only {', '.join(unknown)}: no source of that name; the "
            f"sources are named {', '.join(sorted(names))} (name one with NAME=SCHEME:PATH)")
    vassert(len(set(test_only)) < len(names), "--test-only names every source; keep at least "
            "one source for training")
    return specs, layout, test_only


@manifest_writer("cxraug collect")
def _collect(workspace: Workspace, listings: list[Listing], test_only: list[str],
             config: CollectConfig) -> CollectResult:  # fmt: skip
    old_text = ""
    if workspace.manifest_path.exists():
        vassert(config.force, f"{workspace.manifest_path} already exists; re-run with --force "
                "to rebuild it (crop boxes, extra columns, label corrections and status "
                "excluded of ids that still exist, and synthetic rows, are kept; splits and "
                "other statuses are recomputed and listed; the old file is saved as "
                "manifest.csv.bak)")  # fmt: skip
        # a folder or a FIFO named manifest.csv: exit 3, and it is left where it is
        old_text = manifest_text(workspace.manifest_path, lenient=True)
    cands = [c for listing in listings for c in listing.candidates]
    checks = _inspect(workspace, cands, config)
    records = [_to_record(c, chk, workspace, config.patient_tag)
               for c, chk in zip(cands, checks, strict=True)]  # fmt: skip
    n_dup = mark_exact_duplicates(records)
    pairs = _near_duplicates(records, checks, config.near_dup_bits)
    unjoined = assign_splits(records, [(i, j) for i, j, _ in pairs], config.test_fraction,
                             config.seed, test_only)  # fmt: skip
    if unjoined:
        warn(f"{len(unjoined)} near-duplicate pair(s) were not kept in one split (their groups "
             "grew too large): is --near-dup-bits too loose for these images?")  # fmt: skip
    merge: MergeInfo | None = None
    if old_text:
        records, merge = _merge_old(workspace, records, old_text)
    workspace.save_manifest(Manifest(records, merge.kept_extra_columns if merge else []))
    table = Counter((r.source, r.label or "-", r.status) for r in records)
    result = CollectResult(
        manifest_path=workspace.manifest_path, config_path=workspace.collect_config_path,
        table=sorted((s, lb, st, n) for (s, lb, st), n in table.items()),
        splits=_split_counts(records), exact_duplicates=n_dup,
        near_duplicates=[(records[i].id, records[j].id, d) for i, j, d in pairs],
        skipped_files={lst.spec.name: len(lst.skipped) for lst in listings if lst.skipped},
        errors=[(r.id, r.reason) for r in records if r.status == "error"], merge=merge,
    )  # fmt: skip
    for label, d in result.splits.items():
        if d["train"] and not d["test"] and config.test_fraction > 0:
            warn(f"class {label}: all {d['train']} usable images are in train; too few patient "
                 f"groups for a {config.test_fraction} test split")  # fmt: skip
    atomic_write_json(result.config_path, {
        "config": asdict(config),
        "sources": [f"{x.spec.name}={x.spec.scheme}:{x.spec.root}" for x in listings],
        "summary": result.to_json(),
    })  # fmt: skip
    return result


def _inspect(workspace: Workspace, cands: list[Candidate],
             config: CollectConfig) -> list[FileCheck]:  # fmt: skip
    """Every candidate's file check, in order (an empty check where the source refused it)."""
    # a source refuses some rows before any file is read (a metadata path leading outside it)
    readable = [i for i, c in enumerate(cands) if c.status != "error"]
    key = PatientKey(load_salt(workspace.patient_salt_path), config.patient_tag)
    found = inspect_files([cands[i].path for i in readable], workers=config.workers,
                          fast_decode=config.fast_decode, max_megapixels=config.max_megapixels,
                          max_file_mb=config.max_file_mb, show_progress=config.show_progress,
                          patient=key)  # fmt: skip
    refuse_own_failure([(chk.unexpected, chk.error) for chk in found], "collect")
    if any(chk.dicom is not None and chk.dicom.patient for chk in found):
        save_salt(workspace.patient_salt_path, key.salt)  # before any hash made with it is saved
    checks = [FileCheck()] * len(cands)
    for i, chk in zip(readable, found, strict=True):
        checks[i] = chk
    return checks


def _near_duplicates(records: list[Record], checks: list[FileCheck],
                     max_bits: int) -> list[tuple[int, int, int]]:  # fmt: skip
    """(i, j, bits) of the usable rows whose images are near-duplicates, noted on both rows."""
    ok = [i for i, r in enumerate(records) if r.status == "ok"]
    hashes = np.array([np.frombuffer(checks[i].dhash, np.uint8) for i in ok], np.uint8)
    local = near_duplicate_pairs(hashes.reshape(-1, 32), max_bits)
    pairs = [(ok[i], ok[j], d) for i, j, d in local]
    note_near_duplicates(records, pairs)
    return pairs


def _merge_old(workspace: Workspace, records: list[Record],
               old_text: str) -> tuple[list[Record], MergeInfo]:  # fmt: skip
    """`records` with the replaced manifest's edits merged in (`merge_previous`), the old text
    saved as manifest.csv.bak; an unreadable old manifest merges nothing (a warning)."""
    try:
        old = parse_manifest_text(old_text, workspace.manifest_path.name)
        records, merge = merge_previous(records, old)
    except InputError as e:
        warn(f"the existing manifest could not be read, so nothing was merged from it: {e}")
        merge = MergeInfo()
    merge.backup = str(workspace.manifest_path) + ".bak"
    atomic_write_text(Path(merge.backup), old_text)
    return records, merge


def summary_tables(result: CollectResult) -> list[Table]:
    """Rich tables for the terminal: rows per source x class x status, then the split."""
    t = Table(title="collect summary")
    for col in ("source", "class", "status", "rows"):
        t.add_column(col, justify="right" if col == "rows" else "left")
    for s, lb, st, n in result.table:
        style = {"error": "red", "duplicate": "yellow", "excluded": "dim"}.get(st, "")
        t.add_row(s, lb, st, str(n), style=style)
    sp = Table(title="split by patient")
    shown = [s for s in SPLITS if s != "external" or any(d[s] for d in result.splits.values())]
    keys = [*shown, *(f"{s}_patients" for s in shown)]
    for col in ("class", *shown, *(f"{s} patients" for s in shown)):
        sp.add_column(col, justify="left" if col == "class" else "right")
    for lb, d in result.splits.items():
        sp.add_row(lb, *(str(d[k]) for k in keys))
    return [t, sp]


def summary_lines(result: CollectResult, max_errors: int = MAX_LISTED) -> list[str]:
    """Plain-text facts to show under the tables (duplicates, skipped files, merge, errors)."""
    lines = [f"manifest: {result.manifest_path} ({sum(n for *_, n in result.table)} rows)",
             f"exact duplicates: {result.exact_duplicates} (status duplicate); near-duplicate "
             f"pairs: {len(result.near_duplicates)} (reported in the note column, kept)"]
    for src, n in result.skipped_files.items():
        lines.append(f"{src}: ignored {n} file(s) without an image name")
    m = result.merge
    if m is not None:
        lines.append(f"merged previous manifest (saved as {m.backup}): kept {m.kept_crops} crop "
                     f"box(es), {m.kept_synthetic} synthetic row(s), extra columns "
                     f"{m.kept_extra_columns or 'none'}; dropped {len(m.dropped_rows)} row(s) "
                     f"whose file is gone, {len(m.dropped_crops)} invalid crop box(es)")
        if m.kept_labels or m.kept_exclusions:
            lines.append(f"kept your edits: {len(m.kept_labels)} label(s), "
                         f"{len(m.kept_exclusions)} status excluded")  # fmt: skip
            lines += listed([f"kept label {x}" for x in m.kept_labels], max_errors)
        if m.discarded:
            lines.append(f"recomputed {len(m.discarded)} value(s) that differed from the old "
                         f"manifest (the old values are in {m.backup}):")  # fmt: skip
            lines += listed(m.discarded, max_errors, indent="  ")
    shown, more = first(result.errors, max_errors)
    lines += [f"error: {one_line(rid)}: {reason}" for rid, reason in shown]
    if more:
        lines.append(f"{more} rows with status error")
    return lines
