"""Training checkpoints: one .npz per save, written atomically, plus a `latest` pointer.

A checkpoint `runs/NAME/checkpoints/ckpt-0001200.npz` (file names: cxraug.core.workspace.RunDir)
holds every G and D weight (BatchNorm moving statistics included), both Adam optimizers'
variables, the tf.random.Generator state, the iteration and the TrainConfig (JSON). It is
written to a temp file and renamed, then the pointer file `latest` (JSON: file name, SHA-256,
iteration) is replaced the same way. A kill at any moment therefore leaves either the previous
pointer or the new one, each naming a complete file. If the pointer is missing or its hash does
not match, the newest checkpoint that loads completely is used instead; a truncated or corrupt
file is never chosen. Which checkpoint `generate` loads (a file, or a run's best or latest):
`choose_checkpoint`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_save_npz, atomic_write_json, sha256_file
from cxraug.core.workspace import RunDir, Workspace
from cxraug.gan.config import TrainConfig

FORMAT = "cxraug-ckpt-1"
GROUPS = ("g", "d", "g_opt", "d_opt")
_ZIP_MAGIC = b"PK\x03\x04"  # every .npz is a zip file


def _run(run_dir: Path | RunDir) -> RunDir:
    """File names and folders come from cxraug.core.workspace.RunDir."""
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


def _variables(state: Any) -> dict[str, list[Any]]:
    """Variable groups; "ema" (EMA generator) and "aux" (EMA step count, LeCam anchors) only
    exist in runs that use them, so paper-recipe checkpoints keep their old layout."""
    groups = {"g": state.gen.weights, "d": state.disc.weights,
              "g_opt": state.g_opt.variables, "d_opt": state.d_opt.variables}  # fmt: skip
    if state.ema is not None:
        groups["ema"] = state.ema.weights
    if aux := state.aux_variables():
        groups["aux"] = aux
    return groups


def save_checkpoint(state: Any, run_dir: Path | RunDir, keep: int,
                    dataset_sha256: str | None = None, *, write: bool = True) -> Path:  # fmt: skip
    """Write the state atomically, move the `latest` pointer, prune all but `keep` files.
    `dataset_sha256` (of processed/dataset.npz) lets `--resume` refuse a changed dataset.

    `write=False` (a multi-worker run's non-chief workers, cxraug.gan.cluster) reads every
    variable as the chief does, so that both run the same ops, writes nothing, and returns
    the path the chief writes."""
    arrays, names = pack_groups(_variables(state))
    arrays["rng_state"] = state.rng.state.numpy()
    meta = {"format": FORMAT, "iteration": state.iteration, "names": names,
            "rng_algorithm": int(state.rng.algorithm), "config": state.cfg.to_dict()}  # fmt: skip
    if dataset_sha256 is not None:
        meta["dataset_sha256"] = dataset_sha256
    arrays["meta"] = np.array(json.dumps(meta))
    run = _run(run_dir)
    path = run.checkpoint_path(state.iteration)
    if not write:
        return path
    atomic_save_npz(path, **arrays)
    write_pointer(run.latest_pointer, path, state.iteration)
    best = read_pointer(run.best_pointer).get("file")
    for old in run.checkpoint_files()[:-keep]:
        if old.name != best:  # the best-scored checkpoint outlives pruning
            old.unlink(missing_ok=True)
    return path


def write_pointer(ptr: Path, path: Path, iteration: int, **extra: Any) -> None:
    """A pointer file (`latest`, `best`; the refiner's `latest`): JSON naming a file in the
    pointer's folder and its SHA-256, written atomically."""
    atomic_write_json(ptr, {"file": path.name, "sha256": sha256_file(path),
                            "iteration": iteration, **extra})  # fmt: skip


def read_pointer(ptr: Path) -> dict[str, Any]:
    """The pointer's JSON, or {} when it is missing or unreadable."""
    try:
        data = json.loads(ptr.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pointed(ptr: Path) -> Path | None:
    """The file a pointer names (in the pointer's folder), if it exists and its hash
    matches. The refiner's pointer works the same way (cxraug.gan.refine)."""
    data = read_pointer(ptr)
    try:
        cand = ptr.parent / str(data["file"])
        if cand.is_file() and sha256_file(cand) == data["sha256"]:
            return cand
    except (OSError, KeyError, TypeError):
        pass
    return None


def mark_best(run_dir: Path | RunDir, path: Path, score: dict[str, Any]) -> None:
    """Point checkpoints/best at `path` (atomically), with the score that chose it."""
    write_pointer(_run(run_dir).best_pointer, path, int(score.get("iteration", -1)),
                   score=score)  # fmt: skip


def find_best(run_dir: Path | RunDir) -> Path | None:
    """The best-scored checkpoint if the run has one and its hash matches, else None."""
    run = _run(run_dir)
    return pointed(run.best_pointer)


def list_checkpoints(run_dir: Path | RunDir) -> list[Path]:
    """Checkpoint files sorted by iteration (oldest first); temp files are not listed."""
    return _run(run_dir).checkpoint_files()


@dataclass
class Checkpoint:
    path: Path
    sha256: str
    iteration: int
    config: TrainConfig
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def read_checkpoint(path: Path) -> Checkpoint:
    """Load and fully verify one file (every array decompressed: zip CRCs are checked)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist; check the path or use --run")
    if not path.is_file():  # a folder, a FIFO (reading it would block), a device
        raise InputError(f"{path} is not a file, so not a cxraug checkpoint; give a "
                         "runs/NAME/checkpoints/ckpt-NNNNNNN.npz file or use --run NAME")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:  # np.load would try it as a pickle and say so
        raise InputError(f"{path} is not a cxraug checkpoint (not an .npz file); give a "
                         "runs/NAME/checkpoints/ckpt-NNNNNNN.npz file or use --run NAME")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "meta" not in arrays:
            raise InputError(f"{path} is not a cxraug checkpoint (an .npz file without "
                             "cxraug's meta record); give a runs/NAME/checkpoints/ file")
        meta = json.loads(str(arrays.pop("meta")))
    except OSError as e:
        if e.errno is not None:  # permission denied, I/O error: a system error (exit 6)
            raise
        raise InputError(f"checkpoint {path} is corrupt or truncated ({e}); "
                         "use an earlier checkpoint of the run") from e  # fmt: skip
    except (ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"checkpoint {path} is corrupt or truncated ({e}); "
                         "use an earlier checkpoint of the run") from e  # fmt: skip
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a cxraug checkpoint (format {meta.get('format')!r})")
    cfg = TrainConfig.from_dict(meta["config"])
    return Checkpoint(path, sha256_file(path), int(meta["iteration"]), cfg, meta, arrays)


def find_latest(run_dir: Path | RunDir) -> Path | None:
    """The pointer's file if its hash matches, else the newest file that loads completely."""
    run = _run(run_dir)
    if (found := pointed(run.latest_pointer)) is not None:
        return found
    for p in reversed(run.checkpoint_files()):
        try:
            read_checkpoint(p)
            return p
        except InputError:
            continue
    return None


def pack_groups(groups: dict[str, list[Any]]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Variable groups as a file stores them: arrays "GROUP.0000", ... and each group's
    variable names (for the messages of `assign_group`). Also the refiner's files."""
    arrays: dict[str, Any] = {}
    names: dict[str, list[str]] = {}
    for group, vs in groups.items():
        names[group] = [getattr(v, "path", None) or v.name for v in vs]
        for i, v in enumerate(vs):
            arrays[f"{group}.{i:04d}"] = np.asarray(v.numpy())
    return arrays, names


def assign_group(vs: list[Any], arrays: dict[str, np.ndarray], names: dict[str, list[str]],
                 group: str, file: str) -> None:  # fmt: skip
    """Assign a stored group (`pack_groups`) to the variables `vs` of a freshly built model,
    refusing a missing group, another variable count or another shape; `file` names the
    file in the messages."""
    if group not in names:
        raise InputError(f"{file} has no {group!r} variables; it was written for another "
                         "configuration: use a file of this run, or retrain")  # fmt: skip
    stored = names[group]
    if len(stored) != len(vs):
        raise InputError(f"{file}: {group} has {len(stored)} variables, this cxraug's model "
                         f"has {len(vs)}; it was written by an incompatible version: retrain "
                         "with this version")  # fmt: skip
    for i, v in enumerate(vs):
        a = arrays[f"{group}.{i:04d}"]
        if tuple(a.shape) != tuple(v.shape):
            raise InputError(f"{file}: {stored[i]} has shape {a.shape}, the model expects "
                             f"{tuple(v.shape)}; the file does not match this model: use a "
                             "file of this run, or retrain")  # fmt: skip
        v.assign(a)


def restore(state: Any, ckpt: Checkpoint) -> None:
    """Assign a checkpoint's arrays to a freshly built state of the same config."""
    for group, vs in _variables(state).items():
        assign_group(vs, ckpt.arrays, ckpt.meta["names"], group, f"checkpoint {ckpt.path.name}")
    state.rng.reset(ckpt.arrays["rng_state"])
    state.iteration = ckpt.iteration


def assign_generator(gen: Any, ckpt: Checkpoint, *, ema: bool = True) -> str:
    """Load only a generator's weights (for `generate`): the EMA generator's when the
    checkpoint has one and `ema`, else the trained one. Returns the group used ("ema"/"g")."""
    group = "ema" if ema and "ema" in ckpt.meta["names"] else "g"
    assign_group(gen.weights, ckpt.arrays, ckpt.meta["names"], group,
                 f"checkpoint {ckpt.path.name}")  # fmt: skip
    return group


def choose_checkpoint(ws: Workspace, run: str | None,
                      checkpoint: str | None) -> tuple[RunDir, Checkpoint]:  # fmt: skip
    """The run and the checkpoint that `--run` and `--checkpoint` choose: a checkpoint file
    (its run is the folder holding it); else in `run` (default: the newest run with a
    checkpoint) `best`, `latest` or, with `checkpoint` None, the best-scored checkpoint when
    the run scored its checkpoints, else its latest."""
    if checkpoint not in (None, "best", "latest"):
        path = Path(str(checkpoint))
        return ws.run_of_checkpoint(path), read_checkpoint(path)
    run_dir = ws.find_run(run) if run is not None else ws.newest_run()
    found = find_best(run_dir) if checkpoint != "latest" else None
    if found is None and checkpoint == "best":
        raise InputError(f"run {run_dir.path} has no scored best checkpoint (train with "
                         "--score-samples N); use --checkpoint latest")  # fmt: skip
    found = found or find_latest(run_dir)
    if found is None:
        raise InputError(f"run {run_dir.path} has no usable checkpoint; train it "
                         "longer (checkpoints every --checkpoint-interval)")
    return run_dir, read_checkpoint(found)
