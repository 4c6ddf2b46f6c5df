"""`cxraug evaluate`: does adding the synthetic images help a COVID-vs-normal classifier, and by
how much, compared with what one would do anyway? (docs/evaluate.md)

    real rows of processed/dataset.npz, resized to --size  ─┐
    ok synthetic rows of the manifest (e.g. after filter)  ─┼─▶ one classifier per ARM x SEED
                                                            │   (cxraug.classify.net), early
    validation = a share of the TRAIN patients ◀────────────┘   stopping + threshold on it
    scored on the patient-split `test` rows and on every `external` (test-only) source:
    AUC, balanced accuracy, sensitivity, specificity, 95 % CIs by a bootstrap over patients,
    paired differences from "real only" (cxraug.classify.stats)
    + the shortcut check: the same classifier trained to predict each image's SOURCE.

Arms: real | oversample (class-balanced batches) | classical (rotation, shift, scale,
brightness, contrast; no flip) | synthetic (real + ok synthetic rows of the scarce class) |
synthetic+classical. Every arm of a seed shares that seed's validation split, initial
weights and step budget; only the training images and their sampling differ.
Outputs: evaluations/NAME/{config.json, results.json, roc.png, differences.png}.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from cxraug import __version__
from cxraug.classify import stats
from cxraug.classify.augment import Classical
from cxraug.classify.net import NetConfig, fit, forward_flops
from cxraug.classify.plots import draw_differences, draw_roc
from cxraug.core.dataset import load_dataset
from cxraug.core.errors import ImageError, InputError, vassert
from cxraug.core.fsutil import atomic_write_json
from cxraug.core.images import read_gray_u8, write_png_rgb
from cxraug.core.manifest import LABELS, check_label
from cxraug.core.settings import SEED, Settings, at_least, between, setting
from cxraug.core.ui import err, warn
from cxraug.core.workspace import EvalDir, Workspace

ARMS: tuple[str, ...] = ("real", "oversample", "classical", "synthetic", "synthetic+classical")
SYNTHETIC_ARMS = ("synthetic", "synthetic+classical")
#: the same rule as source names (cxraug.prep.sources); to be unified in core/workspace.py
NO_SYNTHETIC = "no ok synthetic rows: run `cxraug generate` and `cxraug filter` first"


@dataclass(frozen=True)
class EvaluateConfig(Settings):
    """Defaults of `cxraug evaluate` (shown by --help)."""

    arms: str = setting(",".join(ARMS), "Comma-separated arms to train and score.")
    run: str = setting("", "Use only the synthetic rows of this run (default: every run).")
    augment_class: str = setting(
        "", "Class the synthetic arms add images of (default: the scarcest training class).",
        "--class",
    )  # fmt: skip
    seeds: int = setting(3, "Seeds per arm (each: own validation split and initial weights).",
                         bounds=at_least(1))  # fmt: skip
    seed: int = setting(0, "Base seed: the same seed reproduces every number.", bounds=SEED)
    size: int = setting(128, "Classifier input side in pixels (images are resized to it).",
                        bounds=between(16, 512))  # fmt: skip
    steps: int = setting(500, "Training steps per arm and seed (the shared budget).",
                         bounds=at_least(1))  # fmt: skip
    batch_size: int = setting(32, "Images per training step.", bounds=at_least(2))
    eval_every: int = setting(50, "Steps between validation scores (early stopping).",
                              bounds=at_least(1))  # fmt: skip
    patience: int = setting(4, "Stop after this many validation scores without improvement.",
                            bounds=at_least(1))  # fmt: skip
    width: int = setting(16, "Channels of the first conv block (doubled per block).",
                         bounds=between(1, 1024))  # fmt: skip
    val_fraction: float = setting(0.15, "Share of the TRAIN patients of each class held out "
                                  "for early stopping and the threshold.",
                                  bounds=between(0.02, 0.5))  # fmt: skip
    bootstrap: int = setting(1000, "Bootstrap resamples of the test patients.",
                             bounds=at_least(100))  # fmt: skip
    min_test_per_class: int = setting(10, "Fewest test images of a class for a CI.",
                                      bounds=at_least(2))  # fmt: skip
    shortcut: bool = setting(True, "Run the shortcut check (predict the source).",
                             "--shortcut/--no-shortcut")  # fmt: skip
    hflip: bool = setting(False, "Classical arms: also flip left-right (laterality lost).",
                          "--hflip/--no-hflip")  # fmt: skip
    blocks: int = 4
    learning_rate: float = 1e-3
    band_resamples: int = 200  # resamples behind the ROC bands (a figure, not a number)

    def net(self) -> NetConfig:
        return NetConfig(self.size, self.width, self.blocks, self.steps, self.batch_size,
                         self.eval_every, self.patience, self.learning_rate)  # fmt: skip

    def arm_list(self) -> list[str]:
        arms = [a.strip() for a in self.arms.split(",") if a.strip()]
        bad = [a for a in arms if a not in ARMS]
        vassert(arms and not bad, f"--arms {self.arms!r}: unknown arm(s) {', '.join(bad)}; "
                f"use a comma-separated list of {', '.join(ARMS)}")  # fmt: skip
        return list(dict.fromkeys(["real", *arms]))  # real only: the baseline of every difference

    def check(self) -> None:
        vassert(self.size % 2 ** self.blocks == 0,
                f"--size {self.size}: use a multiple of {2 ** self.blocks} in 16..512, e.g. 128")
        if self.augment_class:
            check_label(self.augment_class)


# ---- data ----------------------------------------------------------------------------------


@dataclass
class Images:
    """Real images at the classifier's size, with what the split and the bootstrap need."""

    x: np.ndarray  # (N, S, S) float32 in [-1, 1]
    y: np.ndarray  # (N,) int64 class index (manifest.LABELS)
    split: np.ndarray  # (N,) train / test / external
    patient: np.ndarray  # (N,) "SOURCE/PATIENT" (the image id when the patient is unknown)
    source: np.ndarray  # (N,)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) [-1, 1] -> (N, size, size); INTER_AREA when shrinking, as preprocess does."""
    if x.shape[1:] == (size, size):
        return x.astype(np.float32, copy=False)
    shrink = x.shape[1] >= size
    flag = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = np.stack([cv2.resize(im, (size, size), interpolation=flag) for im in x]) if len(x) \
        else np.zeros((0, size, size), np.float32)  # fmt: skip
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def load_real(ws: Workspace, size: int) -> Images:
    ds = load_dataset(ws.dataset_path)
    by_id = ws.load_manifest().by_id()
    recs = [by_id.get(str(i)) for i in ds.ids]
    source = np.array([r.source if r is not None else "" for r in recs])
    patient = np.array([f"{r.source}/{r.patient_id}" if r is not None and r.patient_id
                        else f"id/{i}" for r, i in zip(recs, ds.ids, strict=True)])  # fmt: skip
    return Images(_resize(ds.images, size), ds.labels.astype(np.int64), ds.splits.astype(str),
                  patient, source)  # fmt: skip


