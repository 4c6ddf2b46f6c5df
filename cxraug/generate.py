"""`cxraug generate`: synthetic images of one class from a run's checkpoint.

Image i of (checkpoint, seed) uses z_i = N(0, I) drawn from numpy's generator seeded with
(seed, i): it does not depend on -n or on the batch size. The generator runs in inference mode
(BatchNorm moving statistics) on fixed-size batches (the last one zero-padded), so image i is
also bit-identical whatever -n is. PNGs are 8-bit grayscale, written atomically to
WORKSPACE/synthetic/<class>/<run>-s<seed>-<i:06d>.png, and each gets one manifest row.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.checkpoint import assign_generator, find_best, find_latest, read_checkpoint
from cxraug.errors import InputError
from cxraug.fsutil import atomic_write_bytes, atomic_write_json, sha256_bytes
from cxraug.images import encode_png_gray, to_uint8
from cxraug.manifest import LABELS, Manifest, Record
from cxraug.models import build_generator
from cxraug.tf_setup import tf
from cxraug.train import find_run
from cxraug.train_config import GenerateConfig
from cxraug.workspace import Workspace


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


def balance_count(manifest: Manifest, label: str) -> int:
    """(#usable real train rows of the majority class) - (#usable train rows of `label`)."""
    real = {c: len(manifest.select(label=c, split="train", synthetic=False)) for c in LABELS}
    have = len(manifest.select(label=label, split="train"))  # real + synthetic already present
    return max(0, max(real.values()) - have)


def newest_run(ws: Workspace) -> Path:
    runs = [p for p in ws.runs_dir.iterdir() if p.is_dir()] if ws.runs_dir.is_dir() else []
    ptrs = [(p / "checkpoints" / "latest").stat().st_mtime for p in runs
            if (p / "checkpoints" / "latest").is_file()]  # fmt: skip
    with_ckpt = [p for p in runs if (p / "checkpoints" / "latest").is_file()]
    if not with_ckpt:
        raise InputError(f"no trained run with a checkpoint under {ws.runs_dir}; run "
                         "`cxraug train` first or pass --run / --checkpoint")  # fmt: skip
    return with_ckpt[int(np.argmax(ptrs))]


def generate(ws: Workspace, cfg: GenerateConfig) -> GenerateResult:
    if cfg.label not in LABELS:
        raise InputError(f"unknown class {cfg.label!r}; use one of {', '.join(LABELS)}")
    if cfg.batch_size < 1:
        raise InputError(f"--batch-size {cfg.batch_size}: use at least 1")
    manifest = ws.load_manifest()
    if cfg.checkpoint not in (None, "best", "latest"):
        ckpt_path = Path(str(cfg.checkpoint))
        run_dir = ckpt_path.resolve().parent.parent
    else:
        run_dir = find_run(ws, cfg.run) if cfg.run else newest_run(ws)
        # default: the best-scored checkpoint when the run scored its checkpoints
        found = find_best(run_dir) if cfg.checkpoint != "latest" else None
        if found is None and cfg.checkpoint == "best":
            raise InputError(f"run {run_dir} has no scored best checkpoint (train with "
                             "--score-samples N); use --checkpoint latest")  # fmt: skip
        found = found or find_latest(run_dir)
        if found is None:
            raise InputError(f"run {run_dir} has no usable checkpoint; train it "
                             "longer (checkpoints every --checkpoint-interval)")
        ckpt_path = found
    ckpt = read_checkpoint(ckpt_path)
    tcfg = ckpt.config
    run = run_dir.name
    if LABELS.index(cfg.label) >= tcfg.num_classes:
        raise InputError(f"run {run} was trained on {tcfg.num_classes} class(es); "
                         f"it cannot generate {cfg.label!r}")  # fmt: skip
    n = balance_count(manifest, cfg.label) if cfg.balance else cfg.n
    if n is None or n < 0:
        raise InputError("give -n COUNT (>= 0) or --balance")
    out_dir = ws.synthetic_dir / cfg.label
    res = GenerateResult(cfg.label, n, run, ckpt.path, ckpt.sha256, out_dir)
    if n == 0:
        res.message = (f"nothing to generate: {cfg.label} already matches the majority class"
                       if cfg.balance else "nothing to generate (-n 0)")  # fmt: skip
        return res
    stem = f"{run}-s{cfg.seed}"
    ids = [f"synthetic/{cfg.label}/{stem}-{i:06d}" for i in range(n)]
    paths = [out_dir / f"{stem}-{i:06d}.png" for i in range(n)]
    clash = [p for p in paths if p.exists()] + [i for i in ids if i in manifest.ids()]
    if clash and not cfg.force:
        raise InputError(f"{len(clash)} image(s) of {stem} already exist (e.g. {clash[0]}); "
                         "pass --force to replace them or use another --seed")  # fmt: skip

    gen = build_generator(tcfg)
    y_idx = LABELS.index(cfg.label)
    assign_generator(gen, ckpt)  # the EMA generator when the run kept one
    infer = tf.function(lambda z, y: gen([z, y], training=False))
    bs = cfg.batch_size
    records: list[Record] = []
    with ThreadPoolExecutor(max_workers=4) as pool:  # PNG encode/write overlaps the next batch
        for lo in range(0, n, bs):
            hi = min(n, lo + bs)
            z = np.zeros((bs, tcfg.latent_dim), np.float32)  # zero-padded: fixed batch shape
            z[: hi - lo] = np.stack([latent(cfg.seed, i, tcfg.latent_dim) for i in range(lo, hi)])
            imgs = to_uint8(infer(tf.constant(z), tf.fill((bs,), y_idx)).numpy()[: hi - lo, ..., 0])
            pngs = list(pool.map(encode_png_gray, imgs))
            list(pool.map(atomic_write_bytes, paths[lo:hi], pngs))
            for i, data in zip(range(lo, hi), pngs, strict=True):
                records.append(Record(
                    id=ids[i], path=ws.relpath(paths[i]), label=cfg.label, split="train",
                    status="ok", source="synthetic", sha256=sha256_bytes(data),
                    width=tcfg.image_size, height=tcfg.image_size, synthetic=True,
                    run=f"runs/{run}", checkpoint_sha256=ckpt.sha256, seed=cfg.seed,
                    noise_index=i,
                ))  # fmt: skip
    new_ids = {r.id for r in records}
    manifest.records = [r for r in manifest.records if r.id not in new_ids] + records
    ws.save_manifest(manifest)
    resolved = {**asdict(cfg), "n": n, "run": run, "checkpoint": str(ckpt.path),
                "checkpoint_sha256": ckpt.sha256, "train_config": tcfg.to_dict()}  # fmt: skip
    atomic_write_json(out_dir / f"generate-{stem}.json", resolved)
    res.paths = paths
    res.message = f"wrote {n} {cfg.label} image(s) to {out_dir}"
    return res
