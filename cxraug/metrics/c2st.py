"""Classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017): can a linear probe tell REAL
images from FAKE ones? Its held-out AUC, at several scales, with a 95 % CI and a real-vs-real
baseline computed the same way. 0.5 = indistinguishable. Works on pixels, not network features.

Protocol (`c2st`), the same at every scale s in `sizes`:
1. Equal sides: n = min(N_real, N_fake, max_per_side) images are drawn (seeded) from each side,
   once, so chance is exactly 0.5. One draw for all repeats: their spread is then split noise
   only (it enters the CI), and the sampling of the draw is the bootstrap's business.
2. Stratified K-fold cross-validation (K = `folds`), GROUPED: images that share a group (a
   patient; a fake is its own group) always fall in the same fold, so no patient is on both
   sides of a train/test split and the probe cannot score by recognising a person. Groups are
   dealt out per class, largest first, each to the fold with the fewest images of that class:
   every fold holds ~n/K images of each side.
3. Each fold's probe (cxraug.metrics.probe: per feature block, standardise -> PCA; one
   logistic regression over all the blocks' directions; fitted on the other K - 1 folds
   only) scores its held-out images; the pooled out-of-fold scores
   give one AUC per repeat, and `repeats` seeded repeats (new folds) are averaged:
   auc = mean_r AUC_r. `auc_std` is their spread.
4. AUC = P(score(fake) > score(real)) + P(tie) / 2, the Mann-Whitney statistic: with ranks of
   the pooled scores (ties get their average rank), AUC = (R_fake - n_f (n_f + 1) / 2) /
   (n_f n_r). It is direction-fixed by training, so values below 0.5 are noise, not signal.

95 % CI: mean +- 1.96 sqrt(V_test + V_split), two variances added:
- V_test, how the AUC moves with the test images: a cluster bootstrap over GROUPS. Each of
  `boot` resamples draws, per side, as many groups as that side has, with replacement; an image
  weighs as often as its group was drawn, and the weighted Mann-Whitney AUC
      AUC_w = sum_ij w_i v_j [1(f_i > r_j) + 1(f_i = r_j) / 2] / (sum_i w_i sum_j v_j)
  is recomputed from the FIXED out-of-fold scores; V_test is its variance over the resamples,
  averaged over the repeats. Groups, because images of one patient are correlated: resampling
  images would make the interval too narrow.
- V_split, how the AUC moves with the training split, which a bootstrap of fixed scores cannot
  see (a cross-validated AUC has no unbiased variance estimator; Bengio & Grandvalet 2004): the
  variance (ddof 1) of the R per-repeat AUCs. It is not divided by R: it stands in for the
  probe's own variance over training sets, which averaging the repeats does not remove.
Clipped to [0, 1]. Measured under the null on real images (100 random patient-grouped halves
of a workspace's 342 training COVID images, docs/fid.md): the bootstrap alone covered 0.5 in
88-89 % of the splits at 32 and 64 px; the sum covered it in 89-92 % with 171 per side and
93-95 % with 85 per side (the one-PCA probe before 2026-12-05; the per-block probe, 40 splits
of 85 per side: 90 % at 32 px, 95 % at 64 px). Under the null the AUC scatters on both sides
of 0.5, slightly more below: a held-out image is missing from its own class's training fold,
which pulls the probe away from it (the small negative bias of cross-validated AUC).

By block (`C2stResult.blocks`): the AUC of the regression on ONE block's directions alone
(pixels, detail, texture: cxraug.metrics.probe), same folds and PCAs as the whole, the mean of
its per-repeat AUCs, no interval.
A diagnostic of WHAT separates the sets (layout and intensity; where the image is sharp or
soft; the distribution of fine detail), not a second test: read the interval of the whole.

Baseline (`baseline`): REAL is split in two halves by group (by image when groups are unknown),
seeded, and the same test is run on the halves (equalised to the same size): the AUC two real
samples of that size reach, the noise floor to read the fake AUC against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.stats

from cxraug.core.errors import InputError, vassert
from cxraug.metrics.probe import COMPONENTS, BlockProbe, block_widths, scale_features

SIZES = (16, 32, 64, 128)
FOLDS = 5
REPEATS = 5
BOOT = 1000
Z95 = 1.959964  # the standard normal's 97.5 % quantile
MAX_PER_SIDE = 300  # the cost grows as n^2 (2 s^2) per fold; 300 per side: ~10 s at 128 px
#: The probe's feature blocks, in `probe.scale_features`' order (`C2stResult.blocks`).
BLOCKS = ("pixels", "detail", "texture")

Images = np.ndarray | Sequence[np.ndarray]  # (N, H, W) or a list of (H, W): uint8 or [-1, 1]


@dataclass(frozen=True)
class C2stResult:
    size: int  # px: images reduced to size x size
    auc: float | None  # mean over repeats of the out-of-fold AUC; None = not computed (note)
    ci: tuple[float, float] | None  # 95 % interval of `auc` (module docstring)
    auc_std: float | None  # std of the per-repeat AUCs
    n_per_side: int  # images per side in each repeat (equalised)
    n_real: int  # images given
    n_fake: int
    groups_real: int
    groups_fake: int
    repeats: int
    folds: int
    note: str = ""
    blocks: dict[str, float] | None = None  # AUC of each feature block alone (BLOCKS)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = None if self.ci is None else list(self.ci)
        return d


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC = P(pos > neg) + P(pos = neg) / 2, from average ranks (ties)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    ranks = scipy.stats.rankdata(np.concatenate([pos, neg]))
    n_p, n_n = len(pos), len(neg)
    return float((ranks[:n_p].sum() - n_p * (n_p + 1) / 2) / (n_p * n_n))


def grouped_folds(y: np.ndarray, groups: np.ndarray, folds: int,
                  rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(n,) fold index per item: every group in one fold, each class spread evenly.

    Per class, the groups (shuffled, then largest first) go one by one to the fold that holds
    the fewest items of that class so far. Groups must not span classes."""
    pairs = np.unique(np.stack([groups.astype(str), y.astype(str)]), axis=1)
    vassert(pairs.shape[1] == len(np.unique(groups)), "a group spans both sides; give REAL "
            "and FAKE images distinct groups")  # fmt: skip
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y):
        items = np.flatnonzero(y == c)
        gs, sizes = np.unique(groups[items], return_counts=True)
        order = rng.permutation(len(gs))
        order = order[np.argsort(-sizes[order], kind="stable")]
        load = np.zeros(folds, np.int64)
        where = {}
        for j in order:
            f = int(np.argmin(load))
            where[gs[j]] = f
            load[f] += sizes[j]
        fold[items] = [where[g] for g in groups[items]]
    return fold