def load_synthetic(ws: Workspace, label: str, run: str, size: int) -> tuple[np.ndarray, str]:
    """(K, S, S) of the manifest's ok synthetic `label` rows (of `run` when given) and, when
    there are none, why. Decoded by core.images and scaled to [-1, 1] exactly as the saved
    real pixels are (u8 / 127.5 - 1), then resized like the real images."""
    rows = [r for r in ws.load_manifest() if r.synthetic and r.label == label]

    def run_name(ref: str) -> str:
        return ref.rstrip("/").split("/")[-1]

    if run:
        known = sorted({run_name(r.run) for r in rows if r.run})
        if run_name(run) not in known:
            ws.find_run(run)  # an unknown run: InputError (exit 3) naming where it looked
            return np.zeros((0, size, size), np.float32), (
                f"run {run!r} has no synthetic {label} rows; rows exist for runs: "
                f"{', '.join(known) or 'none'}")  # fmt: skip
        rows = [r for r in rows if run_name(r.run) == run_name(run)]
    ok = [r for r in rows if r.usable and r.split == "train"]
    if not ok:
        return np.zeros((0, size, size), np.float32), NO_SYNTHETIC
    imgs, bad = [], 0
    for r in ok:
        try:
            imgs.append(read_gray_u8(r.resolve(ws.root)).astype(np.float32) / 127.5 - 1.0)
        except ImageError:
            bad += 1
    if bad:
        warn(f"{bad} ok synthetic {label} image(s) could not be read and were left out; "
             "re-run `cxraug filter` to mark them")  # fmt: skip
    if not imgs:
        return np.zeros((0, size, size), np.float32), "no readable ok synthetic rows"
    shapes = {im.shape for im in imgs}
    vassert(len(shapes) == 1, f"synthetic {label} images have several sizes {sorted(shapes)}; "
            "evaluate one run at a time with --run")  # fmt: skip
    return _resize(np.stack(imgs), size), ""


