"""`cxraug export OUT`: the manifest's images as a training set other frameworks read unaided.

    OUT/{split}/{class}/{name}.png   one folder per split and class: what
                                     keras.utils.image_dataset_from_directory(OUT/train) and
                                     torchvision.datasets.ImageFolder(OUT/train) read
    OUT/index.csv                    one row per file: file, split, label, synthetic, source,
                                     run, checkpoint, id (the manifest's), patient_id, marks
    OUT/export-config.json           the settings, the manifest's hash, the counts

Real rows (status ok) get exactly `preprocess`'s pixels (cxraug.prep.loading reads and checks
the file, cxraug.prep.resize crops and resizes), saved as 8- or 16-bit gray PNG. Synthetic rows
are chosen by status (`ok` by default); a synthetic PNG that already is a size x size gray PNG
of the asked depth is copied byte for byte, or hard-linked with `link`; others are resized.
Rows of test-only sources (split `external`) are exported only when `splits` names external,
into OUT/external/.

The export is built in a hidden folder next to OUT and renamed into place when complete: an
interrupted export leaves OUT as it was. The hidden folders carry their process's id; one whose
process is gone (a SIGKILLed export) is removed by the next export to the same OUT, and an
earlier export caught half-way through its swap (OUT moved aside, the new one not yet in) is
put back at OUT first. An existing OUT is replaced only with `force` and only
when it is an earlier export (it holds export-config.json); any other folder is refused.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from cxraug import __version__
from cxraug.core.csvfile import write_rows
from cxraug.core.errors import ImageError, vassert
from cxraug.core.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from cxraug.core.imageheader import probe
from cxraug.core.images import (
    decode_displayed,
    encode_image,
    max_file_mb_setting,
    max_megapixels_setting,
    read_bytes,
    to_uint8,
)
from cxraug.core.manifest import LABELS, SPLITS, STATUSES, Record, is_marked
from cxraug.core.parallel import run_parallel
from cxraug.core.settings import WORKERS, Settings, setting
from cxraug.core.workspace import Workspace
from cxraug.prep.loading import ImageTask, LoadOptions, load_image
from cxraug.prep.resize import (
    jpeg_reduce_setting,
    keep_aspect_setting,
    preprocess_image,
    size_setting,
)

CONFIG_NAME = "export-config.json"
INDEX_NAME = "index.csv"
INDEX_COLUMNS = ("file", "split", "label", "synthetic", "source", "run", "checkpoint", "id",
                 "patient_id", "marks")  # fmt: skip
_SUFFIX = re.compile(r"\.(png|jpe?g|jpe|tiff?|bmp|webp|dcm|dicom)$", re.IGNORECASE)


@dataclass(frozen=True)
class ExportConfig(Settings):
    size: int = size_setting()
    keep_aspect: bool = keep_aspect_setting()
    jpeg_reduce: bool = jpeg_reduce_setting()
    bits: int = setting(8, "PNG bit depth: 8, or 16 (keeps a 12-16 bit source's precision).")
    splits: str = setting("train,test", "Comma-separated splits to export; add external for the "
                          "test-only sources' rows (written to OUT/external/).")  # fmt: skip
    classes: str = setting("", "Comma-separated classes to export (default: all).")
    sources: str = setting("", "Comma-separated sources (the manifest's source column; "
                           "generated rows: synthetic) to export (default: all).")  # fmt: skip
    statuses: str = setting("ok", "Comma-separated statuses of the synthetic rows to export "
                            "(e.g. ok,rejected); real rows are exported when ok.")  # fmt: skip
    exclude_marked: bool = setting(False, "Leave out images whose marks cell keeps them out of "
                                   "`train` (editorial marks found by preprocess).")  # fmt: skip
    link: bool = setting(False, "Hard-link synthetic PNGs that need no change instead of "
                         "copying them (copied where OUT is on another file system).")  # fmt: skip
    workers: int = setting(2, "Processes that decode and resize images.", bounds=WORKERS)
    max_megapixels: float = max_megapixels_setting()
    max_file_mb: float = max_file_mb_setting()
    verify_sha256: bool = True  # a file whose bytes changed since collect/generate is an error
    force: bool = setting(False, "Replace OUT when it holds an earlier cxraug export (never "
                          "any other folder).")  # fmt: skip
    show_progress: bool = True

    def check(self) -> None:
        # a bad choice is an InputError (exit 3) when the config is built, before OUT or the
        # manifest is touched; --sources is checked against the manifest (data) by select_rows
        vassert(self.bits in (8, 16), f"--bits {self.bits}: use 8 or 16")
        for name, known in (("splits", SPLITS), ("classes", LABELS), ("statuses", STATUSES)):
            bad = sorted(self.listed(name) - set(known))
            vassert(not bad, f"--{name} {', '.join(bad)}: unknown; use {', '.join(known)}")
            if name == "splits":
                vassert(self.listed(name), "--splits is empty; give e.g. train,test")

    def listed(self, name: str) -> set[str]:
        """The comma-separated option `name` as a set (empty = all)."""
        return {w.strip() for w in str(getattr(self, name)).split(",") if w.strip()}


@dataclass(frozen=True)
class _Task:
    """One file to write (picklable, no Record)."""

    image: ImageTask
    synthetic: bool
    dest: str  # absolute, inside the folder being built


@dataclass
class ExportResult:
    out: Path
    counts: dict[str, dict[str, int]]  # split -> class -> files
    written: int = 0
    copied: int = 0  # synthetic PNGs copied byte for byte
    linked: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d.update(out=str(self.out), errors=[{"id": i, "reason": r} for i, r in self.errors])
        return d


def file_stem(rid: str) -> str:
    """A manifest id as a safe file name: no folders, no '..', no leading dot, <= 120 chars."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", _SUFFIX.sub("", rid).replace("/", "__"))
    stem = stem.strip("._-")[:120] or "image"
    return stem


