"""`cxraug generate`: synthetic images of one class from a run's checkpoint.

Image i of (checkpoint, seed) uses z_i = N(0, I) drawn from numpy's generator seeded with
(seed, i): it does not depend on -n or on the batch size. The generator runs in inference mode
(BatchNorm moving statistics) on fixed-size batches (the last one zero-padded), so image i is
also bit-identical whatever -n is. PNGs are 8-bit grayscale, written atomically to
WORKSPACE/synthetic/<class>/<run>-s<seed>-<i:06d>.png, and each gets one manifest row.

The PNGs are written before their rows (one manifest write per run); a journal
(cxraug.core.pending) lists them first, so that a crash in between leaves no orphan the next
`generate` or `filter` does not delete. `--force` replaces the whole (run, seed) set: rows and
PNGs of an earlier, larger -n beyond the new one are removed too.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.core import pending
from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_write_bytes, atomic_write_json, sha256_bytes
from cxraug.core.images import encode_png_gray, to_uint8
from cxraug.core.manifest import LABELS, Manifest, Record, check_label
from cxraug.core.settings import SEED, Settings, at_least, setting
from cxraug.core.workspace import Workspace, check_run_name, manifest_writer
from cxraug.gan.cells import MISSING, target_sources
from cxraug.gan.checkpoint import assign_generator, find_best, find_latest, read_checkpoint
from cxraug.gan.config import TrainConfig


@dataclass(frozen=True)
class GenerateConfig(Settings):
    """Defaults of `cxraug generate` (shown by --help)."""

    label: str = setting("covid", "Class to generate (normal | covid).", "--class")
    n: int | None = setting(None, "Number of images (or use --balance).", "-n",
                            bounds=at_least(0))  # fmt: skip
    balance: bool = setting(
        False,
        "n = usable real train images of the majority class - usable train images (real + "
        "synthetic) of --class.",
    )
    seed: int = setting(0, "Noise seed: image i uses z from (seed, i).", bounds=SEED)
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
    # runs trained with --condition class,source only (cxraug.gan.cells, docs/training.md)
    source: str | None = setting(
        None, "Source look (runs trained with --condition class,source): a source of the run; "
        "missing = every source of the run without usable real train images of --class; all. "
        "-n/--balance is the total; image i goes to the (i mod K)-th of the K sources.",
    )  # fmt: skip

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


def source_cells(cfg: GenerateConfig, tcfg: TrainConfig, manifest: Manifest,
                 run: str) -> tuple[tuple[str, ...], list[int]] | None:  # fmt: skip
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
    targets = target_sources(cfg.source, tcfg.sources, cfg.label, manifest)
    k = LABELS.index(cfg.label)
    return targets, [k * tcfg.num_sources + tcfg.sources.index(s) for s in targets]


def balance_count(manifest: Manifest, label: str) -> int:
    """(#usable real train rows of the majority class) - (#usable train rows of `label`)."""
    real = {c: len(manifest.select(label=c, split="train", synthetic=False)) for c in LABELS}
    have = len(manifest.select(label=label, split="train"))  # real + synthetic already present
    return max(0, max(real.values()) - have)


def _older_images(ws: Workspace, manifest: Manifest, label: str, stem: str,
                  keep: set[str]) -> tuple[set[str], list[Path]]:  # fmt: skip
    """Rows (ids) and PNG files of an earlier generate of the same run and seed (STEM-INDEX)
    that this one does not rewrite: the tail of a larger -n, also after filter moved them."""
    own = re.compile(re.escape(ws.synthetic_id(label, stem)) + r"-\d{6}")
    rows = [r for r in manifest.records if r.synthetic and own.fullmatch(r.id) and r.id not in keep]
    files = {r.resolve(ws.root) for r in rows}
    name = re.compile(re.escape(stem) + r"-\d{6}\.png")
    for d in (ws.synthetic_class_dir(label), ws.rejected_dir(label)):
        if d.is_dir():
            files |= {p for p in d.iterdir() if name.fullmatch(p.name)}
    keep_files = {ws.synthetic_png(label, i.rsplit("/", 1)[1]) for i in keep}
    inside = ws.synthetic_dir.resolve()
    files = {p for p in files if p not in keep_files and p.resolve().is_relative_to(inside)}
    return {r.id for r in rows}, sorted(files)


@manifest_writer("cxraug generate")
def generate(ws: Workspace, cfg: GenerateConfig) -> GenerateResult:
    """Write cfg.n (or --balance's count of) synthetic cfg.label images and their rows,
    holding the workspace lock (another manifest writer running: exit 7)."""
    check_label(cfg.label)
    pending.sweep(ws)  # PNGs an interrupted generate wrote but never gave rows
    manifest = ws.load_manifest()
    if cfg.checkpoint not in (None, "best", "latest"):
        ckpt_path = Path(str(cfg.checkpoint))
        run_dir = ws.run_of_checkpoint(ckpt_path)
    else:
        run_dir = ws.find_run(cfg.run) if cfg.run is not None else ws.newest_run()
        # default: the best-scored checkpoint when the run scored its checkpoints
        found = find_best(run_dir) if cfg.checkpoint != "latest" else None
        if found is None and cfg.checkpoint == "best":
            raise InputError(f"run {run_dir.path} has no scored best checkpoint (train with "
                             "--score-samples N); use --checkpoint latest")  # fmt: skip
        found = found or find_latest(run_dir)
        if found is None:
            raise InputError(f"run {run_dir.path} has no usable checkpoint; train it "
                             "longer (checkpoints every --checkpoint-interval)")
        ckpt_path = found
    ckpt = read_checkpoint(ckpt_path)
    tcfg = ckpt.config
    run = check_run_name(run_dir.name)  # a longer (older) run name makes too long image names
    if LABELS.index(cfg.label) >= tcfg.num_classes:
        raise InputError(f"run {run} was trained on {tcfg.num_classes} class(es); "
                         f"it cannot generate {cfg.label!r}")  # fmt: skip
    cells = source_cells(cfg, tcfg, manifest, run)
    n = balance_count(manifest, cfg.label) if cfg.balance else cfg.n
    if n is None or n < 0:
        raise InputError("give -n COUNT (>= 0) or --balance")
    out_dir = ws.synthetic_class_dir(cfg.label)
    res = GenerateResult(cfg.label, n, run, ckpt.path, ckpt.sha256, out_dir)
    if cells is not None and not cells[0]:  # --source missing, and none is
        res.count, res.message = 0, (f"nothing to generate: every source of run {run} has real "
                                     f"{cfg.label} train images")  # fmt: skip
        return res
    if n == 0:
        res.message = (f"nothing to generate: {cfg.label} already matches the majority class"
                       if cfg.balance else "nothing to generate (-n 0)")  # fmt: skip
        return res
    stem = f"{run}-s{cfg.seed}"
    ids = [ws.synthetic_id(cfg.label, f"{stem}-{i:06d}") for i in range(n)]
    paths = [ws.synthetic_png(cfg.label, f"{stem}-{i:06d}") for i in range(n)]
    have = manifest.ids()  # a set: one lookup per id
    clash = [str(p) for p in paths if p.exists()] + [i for i in ids if i in have]
    if clash and not cfg.force:
        raise InputError(f"{len(clash)} image(s) of {stem} already exist (e.g. {clash[0]}); "
                         "pass --force to replace them or use another --seed")  # fmt: skip
    # --force replaces the whole (run, seed) set: a smaller -n must not leave the old tail
    stale_rows, stale_files = _older_images(ws, manifest, cfg.label, stem, set(ids))
    journal = ws.generate_journal(cfg.label, stem)
    pending.begin(journal, [*paths, *stale_files])

    # TensorFlow loads here, not when the CLI imports GenerateConfig for --help
    from cxraug.core.tf_setup import tf
    from cxraug.gan.models import build_generator

    gen = build_generator(tcfg)  # the run's resolved config: same architecture and precision
    group = assign_generator(gen, ckpt)  # the EMA generator when the run kept one
    y_idx = LABELS.index(cfg.label)
    infer = tf.function(lambda z, y: gen([z, y], training=False))
    bs = cfg.batch_size
    records: list[Record] = []
    with ThreadPoolExecutor(max_workers=4) as pool:  # PNG encode/write overlaps the next batch
        for lo in range(0, n, bs):
            hi = min(n, lo + bs)
            z = np.zeros((bs, tcfg.latent_dim), np.float32)  # zero-padded: fixed batch shape
            z[: hi - lo] = np.stack([latent(cfg.seed, i, tcfg.latent_dim) for i in range(lo, hi)])
            y = (tf.fill((bs,), y_idx) if cells is None  # a cell per image: (i mod K)-th source
                 else tf.constant([cells[1][i % len(cells[1])] for i in range(lo, lo + bs)]))
            imgs = to_uint8(infer(tf.constant(z), y).numpy()[: hi - lo, ..., 0])
            pngs = list(pool.map(encode_png_gray, imgs))
            list(pool.map(atomic_write_bytes, paths[lo:hi], pngs))
            for i, data in zip(range(lo, hi), pngs, strict=True):
                records.append(Record(
                    id=ids[i], path=ws.relpath(paths[i]), label=cfg.label, split="train",
                    status="ok", source="synthetic", sha256=sha256_bytes(data),
                    width=tcfg.image_size, height=tcfg.image_size, synthetic=True,
                    run=ws.run_ref(run_dir), checkpoint_sha256=ckpt.sha256, seed=cfg.seed,
                    noise_index=i, cond_source=cells[0][i % len(cells[0])] if cells else "",
                ))  # fmt: skip
    new_ids = {r.id for r in records} | stale_rows
    manifest.records = [r for r in manifest.records if r.id not in new_ids] + records
    ws.save_manifest(manifest)
    for p in stale_files:  # no row names them now
        p.unlink(missing_ok=True)
    pending.end(journal)
    resolved = {**asdict(cfg), "n": n, "run": run, "checkpoint": str(ckpt.path),
                "checkpoint_sha256": ckpt.sha256,
                "generator": "ema" if group == "ema" else "trained",
                **({"sources": list(cells[0])} if cells else {}),
                "train_config": tcfg.to_dict()}  # fmt: skip
    atomic_write_json(ws.generate_config_path(cfg.label, stem), resolved)
    res.paths = paths
    res.message = f"wrote {n} {cfg.label} image(s) to {out_dir}"
    if cells:
        res.message += " (" + ", ".join(f"{sum(r.cond_source == s for r in records)} in the look "
                                        f"of {s}" for s in cells[0]) + ")"  # fmt: skip
    return res
