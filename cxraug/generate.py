"""`cxraug generate`: synthetic images of one class from a run's checkpoint.

Image i of (checkpoint, seed) uses z_i = N(0, I) drawn from numpy's generator seeded with
(seed, i): it does not depend on -n or on the batch size. The generator runs in inference mode
(BatchNorm moving statistics) on fixed-size batches (the last one zero-padded), so image i is
also bit-identical whatever -n is. PNGs are 8-bit grayscale, written atomically to
WORKSPACE/synthetic/<class>/<run>-s<seed>-<i:06d>.png, and each gets one manifest row.

Images are made and written in batches, and the manifest is saved as it goes (every
`commit_seconds`), so a kill keeps what was committed. Each batch's PNGs are written before the
rows that name them; a journal (cxraug.core.pending) lists them first, so that a kill in between
leaves no orphan the next `generate` or `filter` does not delete. `--force` replaces the whole
(run, seed) set, rows and PNGs of an earlier, larger -n beyond the new one too: the manifest is
first saved without the old rows, then their files are deleted, so that no row ever describes
bytes that another checkpoint wrote (docs/safety.md). Before anything is written, -n is checked
against the free disk space and memory (`room_problem`).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.core import pending
from cxraug.core.dataset import real_counts, scarce_class
from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_write_bytes, atomic_write_json, sha256_bytes
from cxraug.core.images import encode_png_gray, to_uint8
from cxraug.core.manifest import LABELS, Manifest, Record, check_label
from cxraug.core.names import check_run_name
from cxraug.core.parallel import thread_pool
from cxraug.core.settings import SEED, Settings, at_least, between, setting
from cxraug.core.ui import progress
from cxraug.core.workspace import RunDir, Workspace, manifest_writer
from cxraug.gan.cells import MISSING, target_sources
from cxraug.gan.checkpoint import Checkpoint, assign_generator, choose_checkpoint
from cxraug.gan.config import TrainConfig


@dataclass(frozen=True)
class GenerateConfig(Settings):
    """Defaults of `cxraug generate` (shown by --help)."""

    label: str | None = setting(
        None, "Class to generate (normal | covid) [default: the scarce class: the one with the "
        "fewest usable real train images in the manifest].", "--class",
    )  # fmt: skip
    n: int | None = setting(None, "Number of images (or use --balance).", "-n",
                            bounds=at_least(0))  # fmt: skip
    balance: bool = setting(
        False,
        "n = usable real train images of the majority class - usable train images (real + "
        "synthetic) of --class (with --force, less the set it replaces).",
    )
    seed: int = setting(0, "Noise seed: image i uses z from (seed, i).", bounds=SEED)
    # why: the generated sets are smoother than real X-rays, and images from larger |z| carry
    # more detail; on two 56 px cascade runs the checkpoint criterion's C2ST against the
    # TRAINING images was lowest at 1.2-1.4 (docs/training.md "The resolution cascade")
    z_scale: float = setting(
        1.0, "Multiply every image's noise z by S (1: the distribution G was trained on; "
        "above 1 reaches into its tails: more varied, more detailed images).",
        bounds=between(0.0, 4.0, lo_open=True),
    )  # fmt: skip
    # why: generated sets are lower in contrast than the real X-rays, which the
    # C2ST's detail and texture blocks read as softness (cxraug.gan.intensity; measured in
    # bench/RESULTS.md "Intensity matching"). Off by default: the paper's recipe writes G's
    # images as they are
    match_intensity: bool = setting(
        False, "Map each image's grey levels onto those of the real training image of its "
        "class with the nearest grey-level distribution (histogram matching: the shapes stay "
        "G's, the contrast becomes a real image's).", "--match-intensity/--no-match-intensity",
    )  # fmt: skip
    batch_size: int = setting(256, "Images per generator batch.", bounds=at_least(1))
    # None: the newest run with a checkpoint
    run: str | None = setting(
        None, "Run name (or its folder under WORKSPACE/runs) [default: newest run]."
    )
    # None: the run's best-scored checkpoint if it has one, else its latest
    checkpoint: str | None = setting(
        None, "best | latest | a checkpoint file [default: the run's best-scored checkpoint "
        "if its checkpoints were scored, else its latest].",
    )  # fmt: skip
    force: bool = setting(False, "Replace existing PNGs/rows of the same run and seed.")
    refine: bool = setting(
        True, "Apply the run's detail refiner to every image (runs trained with --refine; "
        "--no-refine: the generator's images as they are).", "--refine/--no-refine",
    )  # fmt: skip
    # runs trained with --condition class,source only (cxraug.gan.cells, docs/training.md)
    source: str | None = setting(
        None, "Source look (runs trained with --condition class,source): a source of the run; "
        "missing = every source of the run without usable real train images of --class; all. "
        "-n/--balance is the total; image i goes to the (i mod K)-th of the K sources.",
    )  # fmt: skip
    # seconds between manifest saves while generating: a kill loses at most this long's images.
    # A save rewrites the whole manifest, so saves are also spaced by ten times the last one's
    # duration; 0 = after every batch
    commit_seconds: float = 30.0
    show_progress: bool = True

    def check(self) -> None:
        for flag, value in (("--run", self.run), ("--checkpoint", self.checkpoint)):
            if value is not None and not value.strip():
                raise InputError(f"{flag} is empty; give a run name (e.g. --run conv) or a "
                                 f"checkpoint file, or leave {flag} out for the default")


@dataclass
class GenerateResult:
    label: str
    count: int
    run: str
    checkpoint: Path
    checkpoint_sha256: str
    out_dir: Path
    paths: list[Path] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.label, "count": self.count, "run": self.run,
                "checkpoint": str(self.checkpoint), "checkpoint_sha256": self.checkpoint_sha256,
                "out_dir": str(self.out_dir), "message": self.message}  # fmt: skip


def latent(seed: int, index: int, dim: int) -> np.ndarray:
    """z for noise index `index`: a function of (seed, index) only. (dim,) float32."""
    return np.random.default_rng([seed, index]).standard_normal(dim).astype(np.float32)


def source_cells(cfg: GenerateConfig, tcfg: TrainConfig, manifest: Manifest, run: str,
                 label: str) -> tuple[tuple[str, ...], list[int]] | None:  # fmt: skip
    """(the sources images cycle through, their cells) for a source-conditioned run; None for
    a class-only run. `--source` is refused where it cannot apply, required where it must."""
    if not tcfg.sources:
        if cfg.source is not None:
            raise InputError(f"--source needs a run trained with --condition class,source; run "
                             f"{run} is conditioned on the class only: drop --source")
        return None
    if cfg.source is None:
        raise InputError(f"run {run} is conditioned on class and source: give --source NAME "
                         f"(one of {', '.join(tcfg.sources)}), {MISSING} or all")  # fmt: skip
    targets = target_sources(cfg.source, tcfg.sources, label, manifest)
    k = LABELS.index(label)
    return targets, [k * tcfg.num_sources + tcfg.sources.index(s) for s in targets]


def balance_count(manifest: Manifest, label: str, replaced: Collection[str] = ()) -> int:
    """(#usable real train rows of the majority class) - (#usable train rows of `label`), the
    rows `replaced` (ids of the set a --force run removes) not counted."""
    real = real_counts(manifest, "train")
    have = sum(r.id not in replaced  # real + synthetic already present, and staying
               for r in manifest.select(label=label, split="train"))  # fmt: skip
    return max(0, max(real.values()) - have)


#: What one more manifest row costs: bytes in manifest.csv (a synthetic row with filter's note:
#: ~330) and bytes of memory while the manifest is held and saved (~4 KiB measured with 100,000
#: rows: the records, the CSV text and the validating re-parse), with a margin.
ROW_DISK = 512
ROW_MEMORY = 6 * 1024


def png_bound(size: int) -> int:
    """At most the bytes of a size x size 8-bit gray PNG: the pixels, a filter byte per row,
    deflate's stored-block overhead (5 bytes per 64 KiB) and the chunk headers."""
    return size * (size + 1) + size * size // 8192 + 256


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:,.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:,.1f} MB"


