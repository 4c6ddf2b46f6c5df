"""`cxraug collect`: record the images of local dataset copies in the workspace manifest.

Nothing is copied: each manifest row points at the file where it lies. Pipeline:
    sources.list_source (metadata/folder rules) -> inspect every file in 2 processes (sha256,
    size, full decode check, 256-bit difference hash) -> exact duplicates -> near-duplicates
    (reported, not removed) -> train/test split by patient group -> merge user edits -> write.

Split groups are connected components linking rows that share a patient id, a file (metadata
rows naming the same file), exact bytes, or a near-duplicate image: whatever could leak one
patient's image from the training set into the test set ends up on one side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table

from cxraug.core.dicom import PatientKey, load_salt, parse_tag, save_salt
from cxraug.core.errors import MAX_LISTED, InputError, vassert
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
    crop_box_problem,
    parse_manifest_text,
)
from cxraug.core.settings import setting
from cxraug.core.ui import warn
from cxraug.core.workspace import Workspace, manifest_writer
from cxraug.prep.csvsource import CSV_OPTIONS, CsvLayout, csv_setting
from cxraug.prep.inspect import FileCheck, inspect_files
from cxraug.prep.sources import (
    Candidate,
    dicom_note,
    list_source,
    parse_source,
    patient_from_name,
)


@dataclass(frozen=True)
class CollectConfig:
    test_fraction: float = setting(
        0.2, "Share of each class put in the test split, by patient."
    )
    seed: int = setting(0, "Seed of the patient-level train/test split.")  # np.random.default_rng
    workers: int = setting(2, "Processes that hash and decode files.")
    near_dup_bits: int = setting(
        14,
        "Report image pairs whose 256-bit dHash differ in at most this many bits as "
        "near-duplicates (kept, noted; kept in one split).",
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


def _add_note(r: Record, note: str) -> None:
    r.note = f"{r.note}; {note}" if r.note else note


def mark_exact_duplicates(records: list[Record]) -> int:
    """The first usable row of each sha256 stays ok, later usable copies become `duplicate`."""
    first: dict[str, Record] = {}
    n = 0
    for r in records:
        if not r.sha256 or r.status != "ok":
            continue
        keep = first.setdefault(r.sha256, r)
        if keep is not r:
            reason = f"duplicate of {keep.id}"
            if keep.label != r.label:
                reason += f" (labelled {keep.label} there, {r.label} here)"
                _add_note(keep, f"same file labelled {r.label} in {r.id}")
            r.set_status("duplicate", reason)
            n += 1
    return n


def _words(hashes: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The hashes as machine words and a popcount for them. np.bitwise_count (numpy >= 2.0) on
    64-bit words; on numpy 1.26 (which TensorFlow 2.16/2.17 need) a 16-bit lookup table."""
    h = np.ascontiguousarray(hashes, np.uint8)
    if _bitwise_count is not None:
        return h.view(">u8"), _bitwise_count  # (N, 4)
    return h.view(">u2"), _POPCOUNT16.__getitem__  # (N, 16)


_bitwise_count: Callable[[np.ndarray], np.ndarray] | None = getattr(np, "bitwise_count", None)
_POPCOUNT16 = np.unpackbits(np.arange(1 << 16, dtype=">u2").view(np.uint8).reshape(-1, 2),
                            axis=1).sum(1).astype(np.uint8)  # (65536,) set bits  # fmt: skip


def near_duplicate_pairs(
    hashes: np.ndarray, max_bits: int, block: int = 512
) -> list[tuple[int, int, int]]:
    """(i, j, distance) with i < j for rows of `hashes` ((N, 32) uint8) within max_bits."""
    h, popcount = _words(hashes)
    out: list[tuple[int, int, int]] = []
    for s in range(0, len(h), block):
        d = np.zeros((min(block, len(h) - s), len(h)), np.int32)  # (B, N) Hamming distances
        for k in range(h.shape[1]):
            d += popcount(h[s : s + block, k, None] ^ h[None, :, k])
        for i, j in zip(*np.nonzero(d <= max_bits), strict=True):
            if s + i < j:
                out.append((int(s + i), int(j), int(d[i, j])))
    return out