def oof_all_scores(x: np.ndarray, y: np.ndarray, fold: np.ndarray, widths: Sequence[int],
                   components: int = COMPONENTS) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Out-of-fold log-odds, each fold scored by a probe fitted on the other folds: the whole
    probe's (n,) and each block's own regression's (n, B)."""
    whole, by_block = np.empty(len(y)), np.empty((len(y), len(widths)))
    for f in np.unique(fold):
        test = fold == f
        probe = BlockProbe.fit(x[~test], y[~test], widths, components)
        whole[test], by_block[test] = probe.scores(x[test])
    return whole, by_block


def oof_scores(x: np.ndarray, y: np.ndarray, fold: np.ndarray, widths: Sequence[int],
               components: int = COMPONENTS) -> np.ndarray:  # fmt: skip
    """(n,) out-of-fold log-odds of the whole probe."""
    return oof_all_scores(x, y, fold, widths, components)[0]


def _as_list(images: Images, name: str) -> list[np.ndarray]:
    imgs = list(images)
    for i, im in enumerate(imgs):
        ok = isinstance(im, np.ndarray) and im.ndim == 2 and im.size > 0 and (
            im.dtype == np.uint8
            or (np.issubdtype(im.dtype, np.floating) and -1.0 <= im.min() and im.max() <= 1.0)
        )
        if not ok:
            got = f"{im.shape} {im.dtype}" if isinstance(im, np.ndarray) else type(im).__name__
            raise InputError(f"{name} image {i}: expected (H, W) uint8 or float in [-1, 1], "
                             f"got {got}")  # fmt: skip
    return imgs


def _group_ids(groups: Sequence[Any] | None, n: int, name: str) -> np.ndarray:
    if groups is None:
        return np.arange(n).astype(str)  # unknown: every image its own group
    g = np.asarray([str(v) for v in groups])
    vassert(len(g) == n, f"{name}: {len(g)} groups for {n} images; give one group per image")
    return g