def room_problem(n: int, size: int, rows: int, disk_free: int | None,
                 memory_free: int | None) -> str | None:  # fmt: skip
    """Why n images of size px (their PNGs and rows; the manifest holds `rows` already) do not
    fit in `disk_free` bytes of disk and `memory_free` of memory, or None (also when a free
    amount is unknown)."""
    problems = []
    disk = n * png_bound(size) + (rows + n) * ROW_DISK
    if disk_free is not None and disk > disk_free:
        problems.append(f"about {_gb(disk)} of disk for the PNGs (at most {png_bound(size):,} "
                        f"bytes each) and the manifest, but {_gb(disk_free)} are free there")
    memory = (rows + n) * ROW_MEMORY
    if memory_free is not None and memory > memory_free:
        problems.append(f"about {_gb(memory)} of memory to hold and save a manifest of "
                        f"{rows + n:,} rows, but {_gb(memory_free)} are available")
    if not problems:
        return None
    return (f"-n {n} would need " + " and ".join(problems) + "; use a smaller -n, or free "
            "space (or use a --workspace on a larger disk)")


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _own_images(ws: Workspace, manifest: Manifest, label: str,
                stem: str) -> tuple[dict[str, int], dict[Path, int]]:  # fmt: skip
    """Rows ({id: noise index}) and PNG files ({path: index}) of an earlier generate of the
    same run and seed (STEM-INDEX), in the class folder or, after filter moved them, its
    rejected/ folder; only files inside synthetic/."""
    own = re.compile(re.escape(ws.synthetic_id(label, stem)) + r"-(\d{6,})")
    rows = {r.id: int(m.group(1)) for r in manifest.records
            if r.synthetic and (m := own.fullmatch(r.id))}  # fmt: skip
    files = {r.resolve(ws.root): rows[r.id] for r in manifest.records if r.id in rows}
    name = re.compile(re.escape(stem) + r"-(\d{6,})\.png")
    for d in (ws.synthetic_class_dir(label), ws.rejected_dir(label)):
        if d.is_dir():
            files |= {p: int(m.group(1)) for p in d.iterdir() if (m := name.fullmatch(p.name))}
    inside = ws.synthetic_dir.resolve()
    return rows, {p: i for p, i in sorted(files.items()) if p.resolve().is_relative_to(inside)}


