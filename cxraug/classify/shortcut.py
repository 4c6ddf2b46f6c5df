"""The shortcut check of `evaluate`: can the same classifier tell the images' SOURCES apart?

The public COVID-19 sets are confounded by source, so a classifier can score well by
recognising the source. The check trains the network to predict each training image's source
and reports its balanced accuracy on the test split against chance (1 / number of sources),
how well it tells apart the sources within one class, and a verdict (docs/evaluate.md).

That classifier is trained on the real images only, so its number describes the images, not
an arm: it cannot change with the arm. `source_probe` asks the arm-dependent question: how well
do an ARM's own classifier's features (the pooled penultimate layer its dense layer reads)
predict the real test images' source? A linear probe on them, per arm and seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.optimize
import scipy.special

from cxraug.classify import net, stats
from cxraug.classify.data import Images
from cxraug.classify.net import NetConfig, Trained
from cxraug.core.errors import NumericError
from cxraug.core.manifest import LABELS


def shortcut_check(data: Images, fit_idx: np.ndarray, val_idx: np.ndarray,
                   test_idx: np.ndarray, cfg: NetConfig, seed: int, label_bacc: float | None,
                   *, raw: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train the same classifier to predict each training image's SOURCE; score it on test.
    raw: on the images as saved (`data.raw`), not on those with source cues removed."""
    x = data.raw if raw and data.raw is not None else data.x
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
    tr = net.fit(x[fit_idx], ys[fit_idx], x[val_idx], ys[val_idx], len(sources), cfg, seed,
                 by_accuracy=True)  # the balanced accuracy is what it reports  # fmt: skip
    prob = tr.predict(x[test_idx])
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


# ---- per arm: the source in the arm's own classifier ----------------------------------------

#: L2 weight of the probe: a standard-normal prior on each weight of standardised features (the
#: value and the reasoning of cxraug.metrics.probe.L2; fixed, never tuned on what it reports)
PROBE_L2 = 1.0


def softmax_regression(z: np.ndarray, y: np.ndarray, classes: int, weights: np.ndarray,
                       lam: float = PROBE_L2) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(W (F, C), b (C,)) minimising the weighted, L2-penalised multinomial logistic loss on
    rows z (n, F) with labels y in 0..C-1 and row weights w (the intercepts not penalised):

        L = sum_i w_i (logsumexp_k(z_i W_k + b_k) - (z_i W_{y_i} + b_{y_i})) + lam/2 |W|^2
        dL/dW = Z^T (w * (P - Y)) + lam W,   dL/db = sum_i w_i (P_i - Y_i)

    with P the softmax probabilities and Y the one-hot labels; L-BFGS on the exact gradient.
    With two classes it is the binary logistic regression of w = W_1 - W_0 with lam / 2."""
    n, f = z.shape
    onehot = np.eye(classes)[y]  # (n, C)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: f * classes].reshape(f, classes), theta[f * classes :]
        logits = z @ w + b  # (n, C)
        lse = scipy.special.logsumexp(logits, axis=1)
        value = float(weights @ (lse - (logits * onehot).sum(1)) + 0.5 * lam * (w * w).sum())
        r = weights[:, None] * (np.exp(logits - lse[:, None]) - onehot)  # (n, C)
        return value, np.concatenate([(z.T @ r + lam * w).ravel(), r.sum(0)])

    res = scipy.optimize.minimize(loss, np.zeros(f * classes + classes), jac=True,
                                  method="L-BFGS-B",
                                  options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})
    if not np.isfinite(res.x).all():
        raise NumericError("the source probe's logistic regression diverged (non-finite weights)")
    return res.x[: f * classes].reshape(f, classes), res.x[f * classes :]


def label_only_accuracy(y: np.ndarray, ys: np.ndarray) -> float:
    """The best balanced accuracy over sources (mean over the sources present in `ys`) that
    knowing only each image's class gives: class c called source s_c for all its images, so
    recall(s) = sum over the classes called s of n(c, s) / n(s), and the total is maximised
    per class: sum_c max_s n(c, s) / n(s). 1 when every source holds one class."""
    present = np.unique(ys)
    n_s = {s: (ys == s).sum() for s in present}
    total = sum(max(((y == c) & (ys == s)).sum() / n_s[s] for s in present) for c in np.unique(y))
    return float(total / len(present))


def source_probe(tr: Trained, data: Images, fit_idx: np.ndarray,
                 test_idx: np.ndarray) -> dict[str, Any] | None:  # fmt: skip
    """How well the arm's OWN classifier's pooled penultimate features tell the real test
    images' sources apart: a linear probe (standardised features, `softmax_regression`, each
    source weighted equally) fitted on the real fit images' sources, its balanced accuracy on
    the test split; within each class that has >= 2 sources, the same among those sources;
    and `label_only`, what the class alone would give. None with fewer than two sources."""
    sources = sorted(set(data.source[fit_idx]))
    if len(sources) < 2 or tr.features is None:
        return None
    code = {s: k for k, s in enumerate(sources)}
    yf = np.array([code[s] for s in data.source[fit_idx]])
    test_idx = test_idx[np.isin(data.source[test_idx], sources)]
    yt = np.array([code[s] for s in data.source[test_idx]], dtype=np.int64)
    f_fit, f_test = tr.features(data.x[fit_idx]), tr.features(data.x[test_idx])
    mu, sd = f_fit.mean(0), f_fit.std(0)
    sd[sd <= 1e-12] = 1.0  # a dead channel stays 0 and carries nothing
    counts = np.bincount(yf, minlength=len(sources))
    weights = len(yf) / (len(sources) * counts[yf])  # every source weighs the same in all
    w, b = softmax_regression((f_fit - mu) / sd, yf, len(sources), weights)
    logits = ((f_test - mu) / sd) @ w + b  # (T, S)
    within: dict[str, float] = {}
    for k, c in enumerate(LABELS):
        mine = sorted({int(v) for v in yf[data.y[fit_idx] == k]})
        rows = (data.y[test_idx] == k) & np.isin(yt, mine)
        if len(mine) >= 2 and rows.any():
            pred = np.array(mine)[logits[rows][:, mine].argmax(1)]
            within[c] = round(stats.balanced_accuracy_multiclass(yt[rows], pred, len(sources)), 4)
    bacc = stats.balanced_accuracy_multiclass(yt, logits.argmax(1), len(sources))
    return {"balanced_accuracy": round(bacc, 4), "within_class": within,
            "label_only": round(label_only_accuracy(data.y[test_idx], yt), 4),
            "chance": round(1.0 / len(sources), 4), "sources": sources}  # fmt: skip


def probe_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and std over seeds) of an arm's `source_probe` results."""
    b = [e["balanced_accuracy"] for e in per_seed]
    classes = sorted({c for e in per_seed for c in e["within_class"]})
    return {"balanced_accuracy": round(float(np.mean(b)), 4),
            "seed_std": round(float(np.std(b, ddof=1)), 4) if len(b) > 1 else None,
            "within_class": {c: round(float(np.mean([e["within_class"][c] for e in per_seed
                                                     if c in e["within_class"]])), 4)
                             for c in classes},
            "label_only": per_seed[0]["label_only"], "chance": per_seed[0]["chance"],
            "sources": per_seed[0]["sources"], "seeds": len(per_seed)}  # fmt: skip
