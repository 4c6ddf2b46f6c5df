"""The arms of `evaluate`: what each one trains on, and how (docs/evaluate.md, "Arms").

Every arm of a seed starts from that seed's initial weights, is stopped early on that seed's
validation images and has the same step budget; only the training images and their schedule
differ. K is the augmented (scarce) class, n_K and n_other its and the other class's real
images in the seed's fit set (the TRAIN rows less the validation patients):

    real                  the real fit images                                uniform batches
    oversample            the same                                           class-balanced
    classical             the same, moved and re-lit (cxraug.classify.augment) uniform
    synthetic             + every ok synthetic K image                        uniform
    synthetic+classical   as synthetic, with the classical augmentation       uniform
    synthetic@R           + R x n_K synthetic K images (R = "balance": up to n_other), a
                          seeded subsample; the ratio arms of a seed are nested (prefixes of
                          one permutation)
    duplicate[@R]         + as many copies of real K images as synthetic[@R] adds synthetic
                          ones (count-matched: "more images" is then not what differs)
    selected              + the synthetic K images that the seed's `real` model accepts
                          (cxraug.classify.select), trained like synthetic
    pretrain              phase 1: synthetic K + the real images of the other class, for
                          round(share x steps) steps; phase 2 from phase 1's kept weights,
                          a fresh optimizer: the real fit images only, the remaining steps
    cells                 + every ok synthetic image of EITHER class generated for a class x
                          source cell (cond_source non-empty: COVID in the normal sources'
                          look, normal in the COVID source's look)               uniform
    cells-duplicate       + as many copies of real images of EACH class as cells adds of
                          that class (the cells arm's count-matched control)    uniform

"Synthetic K" above is always the rows with an empty cond_source: an image drawn in another
source's look goes to the cells arm only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxraug.classify import net
from cxraug.classify.augment import Classical
from cxraug.classify.net import NetConfig, Trained
from cxraug.classify.select import select_synthetic
from cxraug.core.errors import vassert

BASE_ARMS: tuple[str, ...] = (
    "real", "oversample", "classical", "synthetic", "synthetic+classical", "duplicate",
    "selected", "pretrain", "cells", "cells-duplicate",
)  # fmt: skip
#: the default list: bounded run time (docs/evaluate.md, "Time"); the rest by --arms
DEFAULT_ARMS: tuple[str, ...] = BASE_ARMS[:6]
_RATIO_KINDS = ("synthetic", "duplicate")  # the arms that take "@R"
CELL_KINDS = ("cells", "cells-duplicate")  # the arms that need the cell images


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # real | synthetic | duplicate | selected | pretrain | cells | cells-duplicate
    ratio: str = ""  # synthetic / duplicate: "" every ok row, "balance", or a number
    balanced: bool = False  # class-balanced batches (oversample)
    classical: bool = False  # the classical augmentation

    @property
    def needs_synthetic(self) -> bool:
        """Trains on the synthetic K images (cond_source empty)."""
        return self.kind not in ("real", *CELL_KINDS)

    @property
    def needs_cells(self) -> bool:
        """Trains on (or is count-matched to) the class x source cell images."""
        return self.kind in CELL_KINDS


def parse_ratio(text: str) -> str:
    """"0.25" / ".5" / "1" -> the canonical "0.25" / "0.5" / "1"; "balance" stays."""
    t = text.strip().lower()
    if t == "balance":
        return t
    try:
        r = float(t)
    except ValueError:
        r = float("nan")
    vassert(np.isfinite(r) and r > 0, f"synthetic ratio {text!r}: use a positive number "
            "(x the real count of the augmented class, e.g. 0.5) or balance")  # fmt: skip
    return f"{r:g}"


def parse_arm(name: str) -> Arm | None:
    """The arm NAME stands for, or None when it names none."""
    base, at, ratio = name.partition("@")
    if at:
        return Arm(f"{base}@{parse_ratio(ratio)}", base, parse_ratio(ratio)) \
            if base in _RATIO_KINDS else None  # fmt: skip
    if name not in BASE_ARMS:
        return None
    kind = {"oversample": "real", "classical": "real", "synthetic+classical": "synthetic"}
    return Arm(name, kind.get(name, name), "", name == "oversample", "classical" in name)


def arm_list(arms: str, ratios: str) -> list[Arm]:
    """`--arms` plus a synthetic@R arm per `--synthetic-ratio` value; `real` always first."""
    names = [a.strip() for a in arms.split(",") if a.strip()]
    names += [f"synthetic@{r.strip()}" for r in ratios.split(",") if r.strip()]
    parsed = {n: parse_arm(n) for n in names}
    bad = [n for n, a in parsed.items() if a is None]
    vassert(names and not bad, f"--arms {arms!r}: unknown arm(s) {', '.join(bad)}; use a "
            f"comma-separated list of {', '.join(BASE_ARMS)}, synthetic@R or duplicate@R "
            "(R: a ratio such as 0.5, or balance)")  # fmt: skip
    out = {"real": Arm("real", "real")}
    out.update({a.name: a for a in parsed.values() if a is not None})
    return list(out.values())


@dataclass
class SeedData:
    """One seed's images: the real fit and validation images, the synthetic pool, and the
    seed's `real` model once trained (for `selected`)."""

    x: np.ndarray  # (N, S, S) real fit images
    y: np.ndarray  # (N,)
    x_val: np.ndarray
    y_val: np.ndarray
    syn: np.ndarray  # (K, S, S) ok synthetic images of class `label`
    label: int  # the augmented class
    seed: int  # the seed of the initial weights and batch order
    key: tuple[int, int]  # (base seed, seed number): the subsample and duplicate streams
    reference: tuple[Trained, float] | None = None  # the real arm's model and threshold
    selection: dict[str, Any] = field(default_factory=dict)  # selected's rule settings
    cells: np.ndarray | None = None  # (M, S, S) the cells arm's images, both classes
    cells_y: np.ndarray | None = None  # (M,) their classes

    def order(self, stream: int, n: int) -> np.ndarray:
        """A seeded permutation of range(n), the same for every arm of this seed."""
        return np.random.default_rng([*self.key, stream]).permutation(n)


