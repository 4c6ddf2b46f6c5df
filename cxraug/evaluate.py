"""`cxraug evaluate`: does adding the synthetic images help a COVID-vs-normal classifier, and by
how much, compared with what one would do anyway? (docs/evaluate.md)

    real rows of processed/dataset.npz, resized to --size  ─┐  (--cues: source cues removed
    ok synthetic rows of the manifest (e.g. after filter)  ─┤   from every image first)
                                                            ├─▶ one classifier per ARM x SEED
    validation = a share of the TRAIN patients ◀────────────┘   (cxraug.classify.net), early
                                                                stopping + threshold on it
    scored on the patient-split `test` rows and on every `external` (test-only) source:
    AUC, balanced accuracy, sensitivity, specificity, 95 % CIs by a bootstrap over patients,
    paired differences from "real only" (cxraug.classify.stats)
    + the shortcut check: the same classifier trained to predict each image's SOURCE, and
      per arm a linear probe of the test images' source on that arm's classifier's features.

The arms (what each trains on and how: cxraug.classify.arms) share each seed's validation
split, initial weights and step budget; only the training images and their schedule differ.
The stages below: _prepare (images, arms, config.json), _train (seeds x arms), _score (test
sets, figures), _finish (shortcut check, speed, results.json).
Outputs: evaluations/NAME/{config.json, results.json, roc.png, differences.png}.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cxraug import __version__
from cxraug.classify import report, stats
from cxraug.classify.arms import DEFAULT_ARMS, Arm, SeedData, arm_list, plan, train
from cxraug.classify.cues import CueFacts, parse_cues
from cxraug.classify.data import (
    Cells,
    Images,
    load_cells,
    load_real,
    load_synthetic,
    test_sets,
    validation_split,
)
from cxraug.classify.net import NetConfig, Trained, forward_flops
from cxraug.classify.plots import draw_differences, draw_roc
from cxraug.classify.shortcut import probe_summary, shortcut_check, source_probe
from cxraug.core.dataset import scarce_class
from cxraug.core.errors import InputError, vassert
from cxraug.core.figures import stack
from cxraug.core.fsutil import atomic_write_json
from cxraug.core.images import write_png_rgb
from cxraug.core.manifest import LABELS, check_label
from cxraug.core.settings import SEED, Settings, at_least, between, setting
from cxraug.core.ui import err
from cxraug.core.workspace import EvalDir, Workspace


@dataclass(frozen=True)
class EvaluateConfig(Settings):
    """Defaults of `cxraug evaluate` (shown by --help)."""

    arms: str = setting(",".join(DEFAULT_ARMS), "Comma-separated arms to train and score. "
                        "Opt-in (slower): selected, pretrain, cells, cells-duplicate, "
                        "synthetic@R, duplicate@R (docs/evaluate.md).")  # fmt: skip
    synthetic_ratio: str = setting("", "Also train a synthetic@R arm per ratio R of this "
                                   "comma-separated list (x the real count of the augmented "
                                   "class, or balance), e.g. 0.25,0.5,1,balance.")  # fmt: skip
    run: str = setting("", "Use only the synthetic rows of this run (default: every run).")
    augment_class: str = setting(
        "", "Class the synthetic arms add images of (default: the scarcest training class).",
        "--class",
    )  # fmt: skip
    seeds: int = setting(3, "Seeds per arm (each: own validation split and initial weights).",
                         bounds=at_least(1))  # fmt: skip
    seed: int = setting(0, "Base seed: the same seed reproduces every number.", bounds=SEED)
    # 16..512 for the CLI's 4 blocks: check() asks for a multiple of 2**blocks
    size: int = setting(128, "Classifier input side in pixels (images are resized to it).",
                        bounds=between(4, 512))  # fmt: skip
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
    shortcut: bool = setting(True, "Run the shortcut check (predict the source; and per arm, "
                             "a linear probe of the source on its classifier's features).",
                             "--shortcut/--no-shortcut")  # fmt: skip
    hflip: bool = setting(False, "Classical arms: also flip left-right (laterality lost).",
                          "--hflip/--no-hflip")  # fmt: skip
    cues: str = setting("none", "Remove source cues from every image the classifier sees: "
                        "none, or steps joined by '+' from marks, lungcrop, clahe, histeq "
                        "(e.g. marks+lungcrop+clahe).")  # fmt: skip
    pretrain_share: float = setting(
        0.5, "pretrain arm: share of --steps pre-training on synthetic images; the rest "
        "fine-tunes on real ones.", bounds=between(0.0, 1.0, lo_open=True, hi_open=True),
    )  # fmt: skip
    select_k: int = setting(5, "selected arm: k of the k-th-nearest-neighbour distance in the "
                            "real-only model's features.", bounds=at_least(1))  # fmt: skip
    select_quantile: float = setting(0.95, "selected arm: keep a synthetic image no farther "
                                     "from the real ones than this quantile of the real "
                                     "images' own distances.",
                                     bounds=between(0.5, 1.0))  # fmt: skip
    blocks: int = 4
    learning_rate: float = 1e-3
    band_resamples: int = 200  # resamples behind the ROC bands (a figure, not a number)

    def net(self) -> NetConfig:
        return NetConfig(self.size, self.width, self.blocks, self.steps, self.batch_size,
                         self.eval_every, self.patience, self.learning_rate)  # fmt: skip

    def arm_list(self) -> list[Arm]:
        return arm_list(self.arms, self.synthetic_ratio)

    def check(self) -> None:
        vassert(self.size % 2 ** self.blocks == 0,
                f"--size {self.size}: use a multiple of {2 ** self.blocks} in 16..512, e.g. 128")
        parse_cues(self.cues)
        vassert(self.steps >= 2 or all(a.kind != "pretrain" for a in self.arm_list()),
                "the pretrain arm needs --steps >= 2 (one or more for each phase)")  # fmt: skip
        if self.augment_class:
            check_label(self.augment_class)


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
    cues: dict[str, Any] = field(default_factory=dict)  # what source-cue removal did
    figures: dict[str, list[str]] = field(default_factory=dict)  # figure -> its panels

    @property
    def skipped(self) -> list[str]:
        return ([f"arm {a}: {d['reason']}" for a, d in self.arms.items() if d["status"] != "ok"]
                + [f"test set {t}: {d['reason']}" for t, d in self.test_sets.items()
                   if d["status"] != "ok"])  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder.path), "config": self.config,
                "arms": self.arms, "test_sets": self.test_sets, "shortcut": self.shortcut,
                "cues": self.cues, "speed": self.speed, "figures": self.figures,
                "skipped": self.skipped, "notes": self.notes,
                "cxraug_version": __version__}  # fmt: skip


@dataclass
class _Run:
    """What one evaluation carries from stage to stage."""

    folder: EvalDir
    config: dict[str, Any]
    data: Images
    label: str  # the augmented class
    sets: dict[str, np.ndarray]  # scoreable test set -> image positions
    set_info: dict[str, dict[str, Any]]
    syn: np.ndarray  # (K, S, S) the ok synthetic images of `label` (cond_source empty)
    cells: Cells | None  # the cells arm's images (cond_source set), when it runs
    arms: list[Arm]
    arm_info: dict[str, dict[str, Any]]
    cues: dict[str, Any]
    # arm -> test set -> one (N,) score vector per seed; arm -> one threshold per seed
    scores: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)
    thresholds: dict[str, list[float]] = field(default_factory=dict)
    split: tuple[np.ndarray, np.ndarray] = (np.zeros(0, int), np.zeros(0, int))  # --seed's
    seen: int = 0
    secs: float = 0.0
    figures: dict[str, list[str]] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    @property
    def live(self) -> list[Arm]:
        return [a for a in self.arms if self.arm_info[a.name]["status"] == "ok"]


def evaluate(ws: Workspace, cfg: EvaluateConfig = EvaluateConfig(), *, name: str = "default",
             force: bool = False, show_progress: bool = True) -> EvalResult:  # fmt: skip
    """Train and score every arm (see the module docstring); save config, results, figures."""
    run = _prepare(ws, cfg, name, force)
    _train(run, cfg, show_progress)
    _score(run, cfg)
    return _finish(run, cfg, name)


# ---- the images, the arms, config.json ------------------------------------------------------


def _prepare(ws: Workspace, cfg: EvaluateConfig, name: str, force: bool) -> _Run:
    arms = cfg.arm_list()
    cues = parse_cues(cfg.cues)
    folder = ws.evaluation(name)  # the workspace's one name rule (exit 3)
    if folder.path.exists() and any(folder.path.iterdir()) and not force:
        raise InputError(f"{folder.path} exists; pass --force to overwrite it or choose "
                         "another --name")  # fmt: skip
    real_cues, syn_cues = CueFacts(), CueFacts()
    data = load_real(ws, cfg.size, cues, real_cues)
    train_rows = np.nonzero(data.split == "train")[0]
    counts = np.bincount(data.y[train_rows], minlength=len(LABELS))
    have = dict(zip(LABELS, counts.tolist(), strict=True))
    vassert(counts.min() >= 4, f"{ws.dataset_path} has {have} training images; evaluate needs "
            "at least 4 per class")  # fmt: skip
    label = cfg.augment_class or scarce_class(have)
    sets, set_info = test_sets(data, cfg.min_test_per_class)
    syn, syn_reason = (load_synthetic(ws, label, cfg.run, cfg.size, cues, syn_cues)
                       if cfg.run or any(a.needs_synthetic for a in arms)  # --run: checked
                       else (np.zeros((0, cfg.size, cfg.size), np.float32), ""))  # fmt: skip
    cells = (load_cells(ws, cfg.run, cfg.size, cues, syn_cues)
             if any(a.needs_cells for a in arms) else None)  # fmt: skip
    arm_info: dict[str, dict[str, Any]] = {}
    for a in arms:
        why, n = ((cells.reason, len(cells.x) * (a.kind == "cells"))
                  if a.needs_cells and cells is not None
                  else (syn_reason, len(syn)) if a.needs_synthetic else ("", 0))  # fmt: skip
        arm_info[a.name] = {"status": "skipped" if why else "ok", "reason": why,
                            "synthetic_images": n, "seeds": []}  # fmt: skip
        if a.kind == "cells" and cells is not None:  # per class and cond_source
            arm_info[a.name]["cells"] = cells.counts(data)
    config = {**asdict(cfg), "name": name, "augmented_class": label,
              "arms_run": [a.name for a in arms], "cue_steps": list(cues),
              "dataset": str(ws.dataset_path), "cxraug_version": __version__}  # fmt: skip
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder.config_path, config)
    cue_doc = {"steps": list(cues), "real": real_cues.to_json(), "synthetic": syn_cues.to_json()}
    return _Run(folder, config, data, label, sets, set_info, syn, cells, arms, arm_info,
                cue_doc)  # fmt: skip


# ---- training: seeds x arms -----------------------------------------------------------------


def _train(run: _Run, cfg: EvaluateConfig, show_progress: bool) -> None:
    d, net = run.data, cfg.net()
    train_rows = np.nonzero(d.split == "train")[0]
    run.scores = {a.name: {t: [] for t in run.sets} for a in run.live}
    run.thresholds = {a.name: [] for a in run.live}
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        rng = np.random.default_rng([cfg.seed, s, 0x5A1])
        f_pos, v_pos = validation_split(d.patient[train_rows], d.y[train_rows], cfg.val_fraction,
                                        rng)  # fmt: skip
        fit_idx, val_idx = train_rows[f_pos], train_rows[v_pos]
        short = [c for k, c in enumerate(LABELS)
                 if not (d.y[val_idx] == k).any() or not (d.y[fit_idx] == k).any()]
        vassert(not short, f"class {', '.join(short)}: too few training patients to hold some "
                "out for validation (early stopping and the threshold need both classes); "
                "evaluate needs at least 2 training patients per class")  # fmt: skip
        cells = run.cells or Cells(run.syn[:0], np.zeros(0, np.int64), np.zeros(0, str))
        sd = SeedData(d.x[fit_idx], d.y[fit_idx], d.x[val_idx], d.y[val_idx], run.syn,
                      LABELS.index(run.label), seed, (cfg.seed, s),
                      selection={"k": cfg.select_k, "quantile": cfg.select_quantile},
                      cells=cells.x, cells_y=cells.y)  # fmt: skip
        fit_counts = {c: int((sd.y == k).sum()) for k, c in enumerate(LABELS)}
        for arm in run.live:
            p = plan(arm, sd, cfg.steps, cfg.hflip, cfg.pretrain_share)
            if show_progress:
                err.print(f"evaluate: seed {seed}, arm {arm.name}: training on "
                          f"{len(sd.x) + p.added} images", highlight=False)  # fmt: skip
            tr, phases = train(p, sd, net)
            probe = source_probe(tr, d, fit_idx, run.sets["test"]) if cfg.shortcut else None
            _record(run, arm, sd, tr, {"train_images": len(sd.x) + p.added,
                                       "added_images": p.added, "real_fit_images": fit_counts,
                                       **p.facts, **({"phases": phases} if len(phases) > 1
                                                     else {}),
                                       **({"source_probe": probe} if probe else {})})  # fmt: skip
        if s == 0:  # the shortcut check trains on the --seed split, the same whatever --seeds
            run.split = (fit_idx, val_idx)
    for a in run.live:  # the counts of every seed, and their means for the table
        info = run.arm_info[a.name]
        for key in ("train_images", "added_images"):
            info[key] = int(round(np.mean([e[key] for e in info["seeds"]])))
        if probes := [e["source_probe"] for e in info["seeds"] if "source_probe" in e]:
            info["source_probe"] = probe_summary(probes)


def _record(run: _Run, arm: Arm, sd: SeedData, tr: Trained, facts: dict[str, Any]) -> None:
    """One arm x seed: its validation threshold, its scores on every test set, its facts."""
    t = stats.youden_threshold(sd.y_val, tr.predict(sd.x_val)[:, 1])
    if arm.name == "real":
        sd.reference = (tr, t)  # what `selected` judges this seed's synthetic images with
    run.thresholds[arm.name].append(t)
    for name_t, idx in run.sets.items():
        run.scores[arm.name][name_t].append(tr.predict(run.data.x[idx])[:, 1])
    run.seen, run.secs = run.seen + tr.images_seen, run.secs + tr.seconds
    run.arm_info[arm.name]["seeds"].append({
        "seed": sd.seed, "best_step": tr.best_step, "steps_run": tr.steps_run,
        "val_auc": round(tr.best_val, 4), "threshold": round(t, 4),
        "train_seconds": round(tr.seconds, 2), **facts})  # fmt: skip


# ---- scoring: every test set, the figures ---------------------------------------------------


def _score(run: _Run, cfg: EvaluateConfig) -> None:
    live = [a.name for a in run.live]
    grid = np.linspace(0.0, 1.0, 101)
    rocs, diff_panels = [], []
    for k, (name_t, idx) in enumerate(run.sets.items()):
        rng = np.random.default_rng([cfg.seed, 0xB007, k])
        res = stats.patient_resamples(list(run.data.patient[idx]), cfg.bootstrap, rng)
        y = run.data.y[idx]
        metrics, boots, curves = {}, {}, []
        for a in live:
            sc = np.stack(run.scores[a][name_t])  # (S, N)
            metrics[a], boots[a] = stats.arm_metrics(y, sc, np.array(run.thresholds[a]), res)
            curves.append((a, *stats.roc_band(y, sc, res[: cfg.band_resamples], grid)))
        diffs = {a: stats.paired_difference(metrics[a], boots[a], metrics["real"], boots["real"])
                 for a in live if a != "real"}  # fmt: skip
        info = run.set_info[name_t]
        info["metrics"] = {a: {m: v.to_json() for m, v in d.items()} for a, d in metrics.items()}
        info["differences"] = {a: {m: v.to_json() for m, v in d.items()}
                               for a, d in diffs.items()}  # fmt: skip
        rocs.append(draw_roc(grid, curves, f"ROC on {name_t} ({len(idx)} images, "
                                           f"{cfg.seeds} seed(s), mean over seeds)"))  # fmt: skip
        rows = [(f"{a} {short}", d[m].value, d[m].lo, d[m].hi, live.index(a))
                for m, short in (("auc", "AUC"), ("balanced_accuracy", "bal.acc"))
                for a, d in diffs.items()]  # fmt: skip
        diff_panels.append(draw_differences(rows, f"paired difference from real only "
                                                  f"({name_t}, 95% CI over patients)"))  # fmt: skip
    write_png_rgb(run.folder.roc_plot_path, stack(rocs))
    write_png_rgb(run.folder.differences_plot_path, stack(diff_panels))
    run.figures = {"roc": list(run.sets), "differences": list(run.sets)}


# ---- the shortcut check, speed, results.json ------------------------------------------------


def _finish(run: _Run, cfg: EvaluateConfig, name: str) -> EvalResult:
    shortcut: dict[str, Any] = {"status": "not run (--no-shortcut)"}
    if cfg.shortcut:
        label_bacc = run.set_info["test"]["metrics"]["real"]["balanced_accuracy"]["value"]
        args = (run.data, *run.split, run.sets["test"], cfg.net(), cfg.seed, label_bacc)
        shortcut = {**shortcut_check(*args), "cues": cfg.cues}
        shortcut["arm_probe"] = {a: info["source_probe"] for a, info in run.arm_info.items()
                                 if "source_probe" in info}  # fmt: skip
        if run.cues["steps"] and shortcut["status"] == "ok":  # the same check on the raw images
            raw = shortcut_check(*args, raw=True)
            shortcut["without_cues"] = {k: raw.get(k) for k in (
                "status", "balanced_accuracy", "chance", "skill", "label_balanced_accuracy",
                "within_class_balanced_accuracy", "best_step")}  # fmt: skip
    flops = forward_flops(cfg.net(), 2)
    ips = run.seen / run.secs if run.secs else 0.0
    speed = {"images_per_s": round(ips, 1), "forward_mflop_per_image": round(flops / 1e6, 2),
             "train_gflop_per_s": round(3 * flops * ips / 1e9, 2), "images_seen": run.seen,
             "train_seconds": round(run.secs, 1),
             "wall_seconds": round(time.perf_counter() - run.t0, 1)}  # fmt: skip
    notes = [f"threshold fixed on validation (Youden's J), per seed; CIs: {cfg.bootstrap} "
             "bootstrap resamples of test PATIENTS, the same for every arm (paired)"]
    if not any(t.startswith("external:") for t in run.set_info):
        notes.append("no test-only source: only the internal test split was scored; add one "
                     "with `cxraug collect --test-only NAME` (docs/datasets.md)")  # fmt: skip
    for a, info in run.arm_info.items():
        capped = [e for e in info["seeds"] if e.get("asked", 0) > e["added_images"]]
        if capped:
            notes.append(f"{a}: asked for {capped[0]['asked']} synthetic images, only "
                         f"{len(run.syn)} ok synthetic rows exist; all were added")  # fmt: skip
    if shortcut.get("flag"):
        notes.append(str(shortcut["verdict"]))
    result = EvalResult(name, run.folder, run.config, run.arm_info, run.set_info, shortcut,
                        speed, notes, run.cues, run.figures)  # fmt: skip
    atomic_write_json(run.folder.results_path, result.to_json())
    return result


def report_tables(r: EvalResult) -> list[Any]:
    """One table per test set (arms x metrics, paired differences), then the shortcut check."""
    return report.tables(r.to_json())