@dataclass
class _Repeat:
    items: np.ndarray  # indices into the pooled images (real first, then fake)
    y: np.ndarray  # 1 = fake
    fold: np.ndarray


def _draw_repeats(n_real: int, n_fake: int, gid: np.ndarray, repeats: int, folds: int,
                  n: int, rng: np.random.Generator) -> list[_Repeat]:  # fmt: skip
    # one draw for all repeats: the repeats then differ only by their folds, so their spread
    # is the split noise (used in the CI), not a mixture of split and subsample noise
    r = rng.choice(n_real, n, replace=False) if n < n_real else np.arange(n_real)
    f = rng.choice(n_fake, n, replace=False) if n < n_fake else np.arange(n_fake)
    items = np.concatenate([np.sort(r), n_real + np.sort(f)])
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    return [_Repeat(items, y, grouped_folds(y, gid[items], folds, rng)) for _ in range(repeats)]


def bootstrap_var(reps: list[_Repeat], scores: list[np.ndarray], gid: np.ndarray,
                  boot: int, rng: np.random.Generator) -> float:  # fmt: skip
    """Mean over repeats of the cluster-bootstrap variance of each repeat's AUC (groups drawn
    with replacement per side; an image weighs as often as its group was drawn)."""
    codes, inv = np.unique(gid, return_inverse=True)
    weights = np.zeros((boot, len(codes)))
    for side in ("r:", "f:"):  # group ids carry their side's prefix (see c2st)
        cols = np.flatnonzero(np.char.startswith(codes.astype(str), side))
        if len(cols):
            weights[:, cols] = rng.multinomial(len(cols), np.full(len(cols), 1 / len(cols)), boot)
    variances = []
    for rep, s in zip(reps, scores, strict=True):
        w = weights[:, inv[rep.items]]  # (B, n) multiplicity of each image's group
        pos, neg = rep.y == 1, rep.y == 0
        m = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        wp, wn = w[:, pos], w[:, neg]
        with np.errstate(invalid="ignore", divide="ignore"):  # a side drawn empty: NaN, dropped
            a = ((wp @ m) * wn).sum(1) / (wp.sum(1) * wn.sum(1))
        variances.append(float(np.nanvar(a, ddof=1)))
    return float(np.mean(variances))