@dataclass
class Phase:
    x: np.ndarray
    y: np.ndarray
    steps: int
    balanced: bool = False
    augment: Classical | None = None


@dataclass
class Plan:
    phases: list[Phase]
    added: int  # images added to the real fit images
    facts: dict[str, Any] = field(default_factory=dict)  # what the arm chose, for results


def added_count(arm: Arm, sd: SeedData) -> tuple[int, int]:
    """(images a synthetic[@R] arm adds, images it asked for) in this seed."""
    n_k = int((sd.y == sd.label).sum())
    if arm.ratio == "":
        want = len(sd.syn)
    elif arm.ratio == "balance":
        want = max(0, len(sd.y) - 2 * n_k)  # n_other - n_K
    else:
        want = int(np.floor(float(arm.ratio) * n_k + 0.5))  # halves round up
    return min(want, len(sd.syn)), want


def _copies(sd: SeedData, mine: np.ndarray, n: int, stream: int) -> np.ndarray:
    """n positions into sd.x drawn from `mine`, every one copied as evenly as possible (whole
    seeded permutations, the last one cut); `stream` 0 is the duplicate arm's own stream."""
    reps = -(-n // max(len(mine), 1))
    picks = [mine[sd.order(0xD0B1 + 0x100 * stream + r, len(mine))] for r in range(reps)]
    return np.concatenate([*picks, np.zeros(0, np.int64)])[:n]


def plan(arm: Arm, sd: SeedData, steps: int, hflip: bool, pretrain_share: float) -> Plan:
    """What `arm` trains on in this seed, in one phase or two (pretrain)."""
    aug = Classical(hflip=hflip) if arm.classical else None
    facts: dict[str, Any] = {}
    if arm.kind == "pretrain":
        other = sd.y != sd.label
        first = max(1, min(steps - 1, int(round(pretrain_share * steps))))
        x1 = np.concatenate([sd.syn, sd.x[other]])
        y1 = np.concatenate([np.full(len(sd.syn), sd.label, np.int64), sd.y[other]])
        facts = {"pretrain_steps": first, "finetune_steps": steps - first,
                 "pretrain_images": len(x1)}  # fmt: skip
        return Plan([Phase(x1, y1, first), Phase(sd.x, sd.y, steps - first)], len(sd.syn), facts)
    if arm.kind in CELL_KINDS:
        if sd.cells is None or sd.cells_y is None:
            raise RuntimeError(f"the {arm.kind} arm needs the seed's cell images")
        if arm.kind == "cells":
            add, add_y = sd.cells, sd.cells_y.astype(np.int64)
        else:  # real copies, class by class, as many as cells adds of each
            picks = [_copies(sd, np.nonzero(sd.y == c)[0], int((sd.cells_y == c).sum()),
                             1 + int(c))
                     for c in np.unique(sd.cells_y)]  # fmt: skip
            idx = np.concatenate([*picks, np.zeros(0, np.int64)])
            add, add_y = sd.x[idx], sd.y[idx]
            facts = {"matches": "cells"}
        x, y = np.concatenate([sd.x, add]), np.concatenate([sd.y, add_y])
        return Plan([Phase(x, y, steps, arm.balanced, aug)], len(add), facts)
    if arm.kind == "real":
        add = sd.syn[:0]
    elif arm.kind == "synthetic":
        n, want = added_count(arm, sd)
        add = sd.syn if arm.ratio == "" else sd.syn[sd.order(0xA255, len(sd.syn))[:n]]
        facts = {"asked": want} if arm.ratio else {}
    elif arm.kind == "duplicate":
        n, _ = added_count(arm, sd)
        add = sd.x[_copies(sd, np.nonzero(sd.y == sd.label)[0], n, 0)]
        facts = {"matches": "synthetic" + (f"@{arm.ratio}" if arm.ratio else "")}
    else:  # selected
        if sd.reference is None:
            raise RuntimeError("the selected arm needs the seed's real arm trained first")
        model, threshold = sd.reference
        sel = select_synthetic(model, threshold, sd.syn, sd.x, sd.y, sd.x_val, sd.y_val,
                               sd.label, **sd.selection)  # fmt: skip
        add, facts = sd.syn[sel.keep], sel.facts()
    x = np.concatenate([sd.x, add])
    y = np.concatenate([sd.y, np.full(len(add), sd.label, np.int64)])
    return Plan([Phase(x, y, steps, arm.balanced, aug)], len(add), facts)


def train(p: Plan, sd: SeedData, cfg: NetConfig) -> tuple[Trained, list[dict[str, Any]]]:
    """Run the plan's phases, each from the previous one's kept weights; the last phase's
    model, with the steps, images and seconds of all phases, and each phase's facts."""
    init, done, seen, secs = None, 0, 0, 0.0
    phases: list[dict[str, Any]] = []
    tr: Trained | None = None
    for k, ph in enumerate(p.phases):
        tr = net.fit(ph.x, ph.y, sd.x_val, sd.y_val, 2, dataclasses.replace(cfg, steps=ph.steps),
                     sd.seed, balanced=ph.balanced, augment=ph.augment, init=init,
                     stream=k)  # fmt: skip
        phases.append({"steps": ph.steps, "steps_run": tr.steps_run,
                       "best_step": tr.best_step, "val_auc": round(tr.best_val, 4)})  # fmt: skip
        init, seen, secs = tr.weights, seen + tr.images_seen, secs + tr.seconds
        done += tr.steps_run
    assert tr is not None  # a plan has at least one phase
    best = done - tr.steps_run + tr.best_step  # counted over all phases
    return dataclasses.replace(tr, best_step=best, steps_run=done, images_seen=seen,
                               seconds=secs), phases  # fmt: skip