def _names(rows: list[Record]) -> list[str]:
    """Unique file names per split/class folder (case-insensitively: macOS, Windows); a name
    taken, or cut short, gets 8 hex digits of its id's hash."""
    taken: set[tuple[str, str, str]] = set()
    out = []
    for r in rows:
        stem = file_stem(r.id)
        key = (r.split, r.label, stem.lower())
        if key in taken or len(stem) == 120:
            stem += "-" + hashlib.sha256(r.id.encode()).hexdigest()[:8]
            key = (r.split, r.label, stem.lower())
        taken.add(key)
        out.append(f"{r.split}/{r.label}/{stem}.png")
    return out


def select_rows(rows: list[Record], cfg: ExportConfig) -> list[Record]:
    """The rows to export, in manifest order."""
    splits = cfg.listed("splits")
    classes = cfg.listed("classes") or set(LABELS)
    sources = cfg.listed("sources")
    known = {r.source for r in rows}
    vassert(sources <= known, f"--sources {', '.join(sorted(sources - known))}: no such source "
            f"in the manifest; its sources are {', '.join(sorted(known))}")  # fmt: skip
    statuses = cfg.listed("statuses")
    return [r for r in rows
            if r.split in splits and r.label in classes and (not sources or r.source in sources)
            and (r.status in statuses if r.synthetic else r.status == "ok")
            and not (cfg.exclude_marked and is_marked(r.marks))]  # fmt: skip


def _pixels(x: np.ndarray, bits: int) -> np.ndarray:
    """[-1, 1] -> uint8 (the quantisation `generate` saves with) or uint16."""
    if bits == 8:
        return to_uint8(x)
    return np.clip(np.rint((x + 1.0) * 32767.5), 0, 65535).astype(np.uint16)


def _as_is(data: bytes, cfg: ExportConfig) -> bool:
    """Is this synthetic file already what the export asks for (size x size gray PNG, bits)?"""
    info = probe(data)
    return (info.format, info.width, info.height, info.channels, info.bit_depth) == \
        ("PNG", cfg.size, cfg.size, 1, cfg.bits)  # fmt: skip


def _synthetic(t: _Task, cfg: ExportConfig) -> str:
    data = read_bytes(Path(t.image.path), cfg.max_file_mb)
    if cfg.verify_sha256 and t.image.sha256 and hashlib.sha256(data).hexdigest() != t.image.sha256:
        raise ImageError("file changed since generate (sha256 differs)")
    if not _as_is(data, cfg):
        d = decode_displayed(data, max_megapixels=cfg.max_megapixels)
        x = preprocess_image(d.gray, None, cfg.size, cfg.keep_aspect)
        atomic_write_bytes(Path(t.dest), encode_image(_pixels(x, cfg.bits), ".png"))
        return "written"
    if cfg.link:
        try:
            os.link(t.image.path, t.dest)
            return "linked"
        except OSError as e:  # another file system, or one without hard links: copy
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    atomic_write_bytes(Path(t.dest), data)
    return "copied"


def _export_one(t: _Task, cfg: ExportConfig) -> tuple[str, str]:
    """("written" | "copied" | "linked", "") or ("", the reason it failed)."""
    try:
        if t.synthetic:
            return _synthetic(t, cfg), ""
        opts = LoadOptions(cfg.jpeg_reduce, cfg.max_megapixels, cfg.verify_sha256,
                           cfg.max_file_mb)  # fmt: skip
        im = load_image(t.image, opts, cfg.size)
        x = preprocess_image(im.gray, im.crop, cfg.size, cfg.keep_aspect)
        atomic_write_bytes(Path(t.dest), encode_image(_pixels(x, cfg.bits), ".png"))
        return "written", ""
    except ImageError as e:
        return "", e.reason
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not stop the export
        return "", f"unexpected {type(e).__name__} while exporting: {e}"