def validation_split(
    patient: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) positions into these TRAIN images: per class, whole patients (shuffled) are
    moved to validation until it holds ~fraction of the class; at least one patient each."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(patient):
        groups.setdefault(str(p), []).append(i)
    val: list[int] = []
    for c in np.unique(y):
        mine = [g for g in groups.values() if np.bincount(y[g]).argmax() == c]
        target = max(1, round(fraction * sum(len(g) for g in mine)))
        n = 0
        for k in rng.permutation(len(mine))[: max(len(mine) - 1, 0)]:
            if n >= target:
                break
            val.extend(mine[k])
            n += len(mine[k])
    mask = np.zeros(len(y), bool)
    mask[val] = True
    return np.nonzero(~mask)[0], np.nonzero(mask)[0]


# ---- the evaluation ------------------------------------------------------------------------


@dataclass
class EvalResult:
    name: str
    folder: EvalDir
    config: dict[str, Any]
    arms: dict[str, dict[str, Any]]  # arm -> status, reason, images, per-seed training facts
    test_sets: dict[str, dict[str, Any]]  # test set -> counts, status, metrics, differences
    shortcut: dict[str, Any]
    speed: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[str]:
        return ([f"arm {a}: {d['reason']}" for a, d in self.arms.items() if d["status"] != "ok"]
                + [f"test set {t}: {d['reason']}" for t, d in self.test_sets.items()
                   if d["status"] != "ok"])  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder.path), "config": self.config,
                "arms": self.arms, "test_sets": self.test_sets, "shortcut": self.shortcut,
                "speed": self.speed, "skipped": self.skipped, "notes": self.notes,
                "cxraug_version": __version__}  # fmt: skip


def _test_sets(data: Images, min_per_class: int) -> tuple[dict[str, np.ndarray],
                                                           dict[str, dict[str, Any]]]:  # fmt: skip
    """{name: image positions} of the scoreable test sets, and every set's description."""
    sets = {"test": np.nonzero(data.split == "test")[0]}
    for src in sorted(set(data.source[data.split == "external"])):
        sets[f"external:{src}"] = np.nonzero((data.split == "external") & (data.source == src))[0]
    info: dict[str, dict[str, Any]] = {}
    usable: dict[str, np.ndarray] = {}
    for name, idx in sets.items():
        counts = {c: int((data.y[idx] == k).sum()) for k, c in enumerate(LABELS)}
        d: dict[str, Any] = {"n_images": len(idx), "n_patients": len(set(data.patient[idx])),
                             "counts": counts, "status": "ok", "reason": ""}  # fmt: skip
        few = [f"{n} {c}" for c, n in counts.items() if n < min_per_class]
        if few:
            one = [c for c, n in counts.items() if n == 0]
            why = (f"one class only (no {', '.join(one)} images): AUC, balanced accuracy and "
                   "one of sensitivity/specificity are undefined; add images of both classes"
                   if one else f"too few images for a CI ({', '.join(few)}; need at least "
                   f"{min_per_class} per class)")  # fmt: skip
            if name == "test":
                raise InputError(f"the patient-split test rows: {why}. Collect more patients "
                                 "or raise --test-fraction in `cxraug collect`")  # fmt: skip
            d.update(status="skipped", reason=why)
        else:
            usable[name] = idx
        info[name] = d
    return usable, info


