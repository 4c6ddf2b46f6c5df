"""The shortcut check of `evaluate`: can the same classifier tell the images' SOURCES apart?

The public COVID-19 sets are confounded by source, so a classifier can score well by
recognising the source. The check trains the network to predict each training image's source
and reports its balanced accuracy on the test split against chance (1 / number of sources),
how well it tells apart the sources within one class, and a verdict (docs/evaluate.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxraug.classify import net, stats
from cxraug.classify.data import Images
from cxraug.classify.net import NetConfig
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
