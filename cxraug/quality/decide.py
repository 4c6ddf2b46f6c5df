"""The pure decision core of `cxraug filter`: arrays in, one explained decision per image out.

    calibrate(real_u8, real_ids, config) -> Calibration   every threshold, from the real images
    judge(synthetic_u8, ids, calibration) -> Evaluation    one Decision per synthetic image
    decide(synthetic_u8, real_u8, ids, real_ids, config)   both: the Decisions

None of them needs files. Every threshold is either calibrated on the real images (see
cxraug.quality.scores and cxraug.quality.nearest) or overridden in FilterConfig, and every
rejection says which check failed, with the score and the threshold. One calibration can judge
many synthetic sets.

Checks, in the order their reasons are listed (the first is the row's primary reason):
1. memorised      shift-searched distance to the nearest REAL training image below the
                  calibrated threshold: a synthetic X-ray must never be a copy of a patient's.
2. quality        noise, contrast, brightness, saturated, blank, lung (cxraug.quality.scores).
3. unrealistic    (only with `realism`, off by default) a linear probe, cross-fitted on the
                  real training images against this synthetic set, tells the image from real
                  beyond the real images' own (1 - alpha) quantile (cxraug.quality.realism).
4. near-duplicate among the images that passed 1-3, in id order: an image too close to an
                  already kept one is rejected as its duplicate (mode collapse), so each
                  cluster keeps exactly its first member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from cxraug.core.errors import InputError, vassert
from cxraug.core.settings import (
    FRACTION,
    SEED,
    Settings,
    at_least,
    between,
    setting,
)
from cxraug.quality import realism
from cxraug.quality import scores as quality
from cxraug.quality.nearest import Neighbours, near_duplicates, nearest_real, shift_grid
from cxraug.quality.vectors import shifted_downsamples, unit_rows

_CAL = " (default: calibrated on the real training images)."
_PERCENT = between(0.0, 100.0)
_GREY = between(0.0, 255.0)  # 8-bit grey levels


@dataclass(frozen=True)
class FilterConfig(Settings):
    """Defaults of `cxraug filter`. A threshold left at None is calibrated on the real images.
    `label` is the class the stage judges (None: the scarce class, resolved by the stage);
    `decide` itself only sees arrays."""

    label: str | None = setting(
        None, "Class whose synthetic images are judged [default: the scarce class: the one "
        "with the fewest usable real train images in the manifest].", "--class",
    )  # fmt: skip
    # the accepted range of each score: real-score percentiles [lo, hi], widened by margin
    percentile_lo: float = setting(1.0, "Lower real percentile.", bounds=_PERCENT)
    percentile_hi: float = setting(99.0, "Upper real percentile.", bounds=_PERCENT)
    margin: float = setting(
        0.1, "Widen the calibrated range by this fraction per side.", bounds=at_least(0)
    )
    noise_max: float | None = setting(None, "Max noise ratio" + _CAL, bounds=at_least(0))
    contrast_min: float | None = setting(None, "Min pixel std" + _CAL, bounds=at_least(0))
    contrast_max: float | None = setting(None, "Max pixel std" + _CAL, bounds=at_least(0))
    brightness_min: float | None = setting(None, "Min mean grey level" + _CAL, bounds=_GREY)
    brightness_max: float | None = setting(None, "Max mean grey level" + _CAL, bounds=_GREY)
    saturated_max: float | None = setting(None, "Max fraction at 0/255" + _CAL, bounds=FRACTION)
    blank_max: float | None = setting(None, "Max fraction at one level" + _CAL, bounds=FRACTION)
    lung_min: float | None = setting(
        None, "Min correlation with mean real" + _CAL, bounds=between(-1.0, 1.0)
    )
    grid: int = setting(32, "Side of the downsampled images compared.", bounds=between(8, 128))
    # memorisation search: shifts up to +-shift_px full-resolution pixels in steps of
    # shift_step (25 shifts by default)
    shift_px: int = setting(4, "Memorisation shift search radius (px).", bounds=at_least(0))
    shift_step: int = setting(2, "Shift search step (px).", bounds=at_least(1))
    candidates: int = 5  # nearest real images (at zero shift) refined with the shift search
    memorised_percentile: float = setting(
        1.0, "Percentile of real-vs-real NN distances.", bounds=_PERCENT
    )
    memorised_max: float | None = setting(None, "Min distance to real" + _CAL, bounds=at_least(0))
    # of real-vs-real zero-shift nearest distances
    duplicate_percentile: float = setting(
        1.0, "Percentile of real-vs-real NN distances.", bounds=_PERCENT
    )
    duplicate_max: float | None = setting(None, "Min synthetic distance" + _CAL, bounds=at_least(0))
    # real pairs closer than this are copies of one image inside the real set (same picture
    # under two names); they would drag the calibrated distance thresholds to ~0, so they are
    # left out of the calibration (and counted in the saved config).
    real_copy_below: float = 0.05
    min_real: int = 10
    sheet_kept: int = 48  # kept images shown on the contact sheet (a seeded random sample)
    sheet_rejected: int = 192  # rejected images shown (all of them up to this many)
    seed: int = setting(0, "Seeds the sample of kept images on the sheet and the folds of "
                        "--realism.", bounds=SEED)  # fmt: skip
    realism: bool = setting(
        False, "Also reject images a linear probe tells from the real training images (the "
        "C2ST's probe at 128 px, cross-fitted per image; docs/filter.md). Off by default: it "
        "rejects nearly every image of a set the C2ST separates.", "--realism/--no-realism",
    )  # fmt: skip
    realism_alpha: float = setting(
        0.05, "--realism: reject above the real images' (1 - alpha) score quantile (about "
        "alpha of a set like the real images is rejected).", bounds=between(0.0, 1.0),
    )  # fmt: skip

    def check(self) -> None:
        vassert(self.percentile_lo < self.percentile_hi,
                "--percentile-lo must be below --percentile-hi")  # fmt: skip
        vassert(self.candidates >= 1, "candidates must be >= 1")
        vassert(self.min_real >= 2, "min_real must be >= 2")


THRESHOLD_NAMES: tuple[str, ...] = (
    "memorised_max",
    "noise_max",
    "contrast_min",
    "contrast_max",
    "brightness_min",
    "brightness_max",
    "saturated_max",
    "blank_max",
    "lung_min",
    "duplicate_max",
)


@dataclass(frozen=True)
class Decision:
    """The verdict on one synthetic image, with every failed check explained."""

    id: str
    kept: bool
    keys: tuple[str, ...] = ()  # failed checks, primary first: "memorised", "noise", ...
    reasons: tuple[str, ...] = ()  # the same, as sentences with score and threshold
    scores: dict[str, float] = field(default_factory=dict)
    nearest_real: str = ""
    duplicate_of: str = ""

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def primary(self) -> str:
        return self.keys[0] if self.keys else "kept"

    def note(self) -> str:
        """Key scores for the manifest's `note` column."""
        s = self.scores
        parts = [f"{k}={s[k]:{quality.SPECS[k].fmt}}" for k in quality.SCORE_NAMES if k in s]
        if "realism" in s:
            parts.append(f"realism={s['realism']:.2f}")
        if "nn_real" in s:
            parts.append(f"nn_real={s['nn_real']:.3f} ({self.nearest_real})")
        return "filter: " + " ".join(parts)