class _Groups:
    """Union-find over row indices."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int, max_size: int | None = None) -> bool:
        a, b = self.find(i), self.find(j)
        if a == b or (max_size is not None and self.size[a] + self.size[b] > max_size):
            return a == b
        self.parent[a] = b
        self.size[b] += self.size[a]
        return True

    def link_equal(self, keys: Iterable[str]) -> None:
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k:
                self.union(i, first.setdefault(k, i))


def assign_splits(records: list[Record], pairs: Iterable[tuple[int, int]], test_fraction: float,
                  seed: int, test_only: Iterable[str] = ()) -> list[tuple[int, int]]:  # fmt: skip
    """Set `split` on ok rows, by patient group, stratified by class; clear it on other rows.

    Rows of a `test_only` source get split external. A patient group that holds one of them
    never reaches train: its other rows go to test, so no image of a test-only patient (same
    patient id, same bytes, a near-duplicate) can be trained on.

    Per class, the groups are shuffled (seeded) and each is put in test while that brings the
    test image count closer to round(fraction * images); the rest go to train. Near-duplicate
    pairs join groups only up to max(20, 2% of rows) rows, so that a too-loose threshold cannot
    glue the whole dataset into one group. Returns the pairs that could not be joined."""
    g = _Groups(len(records))
    g.link_equal(r.patient_id for r in records)
    g.link_equal(r.sha256 for r in records)
    g.link_equal(r.path for r in records)
    cap = max(20, len(records) // 50)
    unjoined = [(i, j) for i, j in pairs if not g.union(i, j, max_size=cap)]
    members: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        r.split = ""
        if r.status == "ok":
            members.setdefault(g.find(i), []).append(i)
    external = set(test_only)
    groups = []
    for m in sorted(members.values(), key=lambda m: min(records[i].id for i in m)):
        if any(records[i].source in external for i in m):
            for i in m:
                records[i].split = "external" if records[i].source in external else "test"
        else:
            groups.append(m)
    for k, label in enumerate(LABELS):
        # a group's class is its majority (ties: the scarce covid class)
        mine = [m for m in groups
                if max(LABELS, key=lambda lb: (sum(records[i].label == lb for i in m),
                                               LABELS.index(lb))) == label]  # fmt: skip
        target = round(test_fraction * sum(len(m) for m in mine))
        rng = np.random.default_rng([seed, k])  # one stream per class: classes independent
        n_test = 0
        for gi in rng.permutation(len(mine)):
            m = mine[gi]
            to_test = n_test < target and abs(n_test + len(m) - target) <= abs(target - n_test)
            n_test += len(m) if to_test else 0
            for i in m:
                records[i].split = "test" if to_test else "train"
    return unjoined


@dataclass
class MergeInfo:
    """What a `--force` rebuild carried over from the manifest it replaced."""

    backup: str = ""
    kept_crops: int = 0
    dropped_crops: list[str] = field(default_factory=list)
    kept_synthetic: int = 0
    kept_extra_columns: list[str] = field(default_factory=list)
    dropped_rows: list[str] = field(default_factory=list)
    kept_labels: list[str] = field(default_factory=list)  # "id: old (collect says new)"
    kept_exclusions: list[str] = field(default_factory=list)  # ids
    discarded: list[str] = field(default_factory=list)  # "id: split test -> train", ...


def merge_previous(records: list[Record], old: Manifest) -> tuple[list[Record], MergeInfo]:
    """Keep the user's edits of surviving ids and all synthetic rows; list what is recomputed.

    Kept: crop box, extra columns, a label that differs from what collect reads from the
    source (a correction), status `excluded` where collect now says ok (a person's decision to
    leave an image out outweighs a re-scan). Recomputed, and listed in `discarded`: the split
    (re-drawn by patient group, so a patient never lands on both sides, which kept old splits
    could cause once sources change) and any other status (error, duplicate: facts of the
    files, re-checked now)."""
    info = MergeInfo(kept_extra_columns=list(old.extra_columns))
    new_by_id = {r.id: r for r in records}
    out = list(records)
    for o in old:
        n = new_by_id.get(o.id)
        if o.synthetic and n is None:
            out.append(o)
            info.kept_synthetic += 1
        elif n is None:
            info.dropped_rows.append(o.id)
            continue
        else:
            n.extra = dict(o.extra)
            if o.label and o.label != n.label and n.status == "ok":
                info.kept_labels.append(f"{o.id}: {o.label} (collect says {n.label or '-'})")
                n.label = o.label
            if o.status == "excluded" and n.status == "ok":
                n.set_status("excluded", o.reason)
                info.kept_exclusions.append(o.id)
            elif o.status != n.status:
                info.discarded.append(f"{o.id}: status {o.status} -> {n.status}")
            if o.split and n.split and o.split != n.split:
                info.discarded.append(f"{o.id}: split {o.split} -> {n.split}")
            if o.crop is not None:
                problem = crop_box_problem(o.crop, n.width, n.height)
                if problem:
                    info.dropped_crops.append(f"{o.id}: {problem}")
                    _add_note(n, f"previous crop box dropped: {problem}")
                else:
                    n.crop = o.crop
                    info.kept_crops += 1
    return out, info


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


def _note_near_duplicates(records: list[Record], pairs: list[tuple[int, int, int]]) -> None:
    per_row: dict[int, list[str]] = {}
    for i, j, d in pairs:
        per_row.setdefault(i, []).append(f"{records[j].id} ({d}/256 bits)")
        per_row.setdefault(j, []).append(f"{records[i].id} ({d}/256 bits)")
    for i, others in per_row.items():
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        _add_note(records[i], "near-duplicate of " + ", ".join(others[:3]) + more)


@manifest_writer("cxraug collect")
def collect(workspace: Workspace, sources: list[str], config: CollectConfig) -> CollectResult:
    """Build WORKSPACE/manifest.csv from local copies of the sources (nothing is copied),
    holding the workspace lock (another manifest writer running: exit 7)."""
    vassert(sources, "give at least one SOURCE, e.g. cohen:covid-chestxray-dataset")
    vassert(0.0 <= config.test_fraction < 1.0,
            f"--test-fraction {config.test_fraction} must be in [0, 1), e.g. 0.2")  # fmt: skip
    vassert(config.workers >= 1, f"--workers {config.workers} must be at least 1")
    vassert(config.max_file_mb > 0 and config.max_megapixels > 0,
            "--max-file-mb and --max-megapixels must be positive")  # fmt: skip
    vassert(0 <= config.near_dup_bits <= 256, "near_dup_bits must be in [0, 256]")
    if config.patient_tag != "PatientID":
        parse_tag(config.patient_tag)  # a bad tag: InputError before any file is read
    specs = [parse_source(s) for s in sources]
    layout = CsvLayout.parse(**{k: getattr(config, f"csv_{k}") for k in CSV_OPTIONS})
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
    old_text = ""
    if workspace.manifest_path.exists():
        vassert(config.force, f"{workspace.manifest_path} already exists; re-run with --force "
                "to rebuild it (crop boxes, extra columns, label corrections and status "
                "excluded of ids that still exist, and synthetic rows, are kept; splits and "
                "other statuses are recomputed and listed; the old file is saved as "
                "manifest.csv.bak)")  # fmt: skip
        old_text = workspace.manifest_path.read_text(encoding="utf-8", errors="replace")
    listings = [list_source(s, layout) for s in specs]
    for message in (m for listing in listings for m in listing.warnings):
        warn(message)
    cands = [c for listing in listings for c in listing.candidates]
    # a source refuses some rows before any file is read (a metadata path leading outside it)
    readable = [i for i, c in enumerate(cands) if c.status != "error"]
    key = PatientKey(load_salt(workspace.patient_salt_path), config.patient_tag)
    found = inspect_files([cands[i].path for i in readable], workers=config.workers,
                          fast_decode=config.fast_decode, max_megapixels=config.max_megapixels,
                          max_file_mb=config.max_file_mb, show_progress=config.show_progress,
                          patient=key)  # fmt: skip
    if any(chk.dicom is not None and chk.dicom.patient for chk in found):
        save_salt(workspace.patient_salt_path, key.salt)  # before any hash made with it is saved
    checks = [FileCheck()] * len(cands)
    for i, chk in zip(readable, found, strict=True):
        checks[i] = chk
    records = [_to_record(c, chk, workspace, config.patient_tag)
               for c, chk in zip(cands, checks, strict=True)]  # fmt: skip
    n_dup = mark_exact_duplicates(records)
    ok = [i for i, r in enumerate(records) if r.status == "ok"]
    hashes = np.array([np.frombuffer(checks[i].dhash, np.uint8) for i in ok], np.uint8)
    local = near_duplicate_pairs(hashes.reshape(-1, 32), config.near_dup_bits)
    pairs = [(ok[i], ok[j], d) for i, j, d in local]
    _note_near_duplicates(records, pairs)
    unjoined = assign_splits(records, [(i, j) for i, j, _ in pairs], config.test_fraction,
                             config.seed, test_only)  # fmt: skip
    if unjoined:
        warn(f"{len(unjoined)} near-duplicate pair(s) were not kept in one split (their groups "
             "grew too large): is --near-dup-bits too loose for these images?")  # fmt: skip
    merge: MergeInfo | None = None
    extra_columns: list[str] = []
    if old_text:
        try:
            old = parse_manifest_text(old_text, workspace.manifest_path.name)
            records, merge = merge_previous(records, old)
            extra_columns = merge.kept_extra_columns
        except InputError as e:
            warn(f"the existing manifest could not be read, so nothing was merged from it: {e}")
            merge = MergeInfo()
        merge.backup = str(workspace.manifest_path) + ".bak"
        atomic_write_text(Path(merge.backup), old_text)
    manifest = Manifest(records, extra_columns)
    workspace.save_manifest(manifest)
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
        "config": asdict(config), "sources": [f"{s.name}={s.scheme}:{s.root}" for s in specs],
        "summary": result.to_json(),
    })  # fmt: skip
    return result


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
            lines += [f"kept label {x}" for x in m.kept_labels[:max_errors]]
        if m.discarded:
            lines.append(f"recomputed {len(m.discarded)} value(s) that differed from the old "
                         f"manifest (the old values are in {m.backup}):")  # fmt: skip
            lines += [f"  {x}" for x in m.discarded[:max_errors]]
            if len(m.discarded) > max_errors:
                lines.append(f"  ... and {len(m.discarded) - max_errors} more")
    for rid, reason in result.errors[:max_errors]:
        lines.append(f"error: {rid}: {reason}")
    if result.n_errors > max_errors:
        lines.append(f"... and {result.n_errors - max_errors} more rows with status error")
    return lines