def _replace_old_set(ws: Workspace, manifest: Manifest, cfg: GenerateConfig, label: str,
                     n: int, stem: str) -> None:  # fmt: skip
    """Refuse to overwrite images of an earlier generate of the same (run, seed) without
    --force; with it, remove that whole set: its rows first (manifest saved), then its files,
    under the journal, so that no row ever describes bytes another checkpoint wrote."""
    old_rows, old_files = _own_images(ws, manifest, label, stem)
    clash = sorted(i for i in {*old_rows.values(), *old_files.values()} if i < n)
    if clash and not cfg.force:
        raise InputError(f"{len(clash)} image(s) of {stem} already exist (e.g. "
                         f"{ws.synthetic_id(label, f'{stem}-{clash[0]:06d}')}); pass --force "
                         "to make the whole set again or use another --seed")  # fmt: skip
    if old_rows or old_files:
        pending.begin(ws.generate_journal(label, stem), list(old_files))
        if old_rows:
            manifest.records = [r for r in manifest.records if r.id not in old_rows]
            ws.save_manifest(manifest)
        for p in old_files:
            p.unlink(missing_ok=True)


def _nothing_to_do(cfg: GenerateConfig, res: GenerateResult,
                   cells: tuple[tuple[str, ...], list[int]] | None) -> bool:  # fmt: skip
    """True (with res.count and res.message said) when there is nothing to generate."""
    if cells is not None and not cells[0]:  # --source missing, and none is
        res.count, res.message = 0, (f"nothing to generate: every source of run {res.run} "
                                     f"has real {res.label} train images")  # fmt: skip
    elif res.count == 0:
        res.message = (f"nothing to generate: {res.label} already matches the majority class"
                       if cfg.balance else "nothing to generate (-n 0)")  # fmt: skip
    return res.count == 0