@dataclass(frozen=True)
class Calibration:
    """Every threshold of the checks, calibrated on the real images (M of them) or overridden
    in the config, and what judging needs of those images."""

    config: FilterConfig
    thresholds: dict[str, float | None]  # every name in THRESHOLD_NAMES
    calibrated: dict[str, bool]  # False where the config overrode the calibrated value
    real_percentiles: dict[str, list[float]]  # score -> [p_lo, p_hi] on the real images
    real_copies_ignored: int  # real images whose nearest real neighbour is a copy of them
    shifts: list[tuple[int, int]]
    real_ids: list[str]
    image_shape: tuple[int, int]  # (H, W) of the real images
    real_small: np.ndarray  # (M, g*g) the real images downsampled to the grid
    real_unit: np.ndarray  # (M, g*g) the same as unit rows: the nearest-real search space
    real_probe: np.ndarray | None = None  # (M, D) the realism probe's features (`realism`)

    def to_json(self) -> dict[str, object]:
        return {
            "config": asdict(self.config),
            "thresholds": self.thresholds,
            "calibrated": self.calibrated,
            "real_score_percentiles": self.real_percentiles,
            "real_copies_ignored_in_calibration": self.real_copies_ignored,
            "shifts": [list(t) for t in self.shifts],
        }


@dataclass(frozen=True)
class Evaluation:
    """The decisions on a set of synthetic images and the calibration that judged them."""

    decisions: list[Decision]
    calibration: Calibration


def _check_real(real: np.ndarray, real_ids: Sequence[str], cfg: FilterConfig) -> None:
    vassert(real.ndim == 3 and real.dtype == np.uint8, "real images must be (M, H, W) uint8")
    vassert(len(real_ids) == real.shape[0], "one id per image is required")
    if real.shape[0] < cfg.min_real:
        raise InputError(
            f"only {real.shape[0]} real training image(s) to calibrate the filter's thresholds; "
            f"it needs at least {cfg.min_real}: collect more real images of this class and "
            "re-run `cxraug preprocess`"
        )