def _crashed(t: _Task) -> tuple[str, str]:
    return "", "the worker process died on this image (e.g. out of memory); lower --workers"


def _check_out(out: Path, force: bool) -> None:
    """Refuse to touch OUT unless it is absent, empty, or (with force) an earlier export."""
    if not out.exists() and not out.is_symlink():
        return
    vassert(out.is_dir() and not out.is_symlink(), f"{out} exists and is not a folder; choose "
            "another OUT")  # fmt: skip
    if not any(out.iterdir()):
        return
    vassert((out / CONFIG_NAME).is_file(), f"{out} is a folder that holds other files, not a "
            "cxraug export; choose a new or empty folder (--force never replaces it)")
    vassert(force, f"{out} holds an earlier export; pass --force to replace it")


def _index_text(rows: list[Record], names: list[str]) -> str:
    return write_rows(INDEX_COLUMNS, (
        (name, r.split, r.label, "true" if r.synthetic else "false", r.source, r.run,
         r.checkpoint_sha256, r.id, r.patient_id, r.marks)
        for r, name in zip(rows, names, strict=True)))  # fmt: skip


def _hidden(out: Path, kind: str) -> str:
    """mkdtemp prefix of this process's hidden `kind` ("export" or "old") folder for OUT."""
    return f".{out.name}.{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_stale(out: Path) -> list[Path]:
    """Remove the hidden build and swap folders of exports to OUT whose process is gone;
    first put back an earlier export that a killed swap left aside while OUT is missing.
    Folders of live processes (a concurrent export) are left alone. Returns what was removed."""
    pat = re.compile(rf"^\.{re.escape(out.name)}\.(export|old)-(\d+)-[A-Za-z0-9_]+$")
    removed = []
    for d in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        m = pat.match(d.name)
        if not m or not d.is_dir() or d.is_symlink():
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or _alive(pid):
            continue
        if m.group(1) == "old" and (d / "x").is_dir() and not out.exists():
            os.replace(d / "x", out)  # the earlier export, back where it was
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _swap_in(built: Path, out: Path) -> None:
    """Put the complete folder `built` at `out`, removing the earlier export or empty folder."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=_hidden(out, "old"), dir=out.parent))
        os.replace(out, old / "x")
    os.replace(built, out)
    if old is not None:
        shutil.rmtree(old)


def export(ws: Workspace, out: Path, cfg: ExportConfig) -> ExportResult:
    """Write the selected manifest rows under OUT as {split}/{class}/*.png, with index.csv and
    export-config.json. The manifest is only read."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    own = (ws.root, ws.processed_dir, ws.runs_dir, ws.synthetic_dir)
    vassert(out != ws.root and not any(d == out or d in out.parents for d in own[1:]),
            f"{out} is the workspace or one of its folders; export to another folder")
    sweep_stale(out)  # before the check: a killed swap's earlier export is back at OUT
    _check_out(out, cfg.force)
    manifest = ws.load_manifest()
    rows = select_rows(manifest.records, cfg)
    vassert(rows, "no manifest row matches --splits/--classes/--sources/--statuses; nothing "
            "to export")  # fmt: skip
    names = _names(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=_hidden(out, "export"), dir=out.parent))
    try:
        splits = sorted({r.split for r in rows}, key=SPLITS.index)
        classes = [c for c in LABELS if c in (cfg.listed("classes") or set(LABELS))]
        for s in splits:  # every class folder, even empty: class indices agree across splits
            for c in classes:
                (built / s / c).mkdir(parents=True)
        tasks = [_Task(ImageTask(i, r.id, str(r.resolve(ws.root)), r.crop, r.width, r.height,
                                 r.sha256), r.synthetic, str(built / names[i]))
                 for i, r in enumerate(rows)]  # fmt: skip
        done = run_parallel(partial(_export_one, cfg=cfg), tasks, workers=cfg.workers,
                            what="export", show=cfg.show_progress, on_crash=_crashed)  # fmt: skip
        good = [i for i, (how, _) in enumerate(done) if how]
        how = Counter(h for h, _ in done if h)
        failed = [(rows[i].id, reason) for i, (h, reason) in enumerate(done) if not h]
        result = ExportResult(out, {s: {c: 0 for c in classes} for s in splits},
                              how["written"], how["copied"], how["linked"], failed)
        for i in good:
            result.counts[rows[i].split][rows[i].label] += 1
        atomic_write_text(built / INDEX_NAME, _index_text([rows[i] for i in good],
                                                          [names[i] for i in good]))
        atomic_write_json(built / CONFIG_NAME, {
            "config": asdict(cfg), "workspace": str(ws.root),
            "manifest_sha256": sha256_file(ws.manifest_path), "counts": result.counts,
            "errors": result.to_json()["errors"], "cxraug_version": __version__,
        })  # fmt: skip
        _swap_in(built, out)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return result