def _check_room(ws: Workspace, out_dir: Path, n: int, size: int, rows: int) -> None:
    """InputError when n images and their rows would not fit (room_problem)."""
    disk = next(p for p in (out_dir, ws.synthetic_dir, ws.root) if p.exists())  # its file system
    problem = room_problem(n, size, rows, shutil.disk_usage(disk).free, _available_memory())
    if problem:
        raise InputError(problem)


@manifest_writer("cxraug generate")
def generate(ws: Workspace, cfg: GenerateConfig) -> GenerateResult:
    """Write cfg.n (or --balance's count of) synthetic cfg.label images (default: the scarce
    class) and their rows, holding the workspace lock (another manifest writer running:
    exit 7)."""
    manifest = ws.load_manifest()
    pending.sweep(ws, manifest)  # PNGs an interrupted generate or filter left without rows
    label = check_label(scarce_class(real_counts(manifest)) if cfg.label is None else cfg.label)
    cfg = replace(cfg, label=label)  # the saved config records the class as resolved
    run_dir, ckpt = choose_checkpoint(ws, cfg.run, cfg.checkpoint)
    # a longer (older) run name makes too long image names
    tcfg, run = ckpt.config, check_run_name(run_dir.name)
    if LABELS.index(label) >= tcfg.num_classes:
        raise InputError(f"run {run} was trained on {tcfg.num_classes} class(es); "
                         f"it cannot generate {label!r}")  # fmt: skip
    cells = source_cells(cfg, tcfg, manifest, run, label)
    refiner = _refiner_file(cfg, tcfg, run_dir, run)  # before anything is written
    refs = _intensity_references(ws, tcfg, label) if cfg.match_intensity else None
    stem = f"{run}-s{cfg.seed}"
    # --force replaces this (run, seed) set: its rows do not count towards the balance
    replaced = _own_images(ws, manifest, label, stem)[0] if cfg.force else {}
    n = balance_count(manifest, label, replaced) if cfg.balance else cfg.n
    if n is None or n < 0:
        raise InputError("give -n COUNT (>= 0) or --balance")
    out_dir = ws.synthetic_class_dir(label)
    res = GenerateResult(label, n, run, ckpt.path, ckpt.sha256, out_dir)
    if _nothing_to_do(cfg, res, cells):
        return res
    _check_room(ws, out_dir, n, tcfg.image_size * tcfg.enlarge, len(manifest))
    _replace_old_set(ws, manifest, cfg, label, n, stem)
    group = _write_images(ws, manifest, cfg, label, n, stem, ws.run_ref(run_dir), ckpt, cells,
                          res.paths, refiner, refs)  # fmt: skip
    pending.end(ws.generate_journal(label, stem))
    resolved = {**asdict(cfg), "n": n, "run": run, "checkpoint": str(ckpt.path),
                "checkpoint_sha256": ckpt.sha256,
                "generator": "ema" if group == "ema" else "trained",
                "refiner": str(refiner.path) if refiner else None,
                "refiner_sha256": refiner.sha256 if refiner else None,
                "intensity_references": len(refs[0]) if refs else None,
                **({"sources": list(cells[0])} if cells else {}),
                "train_config": tcfg.to_dict()}  # fmt: skip
    atomic_write_json(ws.generate_config_path(label, stem), resolved)
    res.message = f"wrote {n} {label} image(s) to {out_dir}"
    if cells:  # image i has the (i mod K)-th source's look
        k = len(cells[0])
        res.message += " (" + ", ".join(f"{n // k + (j < n % k)} in the look of {s}"
                                        for j, s in enumerate(cells[0])) + ")"  # fmt: skip
    return res