def _check_synthetic(syn: np.ndarray, ids: Sequence[str], real_hw: tuple[int, int]) -> None:
    vassert(syn.ndim == 3 and syn.dtype == np.uint8, "synthetic images must be (N, H, W) uint8")
    vassert(len(ids) == syn.shape[0], "one id per image is required")
    vassert(len(set(ids)) == len(ids), "synthetic ids must be unique")
    if syn.shape[0] and syn.shape[1:] != real_hw:
        raise InputError(
            f"synthetic images are {syn.shape[2]}x{syn.shape[1]} but the real training images "
            f"are {real_hw[1]}x{real_hw[0]}; generate with a model trained on this "
            "processed dataset (or re-run `cxraug preprocess` at the generator's size)"
        )


def _clean_percentile(d: np.ndarray, pct: float, copy_below: float) -> tuple[float, int]:
    """Percentile of real NN distances, leaving out real-set copies (d < copy_below)."""
    keep = d[d >= copy_below]
    if keep.size == 0:
        raise InputError(
            "every real training image has a near-identical copy in the real set, so no "
            "distance threshold can be calibrated; remove the duplicates or pass "
            "--memorised-max and --duplicate-max"
        )
    return float(np.percentile(keep, pct)), int(d.size - keep.size)


def calibrate(real_u8: np.ndarray, real_ids: Sequence[str],
              config: FilterConfig = FilterConfig()) -> Calibration:  # fmt: skip
    """Every threshold from the real (M, H, W) uint8 images: each score's real percentiles,
    widened by the margin; the memorisation and near-duplicate distances from real-vs-real
    nearest neighbours. A threshold the config sets overrides the calibrated one."""
    cfg = config  # checked when it was built (Settings)
    _check_real(real_u8, real_ids, cfg)
    shifts = shift_grid(cfg.shift_px, cfg.shift_step)
    real_small = shifted_downsamples(real_u8, cfg.grid)[:, 0]  # (M, g*g)
    real_unit = unit_rows(real_small)
    real_scores = {
        **quality.histogram_scores(real_u8),
        "noise": quality.noise_scores(real_u8),
        "lung": quality.real_lung_scores(real_small),
    }
    thresholds: dict[str, float | None] = {}
    pcts: dict[str, list[float]] = {}
    for name, spec in quality.SPECS.items():
        v = real_scores[name]
        pcts[name] = [float(x) for x in np.percentile(v, [cfg.percentile_lo, cfg.percentile_hi])]
        lo, hi = quality.calibrate(v, spec, cfg.percentile_lo, cfg.percentile_hi, cfg.margin)
        for side, val in (("min", lo), ("max", hi)):
            if val is not None:
                thresholds[f"{name}_{side}"] = val
    rr = nearest_real(real_u8, real_unit, grid=cfg.grid, shifts=shifts,
                      candidates=cfg.candidates, exclude_self=True)  # fmt: skip
    thresholds["memorised_max"], n_copies = _clean_percentile(
        rr.dist, cfg.memorised_percentile, cfg.real_copy_below
    )
    thresholds["duplicate_max"], _ = _clean_percentile(
        rr.dist0, cfg.duplicate_percentile, cfg.real_copy_below
    )
    calibrated: dict[str, bool] = {}
    for name in THRESHOLD_NAMES:
        override = getattr(cfg, name)
        calibrated[name] = override is None
        if override is not None:
            thresholds[name] = float(override)
    probe = realism.features(real_u8) if cfg.realism else None
    return Calibration(cfg, thresholds, calibrated, pcts, n_copies, shifts, list(real_ids),
                       (real_u8.shape[1], real_u8.shape[2]), real_small, real_unit,
                       probe)  # fmt: skip


def _failed_checks(scores: dict[str, np.ndarray], nb: Neighbours,
                   cal: Calibration) -> tuple[list[list[str]], list[list[str]]]:  # fmt: skip
    """Checks 1 and 2 of the module docstring: per image, the keys and the sentences of the
    checks it fails, in that order."""
    n = len(nb.dist)
    keys: list[list[str]] = [[] for _ in range(n)]
    reasons: list[list[str]] = [[] for _ in range(n)]
    mem_t = cal.thresholds["memorised_max"]
    for i in range(n):
        if mem_t is not None and nb.dist[i] < mem_t:
            keys[i].append("memorised")
            reasons[i].append(
                f"memorised: too close to real {cal.real_ids[nb.index[i]]} "
                f"(d={nb.dist[i]:.3f}, threshold {mem_t:.3f})"
            )
        for name, spec in quality.SPECS.items():
            x = float(scores[name][i])
            for side, key, text in (
                ("min", spec.key_low, spec.text_low),
                ("max", spec.key_high, spec.text_high),
            ):
                t = cal.thresholds.get(f"{name}_{side}")
                if key is None or t is None or (x >= t if side == "min" else x <= t):
                    continue
                keys[i].append(key)
                reasons[i].append(text.format(v=format(x, spec.fmt), t=format(t, spec.fmt)))
    return keys, reasons


