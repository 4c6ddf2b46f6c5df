"""`evaluate`'s arms (cxraug.classify.arms, select): the counts each arm promises, derived from
the fit set's class counts; the selection rule against a brute-force computation and on
phantoms where the answer is known; the two-phase budget of pretrain; and each new arm fed
fresh phantom draws against the same arm fed noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from test_evaluate import CLI_FAST, TINY, _phantoms, make_workspace, runner

from cxraug import evaluate as ev
from cxraug.classify import arms, net, stats
from cxraug.classify.select import kth_distance, select_synthetic
from cxraug.cli import app
from cxraug.core.errors import InputError

S = 32


def _seed_data(n_k: int = 10, n_other: int = 40, n_syn: int = 60) -> arms.SeedData:
    """Images tagged in their first pixel (x 1000): real K images 1000+i, other 2000+i,
    synthetic i."""
    rng = np.random.default_rng(0)

    def tagged(start: int, n: int) -> np.ndarray:
        x = rng.random((n, 8, 8)).astype(np.float32)
        x[:, 0, 0] = (start + np.arange(n)) / 1000.0
        return x

    x = np.concatenate([tagged(1000, n_k), tagged(2000, n_other)])
    y = np.r_[np.ones(n_k, np.int64), np.zeros(n_other, np.int64)]
    return arms.SeedData(x, y, x[:4], y[:4], tagged(0, n_syn), 1, 0, (0, 0))


def _added(p: arms.Plan, sd: arms.SeedData) -> np.ndarray:
    """The tags of the images a single-phase plan added to the real fit images."""
    (ph,) = p.phases
    np.testing.assert_array_equal(ph.x[: len(sd.x)], sd.x)  # the real images come first
    assert (ph.y[len(sd.x) :] == sd.label).all()
    return _tags(ph.x[len(sd.x) :])


def _tags(x: np.ndarray) -> np.ndarray:
    return np.rint(x[:, 0, 0] * 1000).astype(int)


def test_arm_names() -> None:
    names = [a.name for a in arms.arm_list("oversample,synthetic@.5,duplicate@0.50", "1,balance")]
    assert names == ["real", "oversample", "synthetic@0.5", "duplicate@0.5", "synthetic@1",
                     "synthetic@balance"]  # fmt: skip
    assert [a.name for a in arms.arm_list("real", "")] == ["real"]
    for bad, why in (("real@1", r"unknown arm\(s\) real@1"), ("gan", r"unknown arm\(s\) gan"),
                     ("synthetic@0", "positive number"), ("synthetic@x", "positive number")):
        with pytest.raises(InputError, match=why):
            arms.arm_list(bad, "")
    assert ev.EvaluateConfig().arm_list()[-1].name == "duplicate"  # in the default list


def test_ratio_and_duplicate_arms_add_the_counts_they_promise() -> None:
    sd = _seed_data(n_k=10, n_other=40, n_syn=60)
    got = {}
    for name in ("synthetic", "synthetic@0.25", "synthetic@0.5", "synthetic@1", "synthetic@2",
                 "synthetic@balance", "synthetic@10"):  # fmt: skip
        p = arms.plan(arms.parse_arm(name), sd, 100, False, 0.5)  # type: ignore[arg-type]
        got[name] = _added(p, sd)
        assert p.added == len(got[name])
        assert len(set(got[name])) == len(got[name]) and (got[name] < 60).all()  # no repeats
    want = {"synthetic": 60, "synthetic@0.25": 3, "synthetic@0.5": 5, "synthetic@1": 10,
            "synthetic@2": 20, "synthetic@balance": 40 - 10, "synthetic@10": 60}  # capped
    assert {k: len(v) for k, v in got.items()} == want  # R x 10 (2.5 -> 3), n_other - n_K
    # nested: a smaller ratio's images are a subset of a larger one's, and they are a subsample
    assert set(got["synthetic@0.5"]) <= set(got["synthetic@1"]) <= set(got["synthetic@2"])
    assert sorted(got["synthetic@2"]) != list(range(20))
    for ratio in ("", "@0.5", "@balance"):
        syn = arms.plan(arms.parse_arm("synthetic" + ratio), sd, 100, False, 0.5)  # type: ignore[arg-type]
        dup = arms.plan(arms.parse_arm("duplicate" + ratio), sd, 100, False, 0.5)  # type: ignore[arg-type]
        tags = _added(dup, sd)
        assert dup.added == syn.added  # count-matched
        assert ((tags >= 1000) & (tags < 1010)).all()  # copies of real K images only
        counts = np.bincount(tags - 1000, minlength=10)
        assert counts.max() - counts.min() <= 1  # copied as evenly as possible
    again = arms.plan(arms.parse_arm("synthetic@0.5"), sd, 100, False, 0.5)  # type: ignore[arg-type]
    np.testing.assert_array_equal(_added(again, sd), got["synthetic@0.5"])  # seeded


def test_cells_duplicate_copies_real_images_of_each_class_as_many_as_cells_adds() -> None:
    """The cells arm's count-matched control: per class, as many real copies as the cells arm
    adds images of that class, each real image of the class copied as evenly as possible."""
    sd = _seed_data(n_k=10, n_other=40)
    sd.cells = np.zeros((37, 8, 8), np.float32)  # 25 covid (class 1) + 12 normal (class 0)
    sd.cells_y = np.r_[np.ones(25, np.int64), np.zeros(12, np.int64)]
    cells = arms.plan(arms.parse_arm("cells"), sd, 100, False, 0.5)  # type: ignore[arg-type]
    dup = arms.plan(arms.parse_arm("cells-duplicate"), sd, 100, False, 0.5)  # type: ignore[arg-type]
    (ph,) = dup.phases
    np.testing.assert_array_equal(ph.x[: len(sd.x)], sd.x)  # the real images come first
    tags, y = _tags(ph.x[len(sd.x) :]), ph.y[len(sd.x) :]
    assert dup.added == cells.added == 37 and dup.facts == {"matches": "cells"}
    assert (y == 1).sum() == 25 and (y == 0).sum() == 12  # the cells arm's counts per class
    assert ((tags[y == 1] >= 1000) & (tags[y == 1] < 1010)).all()  # real covid copies
    assert ((tags[y == 0] >= 2000) & (tags[y == 0] < 2040)).all()  # real normal copies
    covid = np.bincount(tags[y == 1] - 1000, minlength=10)
    assert covid.max() - covid.min() <= 1  # 25 over 10 images: 2 or 3 copies each
    assert len(set(tags[y == 0])) == 12  # 12 of 40: no image twice
    assert not arms.parse_arm("cells-duplicate").needs_synthetic  # type: ignore[union-attr]


def test_kth_distance_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    d = cdist(a, b)
    for k in (1, 3):
        np.testing.assert_allclose(kth_distance(a, b, k), np.sort(d, 1)[:, k - 1], atol=1e-9)
        self_d = cdist(b, b) + np.diag(np.full(11, np.inf))
        np.testing.assert_allclose(kth_distance(b, b, k, leave_one_out=True),
                                   np.sort(self_d, 1)[:, k - 1], atol=1e-9)  # fmt: skip


def _phantom_set(rng: np.random.Generator, n_normal: int,
                 n_covid: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    x = np.concatenate([_phantoms(rng, "normal", n_normal), _phantoms(rng, "covid", n_covid)])
    y = np.r_[np.zeros(n_normal), np.ones(n_covid)].astype(np.int64)
    return x.astype(np.float32) / 127.5 - 1, y


def test_selection_keeps_phantom_draws_and_rejects_noise() -> None:
    """A real-only classifier of phantoms judges 40 fresh covid phantoms and 40 noise images:
    noise lies far from every real image in its features, the phantoms among them."""
    rng = np.random.default_rng(11)
    x, y = _phantom_set(rng, 60, 40)
    xv, yv = _phantom_set(rng, 12, 12)
    cfg = ev.EvaluateConfig(**{**TINY.__dict__, "steps": 200}).net()
    model = net.fit(x, y, xv, yv, 2, cfg, 0)
    t = stats.youden_threshold(yv, model.predict(xv)[:, 1])  # as evaluate fixes it
    fresh = _phantoms(rng, "covid", 40).astype(np.float32) / 127.5 - 1
    noise = rng.uniform(-1, 1, (40, S, S)).astype(np.float32)
    sel = select_synthetic(model, t, np.concatenate([fresh, noise]), x, y, xv, yv, 1)
    kept_fresh, kept_noise = int(sel.keep[:40].sum()), int(sel.keep[40:].sum())
    assert kept_noise == 0 and kept_fresh >= 20, sel.facts()
    assert sel.facts()["kept"] == kept_fresh and sel.k == 5
    assert sel.near >= kept_fresh and sel.confident >= kept_fresh
    assert sel.confident - kept_fresh >= 10  # confidence alone would keep noise: the features


def test_pretrain_runs_both_phases_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = _seed_data(n_k=10, n_other=40, n_syn=30)
    calls: list[dict[str, object]] = []
    real_fit = net.fit

    def spy(x: np.ndarray, y: np.ndarray, *a: object, **k: object) -> net.Trained:
        cfg = a[3]
        calls.append({"tags": set(_tags(x) // 1000), "covid": int(y.sum()),
                      "steps": cfg.steps, "init": k["init"] is not None,  # type: ignore[attr-defined]
                      "stream": k["stream"]})  # fmt: skip
        return real_fit(x, y, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(net, "fit", spy)
    tiny = ev.EvaluateConfig(**{**TINY.__dict__, "size": 8, "blocks": 2, "eval_every": 5})
    p = arms.plan(arms.parse_arm("pretrain"), sd, 40, False, 0.3)  # type: ignore[arg-type]
    tr, phases = arms.train(p, sd, tiny.net())
    # phase 1: the 30 synthetic (tag 0) + the 40 other-class real images (tag 2), no real K
    assert calls[0] == {"tags": {0, 2}, "covid": 30, "steps": 12, "init": False, "stream": 0}
    # phase 2: the real fit images only, from phase 1's weights, its own batch stream
    assert calls[1] == {"tags": {1, 2}, "covid": 10, "steps": 28, "init": True, "stream": 1}
    assert [ph["steps"] for ph in phases] == [12, 28] and p.facts["pretrain_steps"] == 12
    assert tr.steps_run == sum(ph["steps_run"] for ph in phases) <= 40
    assert tr.images_seen == tr.steps_run * tiny.batch_size


@pytest.fixture(scope="module")
def new_arms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ev.EvalResult]:
    """pretrain and selected on the phantom workspace of test_evaluate (5 real covid training
    images), fed 80 fresh covid phantom draws or 80 noise images; three seeds, because one
    seed's difference moves with the CPU's rounding (session 22: on an Intel Xeon with AMX
    the noise arm's single-seed gain was 0.061 where fresh draws gave 0.123)."""
    out = {}
    for kind in ("fresh", "noise"):
        ws = make_workspace(tmp_path_factory.mktemp(kind), kind)
        cfg = ev.EvaluateConfig(**{**TINY.__dict__, "arms": "real,pretrain,selected",
                                   "steps": 200, "seeds": 3})  # fmt: skip
        out[kind] = ev.evaluate(ws, cfg, show_progress=False)
    return out


@pytest.mark.parametrize("arm", ["pretrain", "selected"])
def test_fresh_draws_help_an_arm_and_noise_does_not(new_arms: dict[str, ev.EvalResult],
                                                    arm: str) -> None:  # fmt: skip
    good = new_arms["fresh"].test_sets["test"]["differences"][arm]["auc"]
    bad = new_arms["noise"].test_sets["test"]["differences"][arm]["auc"]
    assert good["value"] > 0.1 and good["hi"] > 0.2 and good["lo"] > 0, good  # evidence of a gain
    assert bad["value"] < good["value"] - 0.08 and not bad["lo"] > 0, bad  # no evidence of a gain


def test_pretrain_and_selected_report_what_they_did(new_arms: dict[str, ev.EvalResult]) -> None:
    for r in new_arms.values():
        assert len(r.arms["pretrain"]["seeds"]) == 3
        for e in r.arms["pretrain"]["seeds"]:
            n = e["real_fit_images"]
            assert e["train_images"] == n["normal"] + n["covid"] + 80
            assert [p["steps"] for p in e["phases"]] == [100, 100]  # --pretrain-share 0.5 of 200
            assert e["steps_run"] == sum(p["steps_run"] for p in e["phases"])
            assert e["pretrain_images"] == 80 + n["normal"]  # the synthetic + the real normals
        saved = json.loads(r.folder.results_path.read_text())["arms"]["selected"]["seeds"]
        for s, e in zip(saved, r.arms["selected"]["seeds"], strict=True):
            assert s["kept"] == e["added_images"] <= s["candidates"] == 80
    # the noise lies away from every real image in the real-only model's features
    assert new_arms["noise"].arms["selected"]["added_images"] == 0
    assert new_arms["fresh"].arms["selected"]["added_images"] >= 10


def test_cli_counts_of_the_ratio_and_duplicate_arms(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, "fresh")
    r = runner.invoke(app, ["evaluate", "-w", str(ws.root), *CLI_FAST, "--arms", "real,duplicate",
                            "--synthetic-ratio", "0.5,balance", "--json", "--steps", "4",
                            "--eval-every", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert "(+80)" in r.stderr  # the table: the duplicate arm's 80 added images
    for arm, added in (("duplicate", lambda n: 80), ("synthetic@0.5", lambda n: (n + 1) // 2),
                       ("synthetic@balance", lambda n: 0)):  # fmt: skip
        (e,) = doc["arms"][arm]["seeds"]
        n = e["real_fit_images"]
        want = added(n["covid"]) or n["normal"] - n["covid"]  # R x n_K, or up to n_other
        assert e["added_images"] == e["train_images"] - n["normal"] - n["covid"] == want



def test_no_new_arm_sees_a_test_or_external_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every image any arm trains, stops early or selects on is a TRAIN row or a synthetic
    one (selected's reference images are the same fit and validation arrays)."""
    from cxraug.classify.data import load_real

    ws = make_workspace(tmp_path, "fresh", external={"normal": 12, "covid": 12})
    data = load_real(ws, S)

    def keys(x: np.ndarray) -> set[bytes]:
        return {im.tobytes() for im in x}

    allowed = keys(data.x[data.split == "train"])
    held_out = keys(data.x[data.split != "train"])
    seen: set[bytes] = set()
    real_fit = net.fit

    def spy(x: np.ndarray, y: np.ndarray, xv: np.ndarray, *a: object, **k: object) -> object:
        seen.update(keys(x) | keys(xv))
        return real_fit(x, y, xv, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(net, "fit", spy)
    cfg = ev.EvaluateConfig(**{**TINY.__dict__, "steps": 10, "eval_every": 5, "shortcut": True,
                               "arms": "real,duplicate,selected,pretrain",
                               "synthetic_ratio": "balance"})  # fmt: skip
    ev.evaluate(ws, cfg, show_progress=False)
    assert not seen & held_out
    assert allowed <= seen and len(seen - allowed) <= 80  # + the synthetic images at most