def _refiner_file(cfg: GenerateConfig, tcfg: TrainConfig, run_dir: RunDir,
                  run: str) -> Any:  # fmt: skip
    """The run's finished refiner file (cxraug.gan.refine.RefinerFile) when --refine is on
    and the run has one, else None. A run asks for one when its checkpoint's or its
    config.json's `refine` is > 0 (`train --resume RUN --refine N` adds a refiner to a
    finished run: then only config.json says so); a missing or unfinished one is an error,
    since generating without it would silently give other images than the run's."""
    if not cfg.refine:
        return None
    from cxraug.gan.refine import find_latest  # TensorFlow: not for --help

    wanted = tcfg.refine
    try:
        wanted = max(wanted, TrainConfig.from_json(run_dir.config_path.read_text()).refine)
    except (OSError, InputError):  # no (readable) config.json: the checkpoint's says
        pass
    f = find_latest(run_dir.path)
    if f is not None and int(f.meta.get("enlarge", 1)) != tcfg.enlarge:
        raise InputError(f"run {run}'s refiner file {f.path.name} was trained for --enlarge "
                         f"{f.meta.get('enlarge', 1)}, the run's generator for --enlarge "
                         f"{tcfg.enlarge}; move the run's refiner/ folder away and train it "
                         f"again with `cxraug train --resume {run} --refine N`")  # fmt: skip
    if f is not None and f.done and int(f.meta["iteration"]) >= wanted:
        return f
    if wanted > 0:
        at = "has no refiner file" if f is None else \
            f"has its refiner at iteration {f.meta['iteration']} of {f.meta['iterations']}"
        raise InputError(f"run {run} was trained with --refine {wanted} but {at}: finish it "
                         f"with `cxraug train --resume {run}`, or pass --no-refine for the "
                         "generator's images as they are")  # fmt: skip
    return None


def _intensity_references(ws: Workspace, tcfg: TrainConfig, label: str
                          ) -> tuple[list[str], np.ndarray]:  # fmt: skip
    """(ids, (N, LEVELS) grey-level quantiles) of the run's training images of `label`, the
    references of --match-intensity (cxraug.gan.intensity): the dataset's train split as the
    run trained on it (marked images left out unless it included them, its --cues applied)."""
    from cxraug.gan import intensity
    from cxraug.gan.trainset import training_set

    ds = training_set(ws.dataset_path, tcfg.include_marked, tcfg.cue_steps)[0]
    ds = ds.subset(label=label)
    if len(ds) == 0:
        raise InputError(f"--match-intensity needs real training images of {label}, and the "
                         f"dataset has none the run could train on; re-run `cxraug preprocess` "
                         f"or leave --match-intensity out")  # fmt: skip
    return [str(i) for i in ds.ids], intensity.quantiles(ds.images)