def _unrealistic(synthetic_u8: np.ndarray, cal: Calibration, keys: list[list[str]],
                 reasons: list[list[str]]) -> np.ndarray:  # fmt: skip
    """Check 3 (with `realism`): each image's out-of-fold log-odds "synthetic"; those above
    the real images' (1 - alpha) quantile get the key "unrealistic". Returns the scores."""
    cfg = cal.config
    assert cal.real_probe is not None  # calibrated with realism on
    real_s, syn_s = realism.realism_scores(cal.real_probe, synthetic_u8, seed=cfg.seed)
    t = realism.threshold(real_s, cfg.realism_alpha)
    q = 100 * (1 - cfg.realism_alpha)
    for i in np.flatnonzero(syn_s > t):
        keys[i].append("unrealistic")
        reasons[i].append(f"unrealistic: a linear probe at {realism.probe_size(cal.image_shape)}"
                          " px tells it from the "
                          f"real images (log-odds {syn_s[i]:.2f} > {t:.2f}, the real images' "
                          f"{q:g}th percentile)")  # fmt: skip
    return syn_s


def _duplicates(syn_small: np.ndarray, ids: Sequence[str], keys: list[list[str]],
                reasons: list[list[str]], dup_t: float | None) -> dict[int, int]:  # fmt: skip
    """Check 3: near-duplicates among the images that passed checks 1-2, in id order (added
    to `keys` and `reasons`); returns {image: the kept image it duplicates}."""
    survivors = sorted((i for i in range(len(ids)) if not keys[i]), key=lambda i: ids[i])
    if dup_t is None or not survivors:
        return {}
    local = near_duplicates(unit_rows(syn_small[survivors]), range(len(survivors)), dup_t)
    dup_of = {survivors[a]: (survivors[b], d) for a, (b, d) in local.items()}
    for i, (j, d) in dup_of.items():
        keys[i].append("near-duplicate")
        reasons[i].append(f"near-duplicate of {ids[j]} (d={d:.3f}, threshold {dup_t:.3f})")
    return {i: j for i, (j, _) in dup_of.items()}


def judge(synthetic_u8: np.ndarray, ids: Sequence[str], calibration: Calibration) -> Evaluation:
    """One Decision per synthetic (N, H, W) uint8 image, by the calibrated thresholds."""
    cal, cfg = calibration, calibration.config
    _check_synthetic(synthetic_u8, ids, cal.image_shape)
    n = synthetic_u8.shape[0]
    scores = {
        **quality.histogram_scores(synthetic_u8),
        "noise": quality.noise_scores(synthetic_u8),
    }
    syn_small = shifted_downsamples(synthetic_u8, cfg.grid)[:, 0]  # (N, g*g)
    scores["lung"] = quality.lung_scores(syn_small, cal.real_small.mean(axis=0))
    nb = (
        nearest_real(synthetic_u8, cal.real_unit, grid=cfg.grid, shifts=cal.shifts,
                     candidates=cfg.candidates)  # fmt: skip
        if n
        else Neighbours(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    )
    keys, reasons = _failed_checks(scores, nb, cal)
    if cfg.realism:
        if cal.real_probe is None:
            raise InputError("--realism: the calibration was made without it; calibrate "
                             "with realism on")  # fmt: skip
        scores["realism"] = _unrealistic(synthetic_u8, cal, keys, reasons)
    dup_of = _duplicates(syn_small, ids, keys, reasons, cal.thresholds["duplicate_max"])
    decisions = []
    for i in range(n):
        image_scores = {k: float(scores[k][i]) for k in quality.SCORE_NAMES}
        image_scores["nn_real"] = float(nb.dist[i])
        if "realism" in scores:
            image_scores["realism"] = float(scores["realism"][i])
        decisions.append(Decision(
            id=ids[i], kept=not keys[i], keys=tuple(keys[i]), reasons=tuple(reasons[i]),
            scores=image_scores, nearest_real=str(cal.real_ids[nb.index[i]]),
            duplicate_of=ids[dup_of[i]] if i in dup_of else "",
        ))  # fmt: skip
    return Evaluation(decisions, cal)


def decide(
    synthetic_u8: np.ndarray,
    real_u8: np.ndarray,
    ids: Sequence[str],
    real_ids: Sequence[str],
    config: FilterConfig = FilterConfig(),
) -> list[Decision]:
    """One Decision per synthetic image (N, H, W) uint8, judged against real (M, H, W) uint8."""
    return judge(synthetic_u8, ids, calibrate(real_u8, real_ids, config)).decisions