def _arm_training(
    arm: str, x: np.ndarray, y: np.ndarray, syn: np.ndarray, label: int, cfg: EvaluateConfig
) -> tuple[np.ndarray, np.ndarray, bool, Classical | None]:
    """An arm's training images, labels, sampler (balanced?) and augmentation."""
    if arm in SYNTHETIC_ARMS:
        x = np.concatenate([x, syn])
        y = np.concatenate([y, np.full(len(syn), label, np.int64)])
    aug = Classical(hflip=cfg.hflip) if "classical" in arm else None
    return x, y, arm == "oversample", aug


def _shortcut(data: Images, fit_idx: np.ndarray, val_idx: np.ndarray, test_idx: np.ndarray,
              cfg: EvaluateConfig, label_bacc: float | None) -> dict[str, Any]:  # fmt: skip
    """Train the same classifier to predict each training image's SOURCE; score it on test."""
    train = np.r_[fit_idx, val_idx]
    sources = sorted(set(data.source[train]))
    table = {s: {c: int(((data.source == s) & (data.y == k) & (data.split != "external")).sum())
                 for k, c in enumerate(LABELS)} for s in sources}  # fmt: skip
    out: dict[str, Any] = {"sources": table}
    if len(sources) < 2:
        return {**out, "status": "not applicable",
                "verdict": "one training source: no source to confound with the label"}
    single = all(sum(v > 0 for v in t.values()) == 1 for t in table.values())
    code = {s: k for k, s in enumerate(sources)}
    ys = np.array([code.get(s, -1) for s in data.source])
    test_idx = test_idx[ys[test_idx] >= 0]
    tr = fit(data.x[fit_idx], ys[fit_idx], data.x[val_idx], ys[val_idx], len(sources),
             cfg.net(), cfg.seed)  # fmt: skip
    prob = tr.predict(data.x[test_idx])
    bacc = stats.balanced_accuracy_multiclass(ys[test_idx], prob.argmax(1), len(sources))
    chance = 1.0 / len(sources)
    within: dict[str, float] = {}
    for k, c in enumerate(LABELS):  # can it tell the sources of one class apart?
        mine = [code[s] for s in sources if table[s][c] > 0]
        rows = test_idx[(data.y[test_idx] == k) & np.isin(ys[test_idx], mine)]
        if len(mine) >= 2 and len(rows):
            pred = np.array(mine)[prob[np.searchsorted(test_idx, rows)][:, mine].argmax(1)]
            within[c] = stats.balanced_accuracy_multiclass(ys[rows], pred, len(sources))
    skill = (bacc - chance) / (1 - chance)
    label_skill = None if label_bacc is None else (label_bacc - 0.5) / 0.5
    near = label_skill is not None and skill >= label_skill - 0.1
    measured = (f"the source classifier's balanced accuracy is {bacc:.3f} (chance {chance:.3f}"
                + ("" if label_bacc is None else f"; the label classifier's: {label_bacc:.3f}")
                + ")")  # fmt: skip
    if single:
        words = ["every training source holds ONE class only, so the label is a function of the "
                 "source: the internal test cannot tell a disease detector from a source "
                 "detector, whatever the scores", measured]  # fmt: skip
    elif near:
        words = [f"the source is nearly as predictable as the label: {measured}"]
    else:
        words = [f"the source is much less predictable than the label: {measured}; the internal "
                 "test is not obviously a source test"]  # fmt: skip
    if single or near:
        words.append("the internal test scores may measure the source, not the disease; a claim "
                     "needs an external test source (`cxraug collect --test-only NAME`)")
    return {**out, "status": "ok", "balanced_accuracy": round(bacc, 4),
            "chance": round(chance, 4), "skill": round(skill, 4),
            "label_balanced_accuracy": None if label_bacc is None else round(label_bacc, 4),
            "within_class_balanced_accuracy": {k: round(v, 4) for k, v in within.items()},
            "single_class_sources": single, "flag": bool(near or single),
            "verdict": "; ".join(words), "best_step": tr.best_step}  # fmt: skip