def c2st(
    real: Images,
    fake: Images,
    sizes: Sequence[int] = SIZES,
    *,
    real_groups: Sequence[Any] | None = None,
    fake_groups: Sequence[Any] | None = None,
    seed: int | np.random.SeedSequence = 0,
    repeats: int = REPEATS,
    folds: int = FOLDS,
    components: int = COMPONENTS,
    boot: int = BOOT,
    max_per_side: int = MAX_PER_SIDE,
    blocks: bool = True,
) -> list[C2stResult]:
    """Held-out AUC of a linear probe telling FAKE from REAL, one result per size (see the
    module docstring); with `blocks`, also each block's AUC alone (B small extra fits).
    Images: (N, H, W) arrays or lists of (H, W), uint8 or float in [-1, 1]; groups (e.g.
    patient ids, one per image) keep a group inside one fold; None = every image its own
    group. Raises InputError when a side has fewer than `folds` groups."""
    r_imgs, f_imgs = _as_list(real, "REAL"), _as_list(fake, "FAKE")
    gid = np.concatenate([  # side prefixes: a REAL and a FAKE group never share a name
        np.char.add("r:", _group_ids(real_groups, len(r_imgs), "REAL")),
        np.char.add("f:", _group_ids(fake_groups, len(f_imgs), "FAKE")),
    ])  # fmt: skip
    vassert(folds >= 2 and min(repeats, boot, components, max_per_side) >= 1,
            "C2ST: folds must be >= 2; repeats, boot, components, max-per-side >= 1")  # fmt: skip
    vassert(all(int(s) >= 4 for s in sizes), f"C2ST sizes must be >= 4 px, got {list(sizes)}")
    n_groups = [len(np.unique(gid[: len(r_imgs)])), len(np.unique(gid[len(r_imgs) :]))]
    for side, k in zip(("REAL", "FAKE"), n_groups, strict=True):
        vassert(k >= folds, f"C2ST needs at least {folds} groups (patients, or images when "
                f"ungrouped) per side for {folds}-fold cross-validation; {side} has {k}: "
                "add images or lower the number of folds")  # fmt: skip
    n = min(len(r_imgs), len(f_imgs), max_per_side)
    rng = np.random.default_rng(seed)
    reps = _draw_repeats(len(r_imgs), len(f_imgs), gid, repeats, folds, n, rng)
    used = np.unique(np.concatenate([r.items for r in reps]))
    row = np.full(len(r_imgs) + len(f_imgs), -1)
    row[used] = np.arange(len(used))
    pooled = r_imgs + f_imgs
    smallest = min(min(im.shape) for im in (pooled[i] for i in used))
    common = dict(n_per_side=n, n_real=len(r_imgs), n_fake=len(f_imgs), groups_real=n_groups[0],
                  groups_fake=n_groups[1], repeats=repeats, folds=folds)  # fmt: skip
    results = []
    for size in (int(s) for s in sizes):
        if size > smallest:
            results.append(C2stResult(size, None, None, None, **common,  # type: ignore[arg-type]
                                      note=f"not computed: above the smallest image side "
                                      f"({smallest} px)"))  # fmt: skip
            continue
        feats = scale_features([pooled[i] for i in used], size)  # rows: the images in `used`
        widths = block_widths(size)
        both = [oof_all_scores(feats[row[r.items]], r.y, r.fold, widths, components)
                for r in reps]  # per repeat: (n,) whole, (n, B) by block
        scores, by_block = [w for w, _ in both], [b for _, b in both]
        aucs = [auc(s[r.y == 1], s[r.y == 0]) for r, s in zip(reps, scores, strict=True)]
        mean = float(np.mean(aucs))
        split_var = float(np.var(aucs, ddof=1)) if len(aucs) > 1 else 0.0
        half = Z95 * np.sqrt(bootstrap_var(reps, scores, gid, boot, rng) + split_var)
        ci = (float(max(0.0, mean - half)), float(min(1.0, mean + half)))
        results.append(C2stResult(size, mean, ci, float(np.std(aucs)), **common,  # type: ignore[arg-type]
                                  blocks=block_aucs(reps, by_block) if blocks else None))
    return results


def block_aucs(reps: list[_Repeat], by_block: list[np.ndarray]) -> dict[str, float]:
    """{block: mean over the repeats of the out-of-fold AUC of that block's regression alone};
    by_block[r] (n, B) holds repeat r's out-of-fold log-odds per block."""
    return {name: float(np.mean([auc(b[r.y == 1, j], b[r.y == 0, j])
                                 for r, b in zip(reps, by_block, strict=True)]))
            for j, name in enumerate(BLOCKS)}  # fmt: skip


def split_halves(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item indices of two halves of one set, every group in one half, image counts as equal
    as the groups allow (shuffled groups, largest first, each to the smaller half)."""
    gs, inv, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(gs))
    order = order[np.argsort(-sizes[order], kind="stable")]
    half = np.zeros(len(gs), np.int64)
    load = [0, 0]
    for j in order:
        h = int(load[1] < load[0])
        half[j], load[h] = h, load[h] + sizes[j]
    side = half[inv]
    return np.flatnonzero(side == 0), np.flatnonzero(side == 1)


def baseline(
    real: Images,
    sizes: Sequence[int] = SIZES,
    *,
    real_groups: Sequence[Any] | None = None,
    seed: int | np.random.SeedSequence = 0,
    **kwargs: Any,
) -> list[C2stResult]:
    """The same C2ST between two seeded halves of REAL split by group (by image when
    `real_groups` is None): the AUC two real samples reach, the noise floor. `kwargs` as in
    `c2st` (repeats, folds, components, boot, max_per_side)."""
    imgs = _as_list(real, "REAL")
    g = _group_ids(real_groups, len(imgs), "REAL")
    split_ss, run_ss = np.random.SeedSequence(seed).spawn(2) if isinstance(seed, int) else (
        seed.spawn(2))  # fmt: skip
    a, b = split_halves(g, np.random.default_rng(split_ss))
    return c2st([imgs[i] for i in a], [imgs[i] for i in b], sizes, real_groups=g[a],
                fake_groups=g[b], seed=run_ss, **kwargs)  # fmt: skip