def _write_images(ws: Workspace, manifest: Manifest, cfg: GenerateConfig, label: str, n: int,
                  stem: str, run_ref: str, ckpt: Checkpoint,
                  cells: tuple[tuple[str, ...], list[int]] | None,
                  written: list[Path], refiner_file: Any = None,
                  refs: tuple[list[str], np.ndarray] | None = None) -> str:  # fmt: skip
    """Make images 0..n-1 of `label` batch by batch: journal, PNGs, then (every
    cfg.commit_seconds and at the end) the manifest with their rows; `cells`: source_cells'
    (sources, cells) or None; `refiner_file`: the run's refiner (cxraug.gan.refine), applied
    to each image with that image's own noise map, or None; `refs`: _intensity_references'
    (ids, quantiles) for --match-intensity, or None. Appends the paths to `written`;
    returns the generator group used ("ema" or the trained one)."""
    # TensorFlow loads here, not when the CLI imports GenerateConfig for --help
    from cxraug.core.tf_setup import tf
    from cxraug.gan import intensity, refine
    from cxraug.gan.arch import build_generator

    tcfg = ckpt.config
    gen = build_generator(tcfg)  # the run's resolved config: same architecture and precision
    group = assign_generator(gen, ckpt)  # the EMA generator when the run kept one
    y_idx = LABELS.index(label)
    infer = tf.function(lambda z, y: gen([z, y], training=False))
    refiner = refine.load_refiner(refiner_file) if refiner_file is not None else None
    side = tcfg.image_size * tcfg.enlarge  # what the images are written at: the dataset's
    note = f"refined: {refiner_file.path.name} sha256 {refiner_file.sha256[:16]}" \
        if refiner_file is not None else ""
    if tcfg.enlarge > 1:  # --enlarge K: G's images are K times smaller than the dataset's
        how = "the learnt enlargement" if refiner is not None else "bilinearly (--no-refine)"
        note = f"enlarged {tcfg.enlarge}x {how}" + (f"; {note}" if note else "")
    bs, journal = cfg.batch_size, ws.generate_journal(label, stem)
    todo: list[Record] = []  # written, not yet in the saved manifest
    last, cost = time.monotonic(), 0.0
    # PNG encoding and writing release the GIL: one thread per CPU (cxraug.core.parallel)
    with thread_pool() as pool, \
            progress(disable=not cfg.show_progress) as bar:  # fmt: skip
        task = bar.add_task(f"generating {label}", total=n)
        for lo in range(0, n, bs):
            hi = min(n, lo + bs)
            paths = [ws.synthetic_png(label, f"{stem}-{i:06d}") for i in range(lo, hi)]
            pending.begin(journal, [*(r.resolve(ws.root) for r in todo), *paths])
            z = np.zeros((bs, tcfg.latent_dim), np.float32)  # zero-padded: fixed batch shape
            z[: hi - lo] = cfg.z_scale * np.stack(
                [latent(cfg.seed, i, tcfg.latent_dim) for i in range(lo, hi)])
            y = (tf.fill((bs,), y_idx) if cells is None  # a cell per image: (i mod K)-th source
                 else tf.constant([cells[1][i % len(cells[1])] for i in range(lo, lo + bs)]))
            raw = infer(tf.constant(z), y).numpy()[..., 0]  # (bs, H, W): fixed batch shape
            if tcfg.enlarge > 1:  # the enlargement's input, as it was trained (refine.degraded)
                raw = refine.enlarge_bilinear(raw, side)
            if refiner is not None:  # the padding rows get noise too: the same batch shape
                raw = refine.apply(refiner, raw, np.stack(
                    [refine.image_noise(cfg.seed, i, side) for i in range(lo, lo + bs)]))
            ref: list[int] = []  # each image's reference (--match-intensity)
            if refs is not None:  # last: the grey levels of the finished image
                ref = list(intensity.nearest(intensity.quantiles(raw[: hi - lo]), refs[1]))
                raw = intensity.match(raw[: hi - lo], refs[1][ref])
            imgs = to_uint8(raw[: hi - lo])
            pngs = list(pool.map(encode_png_gray, imgs))
            list(pool.map(atomic_write_bytes, paths, pngs))
            for i, p, data in zip(range(lo, hi), paths, pngs, strict=True):
                grey = f"grey levels matched to {refs[0][ref[i - lo]]}" if refs else ""
                todo.append(Record(
                    id=ws.synthetic_id(label, p.stem), path=ws.relpath(p), label=label,
                    split="train", status="ok", source="synthetic", sha256=sha256_bytes(data),
                    width=side, height=side, synthetic=True, run=run_ref,
                    checkpoint_sha256=ckpt.sha256, seed=cfg.seed, noise_index=i,
                    cond_source=cells[0][i % len(cells[0])] if cells else "",
                    note="; ".join(t for t in (note, grey) if t),
                ))  # fmt: skip
            written += paths
            bar.advance(task, hi - lo)
            spacing = max(cfg.commit_seconds, 10 * cost) if cfg.commit_seconds > 0 else 0.0
            if hi == n or time.monotonic() - last >= spacing:
                t0 = time.monotonic()
                manifest.records += todo
                ws.save_manifest(manifest)
                todo, last = [], time.monotonic()
                cost = last - t0
    return group