def evaluate(ws: Workspace, cfg: EvaluateConfig = EvaluateConfig(), *, name: str = "default",
             force: bool = False, show_progress: bool = True) -> EvalResult:  # fmt: skip
    """Train and score every arm (see the module docstring); save config, results, figures."""
    arms = cfg.arm_list()
    folder = ws.evaluation(name)  # the workspace's one name rule (exit 3)
    if folder.path.exists() and any(folder.path.iterdir()) and not force:
        raise InputError(f"{folder.path} exists; pass --force to overwrite it or choose "
                         "another --name")  # fmt: skip
    data = load_real(ws, cfg.size)
    train = np.nonzero(data.split == "train")[0]
    counts = np.bincount(data.y[train], minlength=len(LABELS))
    have = dict(zip(LABELS, counts.tolist(), strict=True))
    vassert(counts.min() >= 4, f"{ws.dataset_path} has {have} training images; evaluate needs "
            "at least 4 per class")  # fmt: skip
    label = cfg.augment_class or LABELS[int(np.argmin(counts))]
    sets, set_info = _test_sets(data, cfg.min_test_per_class)
    syn, syn_reason = (load_synthetic(ws, label, cfg.run, cfg.size)
                       if cfg.run or any(a in SYNTHETIC_ARMS for a in arms)  # --run: checked
                       else (np.zeros((0, cfg.size, cfg.size), np.float32), ""))  # fmt: skip
    arm_info: dict[str, dict[str, Any]] = {}
    for a in arms:
        skip = a in SYNTHETIC_ARMS and syn_reason
        arm_info[a] = {"status": "skipped" if skip else "ok", "reason": syn_reason if skip else "",
                       "synthetic_images": len(syn) if a in SYNTHETIC_ARMS else 0, "seeds": []}
    config = {**asdict(cfg), "name": name, "augmented_class": label, "arms_run": arms,
              "dataset": str(ws.dataset_path), "cxraug_version": __version__}  # fmt: skip
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder.config_path, config)

    live = [a for a in arms if arm_info[a]["status"] == "ok"]
    # arm -> test set -> one (N,) score vector per seed
    scores: dict[str, dict[str, list[np.ndarray]]] = {a: {t: [] for t in sets} for a in live}
    thresholds: dict[str, list[float]] = {a: [] for a in live}
    seen, secs = 0, 0.0
    net = cfg.net()
    t_all = time.perf_counter()
    fit_idx = val_idx = train
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        rng = np.random.default_rng([cfg.seed, s, 0x5A1])
        f_pos, v_pos = validation_split(data.patient[train], data.y[train], cfg.val_fraction, rng)
        fit_idx, val_idx = train[f_pos], train[v_pos]
        short = [c for k, c in enumerate(LABELS)
                 if not (data.y[val_idx] == k).any() or not (data.y[fit_idx] == k).any()]
        vassert(not short, f"class {', '.join(short)}: too few training patients to hold some "
                "out for validation (early stopping and the threshold need both classes); "
                "evaluate needs at least 2 training patients per class")  # fmt: skip
        for a in live:
            x, y, balanced, aug = _arm_training(a, data.x[fit_idx], data.y[fit_idx], syn,
                                                LABELS.index(label), cfg)  # fmt: skip
            if show_progress:
                err.print(f"evaluate: seed {seed}, arm {a}: training on {len(x)} images",
                          highlight=False)  # fmt: skip
            tr = fit(x, y, data.x[val_idx], data.y[val_idx], 2, net, seed, balanced=balanced,
                     augment=aug)  # fmt: skip
            seen, secs = seen + tr.images_seen, secs + tr.seconds
            pv = tr.predict(data.x[val_idx])[:, 1]
            t = stats.youden_threshold(data.y[val_idx], pv)
            thresholds[a].append(t)
            for name_t, idx in sets.items():
                scores[a][name_t].append(tr.predict(data.x[idx])[:, 1])
            arm_info[a]["train_images"] = len(x)
            arm_info[a]["seeds"].append({
                "seed": seed, "best_step": tr.best_step, "steps_run": tr.steps_run,
                "val_auc": round(tr.best_val, 4), "threshold": round(t, 4),
                "train_seconds": round(tr.seconds, 2)})  # fmt: skip

    rois: list[tuple[str, np.ndarray]] = []
    diff_img = np.full((10, 10, 3), 255, np.uint8)
    grid = np.linspace(0.0, 1.0, 101)
    for k, (name_t, idx) in enumerate(sets.items()):
        rng = np.random.default_rng([cfg.seed, 0xB007, k])
        res = stats.patient_resamples(list(data.patient[idx]), cfg.bootstrap, rng)
        y = data.y[idx]
        metrics, boots, curves = {}, {}, []
        for a in live:
            sc = np.stack(scores[a][name_t])  # (S, N)
            metrics[a], boots[a] = stats.arm_metrics(y, sc, np.array(thresholds[a]), res)
            curves.append((a, *stats.roc_band(y, sc, res[: cfg.band_resamples], grid)))
        diffs = {a: stats.paired_difference(metrics[a], boots[a], metrics["real"], boots["real"])
                 for a in live if a != "real"}  # fmt: skip
        set_info[name_t]["metrics"] = {a: {m: v.to_json() for m, v in d.items()}
                                       for a, d in metrics.items()}  # fmt: skip
        set_info[name_t]["differences"] = {a: {m: v.to_json() for m, v in d.items()}
                                           for a, d in diffs.items()}  # fmt: skip
        rois.append((name_t, draw_roc(grid, curves, f"ROC on {name_t} ({len(idx)} images, "
                                      f"{cfg.seeds} seed(s), mean over seeds)")))  # fmt: skip
        if name_t == "test":
            rows = [(f"{a} {short}", d[m].value, d[m].lo, d[m].hi, live.index(a))
                    for m, short in (("auc", "AUC"), ("balanced_accuracy", "bal.acc"))
                    for a, d in diffs.items()]  # fmt: skip
            diff_img = draw_differences(rows, "paired difference from real only (test split, "
                                        "95% CI over patients)")  # fmt: skip
    panels = [img for _, img in rois]
    width = max(p.shape[1] for p in panels)
    stack = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)),
                                   constant_values=255) for p in panels])  # fmt: skip
    write_png_rgb(folder.roc_plot_path, np.ascontiguousarray(stack[..., ::-1]))
    write_png_rgb(folder.differences_plot_path, np.ascontiguousarray(diff_img[..., ::-1]))

    shortcut: dict[str, Any] = {"status": "not run (--no-shortcut)"}
    if cfg.shortcut:
        label_bacc = set_info["test"]["metrics"]["real"]["balanced_accuracy"]["value"]
        shortcut = _shortcut(data, fit_idx, val_idx, sets["test"], cfg, label_bacc)
    flops = forward_flops(net, 2)
    ips = seen / secs if secs else 0.0
    speed = {"images_per_s": round(ips, 1), "forward_mflop_per_image": round(flops / 1e6, 2),
             "train_gflop_per_s": round(3 * flops * ips / 1e9, 2), "images_seen": seen,
             "train_seconds": round(secs, 1),
             "wall_seconds": round(time.perf_counter() - t_all, 1)}  # fmt: skip
    notes = [f"threshold fixed on validation (Youden's J), per seed; CIs: {cfg.bootstrap} "
             "bootstrap resamples of test PATIENTS, the same for every arm (paired)"]
    if shortcut.get("flag"):
        notes.append(str(shortcut["verdict"]))
    result = EvalResult(name, folder, config, arm_info, set_info, shortcut, speed, notes)
    atomic_write_json(folder.results_path, result.to_json())
    return result


# ---- report --------------------------------------------------------------------------------


def _ci(d: dict[str, Any] | None, signed: bool = False) -> str:
    if d is None or d.get("value") is None:
        return "n/a"
    f = "+.3f" if signed else ".3f"
    ci = ("" if d.get("lo") is None else f" [{format(d['lo'], f)}, {format(d['hi'], f)}]")
    sd = d.get("seed_std")
    return format(d["value"], f) + ci + ("" if sd is None else f" ±{sd:.3f}")


def report_tables(r: EvalResult) -> list[Any]:
    """One table per test set (arms x metrics, paired differences), then the shortcut check."""
    from rich.table import Table
    from rich.text import Text  # styled, never parsed as markup: reasons carry user text

    out: list[Any] = []
    for name, d in r.test_sets.items():
        c = d["counts"]
        title = (f"{name}: {d['n_images']} images ({', '.join(f'{v} {k}' for k, v in c.items())}"
                 f"), {d['n_patients']} patients")  # fmt: skip
        if d["status"] != "ok":
            out.append(Text(f"{title}: skipped: {d['reason']}", style="yellow"))
            continue
        t = Table(title=title + " — mean over seeds [95% CI over patients] ±seed std",
                  title_justify="left")  # fmt: skip
        for col in ("arm", "AUC", "balanced acc.", "sensitivity", "specificity",
                    "ΔAUC vs real", "Δbal. acc. vs real"):  # fmt: skip
            t.add_column(col, overflow="fold")
        for a, info in r.arms.items():
            if info["status"] != "ok":
                t.add_row(a, Text(f"skipped: {info['reason']}", style="yellow"), *[""] * 5)
                continue
            m, df = d["metrics"][a], d["differences"].get(a)
            t.add_row(a, *(_ci(m[k]) for k in stats.METRICS),
                      "—" if df is None else _ci(df["auc"], True),
                      "—" if df is None else _ci(df["balanced_accuracy"], True))  # fmt: skip
        out.append(t)
    s = r.shortcut
    if s.get("status") == "ok":
        t = Table(title="shortcut check: the same classifier trained to predict the SOURCE",
                  title_justify="left")  # fmt: skip
        t.add_column("measure")
        t.add_column("value", justify="right")
        t.add_row("source balanced accuracy (test)", f"{s['balanced_accuracy']:.3f}")
        t.add_row("chance", f"{s['chance']:.3f}")
        if s["label_balanced_accuracy"] is not None:
            t.add_row("label balanced accuracy (real only)", f"{s['label_balanced_accuracy']:.3f}")
        for c, v in s["within_class_balanced_accuracy"].items():
            t.add_row(f"sources told apart within {c}", f"{v:.3f}")
        for src, cnt in s["sources"].items():
            t.add_row(f"source {src}", ", ".join(f"{v} {k}" for k, v in cnt.items()))
        out.append(t)
        style = "bold red" if s["flag"] else "green"
        out.append(Text(s["verdict"], style=style))
    else:
        out.append(f"shortcut check: {s.get('status')}: {s.get('verdict', '')}")
    sp = r.speed
    out.append(f"classifier training: {sp['images_per_s']} images/s at "
               f"{sp['forward_mflop_per_image']} MFLOP forward per image "
               f"(~{sp['train_gflop_per_s']} GFLOP/s counting backward as 2x forward); "
               f"wall {sp['wall_seconds']} s")  # fmt: skip
    out.append(f"saved: {r.folder.path}")
    return out
