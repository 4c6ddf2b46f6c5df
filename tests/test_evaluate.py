"""`cxraug evaluate`: the scoring maths against independent computations, the bootstrap's
coverage, the arms on phantom data where the answer is known, the test-only source, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm
from typer.testing import CliRunner

from cxraug import evaluate as ev
from cxraug.classify import net, stats
from cxraug.classify.augment import Classical, augment_batch, batch_indices
from cxraug.classify.data import Images
from cxraug.classify.plots import draw_roc
from cxraug.classify.shortcut import shortcut_check
from cxraug.cli import app
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.images import write_png_gray
from cxraug.core.manifest import Manifest, Record, read_manifest, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep.phantom import make_phantom

runner = CliRunner()
S = 32
#: tiny but real: 3 conv blocks at 32 px, a few hundred steps
TINY = ev.EvaluateConfig(size=S, width=8, blocks=3, steps=300, batch_size=16, eval_every=25,
                         patience=4, seeds=1, bootstrap=200, band_resamples=50,
                         min_test_per_class=5, shortcut=False, learning_rate=3e-3)  # fmt: skip


# ---- the maths -----------------------------------------------------------------------------


def test_auc_equals_mann_whitney_u_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(60) < 0.3
        s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding makes ties
        u = mannwhitneyu(s[y], s[~y]).statistic
        assert stats.auc(y, s) == pytest.approx(u / (y.sum() * (~y).sum()))
    assert np.isnan(stats.auc(np.ones(5), np.arange(5.0)))


def test_roc_area_and_youden_threshold_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(80) < 0.4
    s = rng.normal(y * 1.0, 1.0)
    fpr, tpr = stats.roc_curve(y, s)
    assert np.trapezoid(tpr, fpr) == pytest.approx(stats.auc(y, s))  # no ties: exact
    t = stats.youden_threshold(y, s)
    best = max(((s >= c) & y).sum() / y.sum() + ((s < c) & ~y).sum() / (~y).sum() for c in s)
    m = stats.binary_metrics(y, s, t)
    assert m["sensitivity"] + m["specificity"] == pytest.approx(best)
    assert m["balanced_accuracy"] == pytest.approx(best / 2)


def test_patient_bootstrap_covers_the_true_auc_at_the_nominal_rate() -> None:
    """200 simulated test sets of 50 + 50 patients with 1-3 correlated images each; the score
    is planted so that the true AUC is known: Phi(delta / sqrt(2 (sp^2 + se^2)))."""
    delta, sp, se = 1.0, 0.8, 0.6
    truth = norm.cdf(delta / np.sqrt(2 * (sp**2 + se**2)))
    rng = np.random.default_rng(7)
    hits, trials = 0, 200
    for _ in range(trials):
        y, s, pid = [], [], []
        for p in range(100):
            pos, eff, k = p < 50, rng.normal(0, sp), int(rng.integers(1, 4))
            y += [pos] * k
            s += list(delta * pos + eff + rng.normal(0, se, k))
            pid += [str(p)] * k
        ya, sa = np.array(y), np.array(s)
        res = stats.patient_resamples(pid, 200, rng)
        boot = np.array([stats.auc(ya[r], sa[r]) for r in res])
        lo, hi = np.percentile(boot, [2.5, 97.5])
        hits += lo <= truth <= hi
    # binomial(200, 0.95): mean 190, sd 3.1; the band is ~ +-3 sd
    assert 180 <= hits <= 199, hits


def test_paired_difference_is_exact_for_identical_arms_and_uses_shared_resamples() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    a, b = rng.normal(y * 1.0, 1, (2, 60)), rng.normal(y * 0.3, 1, (2, 60))
    res = stats.patient_resamples([str(i) for i in range(60)], 300, rng)
    ma, ba = stats.arm_metrics(y, a, np.zeros(2), res)
    mb, bb = stats.arm_metrics(y, b, np.zeros(2), res)
    same = stats.paired_difference(ma, ba, ma, ba)["auc"]
    assert (same.value, same.lo, same.hi) == (0.0, 0.0, 0.0)
    d = stats.paired_difference(ma, ba, mb, bb)["auc"]
    assert d.value == pytest.approx(ma["auc"].value - mb["auc"].value)
    assert d.lo < d.value < d.hi
    # pairing: the difference's interval is narrower than the two arms' intervals combined
    assert d.hi - d.lo < (ma["auc"].hi - ma["auc"].lo) + (mb["auc"].hi - mb["auc"].lo)


def test_classical_augmentation_and_samplers() -> None:
    rng = np.random.default_rng(0)
    x = np.tile(np.linspace(-1, 1, S, dtype=np.float32), (4, S, 1))  # left dark, right bright
    out = augment_batch(x, Classical(), rng)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    # no flip by default: the bright side stays on the right
    assert (out[:, :, -8:].mean((1, 2)) > out[:, :, :8].mean((1, 2))).all()
    none = augment_batch(x, Classical(0, 0, 0, 0, 0), rng)
    np.testing.assert_allclose(none, x, atol=1e-5)  # zero ranges: the identity
    y = np.r_[np.zeros(90, np.int64), np.ones(10, np.int64)]
    bal = batch_indices(y, 50, 200, True, rng)
    assert abs(y[bal].mean() - 0.5) < 0.02  # balanced batches
    uni = batch_indices(y, 50, 4, False, rng)  # 200 draws = 2 epochs: each image twice
    assert (np.bincount(uni.ravel(), minlength=100) == 2).all()


# ---- phantom workspaces: the answer is known ------------------------------------------------


def _phantoms(rng: np.random.Generator, label: str, n: int) -> np.ndarray:
    return np.stack([make_phantom(rng, label, (S, S)) for _ in range(n)])  # (n, S, S) uint8


def _near_constant(n: int) -> np.ndarray:
    """Mid-gray images with one pixel a level brighter (a flat image is refused when decoded)."""
    out = np.full((n, S, S), 128, np.uint8)
    out[:, 0, 0] = 129
    return out


def make_workspace(root: Path, synthetic: str | None = "fresh", n_covid_train: int = 5,
                   external: dict[str, int] | None = None, seed: int = 0) -> Workspace:  # fmt: skip
    """processed/dataset.npz + manifest: 80 normal and `n_covid_train` covid TRAIN phantoms
    (source "a"), 30 + 30 TEST phantoms, optional EXTERNAL phantoms (source "ext"), and 80
    synthetic covid rows: fresh phantom draws, uniform noise or one constant gray."""
    ws = Workspace.at(root)
    rng = np.random.default_rng(seed)
    parts = [("train", "normal", 80), ("train", "covid", n_covid_train),
             ("test", "normal", 30), ("test", "covid", 30)]  # fmt: skip
    parts += [("external", c, n) for c, n in (external or {}).items()]
    imgs, recs = [], []
    for split, label, n in parts:
        u8 = _phantoms(rng, label, n)
        for i in range(n):
            src = "ext" if split == "external" else "a"
            rid = f"{src}/{split}/{label}/{i}"
            recs.append(Record(id=rid, path=f"/nonexistent/{rid}.png", label=label, split=split,
                               source=src, patient_id=f"{split}-{label}-{i // 2}"))  # fmt: skip
            imgs.append(u8[i].astype(np.float32) / 127.5 - 1.0)
    ds = Dataset(np.stack(imgs), np.array([r.label == "covid" for r in recs], np.int64),
                 np.array([r.id for r in recs]), np.array([r.split for r in recs]))  # fmt: skip
    save_dataset(ws.dataset_path, ds)
    if synthetic is not None:
        fresh = {"fresh": lambda: _phantoms(rng, "covid", 80),
                 "noise": lambda: rng.integers(0, 256, (80, S, S)).astype(np.uint8),
                 "constant": lambda: _near_constant(80)}[synthetic]()
        for i, im in enumerate(fresh):
            p = ws.synthetic_png("covid", f"g-s0-{i:05d}")
            write_png_gray(p, im)
            recs.append(Record(id=ws.synthetic_id("covid", f"g-s0-{i:05d}"), path=ws.relpath(p),
                               label="covid", split="train", source="synthetic",
                               synthetic=True, run="runs/g"))  # fmt: skip
    write_manifest(ws.manifest_path, Manifest(recs))
    return ws


def _run(ws: Workspace, **kw: object) -> ev.EvalResult:
    cfg = ev.EvaluateConfig(**{**TINY.__dict__, "arms": "real,synthetic", **kw})
    return ev.evaluate(ws, cfg, show_progress=False)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> ev.EvalResult:
    return _run(make_workspace(tmp_path_factory.mktemp("fresh"), "fresh"))


def test_fresh_draws_of_the_true_distribution_beat_real_only(fresh: ev.EvalResult) -> None:
    """5 real covid training images; 80 'synthetic' ones drawn from the phantom distribution
    itself: the synthetic arm must be clearly better, and its paired CI must exclude 0."""
    d = fresh.test_sets["test"]["differences"]["synthetic"]["auc"]
    assert d["value"] > 0.15 and d["lo"] > 0, d
    m = fresh.test_sets["test"]["metrics"]
    assert m["synthetic"]["auc"]["value"] > m["real"]["auc"]["value"]
    assert fresh.arms["synthetic"]["synthetic_images"] == 80
    assert not fresh.skipped


@pytest.mark.parametrize("kind", ["noise", "constant"])
def test_noise_or_constant_synthetic_images_do_not_help(tmp_path: Path, kind: str,
                                                        fresh: ev.EvalResult) -> None:  # fmt: skip
    r = _run(make_workspace(tmp_path, kind))
    d = r.test_sets["test"]["differences"]["synthetic"]["auc"]
    good = fresh.test_sets["test"]["differences"]["synthetic"]["auc"]
    assert d["lo"] < 0 < d["hi"] or d["hi"] <= 0, d  # no evidence of a gain
    assert d["value"] < good["value"] - 0.1


def test_same_seed_same_numbers_and_outputs_saved(tmp_path: Path, fresh: ev.EvalResult) -> None:
    ws = make_workspace(tmp_path, "fresh")
    again = _run(ws)
    assert again.test_sets == fresh.test_sets  # every metric, CI and difference
    folder = ws.evaluation("default")
    saved = json.loads(folder.results_path.read_text())
    assert saved["test_sets"]["test"]["metrics"]["real"]["auc"] == \
        fresh.test_sets["test"]["metrics"]["real"]["auc"]  # fmt: skip
    assert json.loads(folder.config_path.read_text())["augmented_class"] == "covid"
    for png in (folder.roc_plot_path, folder.differences_plot_path):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the test-only source -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_collect_test_only_source_never_reaches_a_training_set(tmp_path: Path, kind: str) -> None:
    """collect --test-only b: every row of source b is `external`; preprocess keeps it, and
    neither the GAN's training set nor filter's calibration images contain it. Source b is a
    class-folder tree, or a CSV naming its files (another hospital's export)."""
    from cxraug.collect import CollectConfig, collect
    from cxraug.filter import FilterConfig, load_reference
    from cxraug.gan.trainset import training_set
    from cxraug.prep.phantom import write_phantom_folder
    from cxraug.preprocess import PreprocessConfig, preprocess

    a = write_phantom_folder(tmp_path / "a", 8, 8, seed=0)
    b = write_phantom_folder(tmp_path / "b", 3, 3, seed=1)
    ws = Workspace.at(tmp_path / "ws")
    cfg = CollectConfig(test_only="b", workers=1, show_progress=False)
    source_b = f"b=folder:{b}"
    if kind == "csv":
        files = sorted(p.relative_to(b).as_posix() for p in b.glob("*/phantom-*"))
        (b / "labels.csv").write_text("file,diagnosis,patient\n" + "".join(
            f"{f},{'COVID' if f.startswith('covid') else 'Normal'},p{i}\n"
            for i, f in enumerate(files)), encoding="utf-8")  # fmt: skip
        source_b = f"b=csv:{b / 'labels.csv'}"
        cfg = CollectConfig(test_only="b", workers=1, show_progress=False,
                            csv_file_column="file", csv_label_column="diagnosis",
                            csv_classes="COVID=covid,Normal=normal",
                            csv_patient_column="patient")  # fmt: skip
    res = collect(ws, [f"a=folder:{a}", source_b], cfg)
    rows = ws.load_manifest().select()
    assert {r.split for r in rows if r.source == "b"} == {"external"}
    assert {r.split for r in rows if r.source == "a"} <= {"train", "test"}
    assert res.splits["covid"]["external"] == 3
    pre = preprocess(ws, PreprocessConfig(size=32, workers=1), show_progress=False)
    assert pre.counts["external"] == {"normal": 3, "covid": 3}
    external = {r.id for r in rows if r.source == "b"}
    from cxraug.core.dataset import load_dataset

    assert external <= set(load_dataset(ws.dataset_path).ids)  # kept for evaluate
    for include_marked in (False, True):  # the GAN (and its checkpoint scores), either way
        assert not external & set(training_set(ws.dataset_path, include_marked)[0].ids)
    for label in ("covid", "normal"):
        _, ref = load_reference(ws, label, FilterConfig(min_real=2))
        assert ref and not external & set(ref)  # filter's calibration
    with pytest.raises(Exception, match="no source of that name"):
        collect(ws, ["a=folder:" + str(a)], CollectConfig(test_only="zz", force=True))


def test_a_patient_of_a_test_only_source_is_kept_out_of_train() -> None:
    from cxraug.collect import assign_splits

    recs = [Record(id=f"a/{i}", path=f"a{i}", label="normal", source="a", patient_id=f"p{i}")
            for i in range(10)]  # fmt: skip
    recs.append(Record(id="b/0", path="b0", label="normal", source="b", patient_id="p3"))
    for seed in range(5):
        assign_splits(recs, [], 0.0, seed, test_only=["b"])  # no test split asked for at all
        assert recs[-1].split == "external" and recs[3].split == "test"
        assert {r.split for r in recs[:3] + recs[4:10]} == {"train"}


def test_evaluate_scores_external_sources_and_never_trains_on_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(tmp_path, "fresh", external={"normal": 12, "covid": 12})
    seen: list[int] = []
    real_fit = net.fit

    def spy(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, *a: object,
            **k: object) -> object:  # fmt: skip
        seen.append(len(x) - (80 if len(x) > 85 else 0) + len(xv))  # real fit + val images
        return real_fit(x, y, xv, yv, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(net, "fit", spy)  # every arm and the shortcut check train through it
    r = _run(ws, steps=25, arms="real,synthetic", shortcut=True)
    assert set(seen) == {85}  # exactly the 80 + 5 train rows, for every arm and the shortcut
    ext = r.test_sets["external:ext"]
    assert ext["status"] == "ok" and ext["n_images"] == 24 and "real" in ext["metrics"]
    # one ROC panel (and one panel of differences) per test set, the external one included
    assert r.figures == {"roc": ["test", "external:ext"], "differences": ["test", "external:ext"]}
    roc = cv2.imread(str(r.folder.roc_plot_path))
    panel = draw_roc(np.linspace(0, 1, 11), [], "")
    assert roc.shape == (2 * panel.shape[0], panel.shape[1], 3)
    assert any("ROC panels in roc.png: test, external:ext" in str(t) for t in ev.report_tables(r))


# ---- the command line -----------------------------------------------------------------------

CLI_FAST = ["--size", "32", "--width", "8", "--steps", "30", "--eval-every", "15", "--seeds",
            "1", "--bootstrap", "100", "--min-test-per-class", "5", "--no-shortcut"]  # fmt: skip


def test_cli_no_synthetic_rows_skips_those_arms_and_runs_the_others(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, None)
    r = runner.invoke(app, ["evaluate", "-w", str(ws.root), "--json", *CLI_FAST])
    assert r.exit_code == 1, r.output
    assert "skipped" in r.stderr and "cxraug generate" in r.stderr
    assert "[yellow]" not in r.stderr and "[/" not in r.stderr  # styled, not markup shown as text
    doc = json.loads(r.stdout)
    assert doc["arms"]["synthetic"]["status"] == "skipped"
    assert doc["arms"]["classical"]["status"] == "ok"
    assert set(doc["test_sets"]["test"]["metrics"]) == {"real", "oversample", "classical"}


def test_cli_bad_input(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, "fresh", external={"normal": 12})
    base = ["evaluate", "-w", str(ws.root), *CLI_FAST, "--arms", "real"]
    r = runner.invoke(app, [*base, "--run", "nosuch"])
    assert r.exit_code == 3 and "no training run 'nosuch'" in r.stderr
    r = runner.invoke(app, [*base, "--arms", "real,gan"])
    assert r.exit_code == 3 and "unknown arm(s) gan" in r.stderr
    r = runner.invoke(app, [*base, "--name", "../x"])
    assert r.exit_code == 3 and "evaluation name" in r.stderr
    r = runner.invoke(app, [*base, "--min-test-per-class", "31"])
    assert r.exit_code == 3 and "too few images for a CI" in r.stderr
    r = runner.invoke(app, base)  # the external source has one class: skipped, exit 1
    assert r.exit_code == 1 and "one class only" in r.stderr, r.output
    assert "AUC" in r.stdout and "[/" not in r.stdout + r.stderr
    r = runner.invoke(app, base)
    assert r.exit_code == 3 and "--force" in r.stderr
    assert runner.invoke(app, [*base, "--force"]).exit_code == 1


# ---- the shortcut check ---------------------------------------------------------------------


def _two_sources(single_class: bool, n: int = 40) -> Images:
    """Sources a and b; b's images carry a bright corner mark (a scanner's burnt-in label).
    single_class: a holds only normals, b only covid; else each holds both classes."""
    rng = np.random.default_rng(5)
    xs, ys, src, split = [], [], [], []
    for s_name in ("a", "b"):
        for label in ("normal", "covid"):
            if single_class and (s_name == "a") != (label == "normal"):
                continue
            u8 = _phantoms(rng, label, n)
            if s_name == "b":
                u8[:, :6, :6] = 255
            xs.append(u8.astype(np.float32) / 127.5 - 1)
            ys += [int(label == "covid")] * n
            src += [s_name] * n
            split += ["train"] * (n * 3 // 4) + ["test"] * (n - n * 3 // 4)
    x = np.concatenate(xs)
    return Images(x, np.array(ys), np.array(split), np.array([f"p{i}" for i in range(len(x))]),
                     np.array(src))  # fmt: skip


def _indices(data: Images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    train = np.nonzero(data.split == "train")[0]
    val = train[::5]
    return np.setdiff1d(train, val), val, np.nonzero(data.split == "test")[0]


def test_shortcut_check_finds_a_source_marker_and_says_so() -> None:
    quick = ev.EvaluateConfig(**{**TINY.__dict__, "steps": 120})
    data = _two_sources(single_class=False)
    r = shortcut_check(data, *_indices(data), quick.net(), quick.seed, label_bacc=0.6)
    assert r["status"] == "ok" and not r["single_class_sources"]
    assert r["balanced_accuracy"] > 0.9 and r["flag"]  # the mark is found; the label is weaker
    assert "external test source" in r["verdict"]
    single = _two_sources(single_class=True)
    s = shortcut_check(single, *_indices(single), quick.net(), quick.seed, label_bacc=0.99)
    assert s["single_class_sources"] and s["flag"] and "function of the source" in s["verdict"]
    one = Images(data.x, data.y, data.split, data.patient, np.full(len(data.y), "a"))
    assert shortcut_check(one, *_indices(one), quick.net(), 0, None)["status"] == "not applicable"


def test_the_shortcut_check_does_not_move_with_the_number_of_seeds(tmp_path: Path) -> None:
    """The shortcut check is one classifier on the --seed split: --seeds 2 adds a seed to the
    arms, never another split to the check (it once used the last seed's split)."""
    ws = make_workspace(tmp_path, None)
    m = read_manifest(ws.manifest_path)
    for r in m.records:  # two sources, each holding both classes, in train and test alike
        r.source = "ab"[int(r.patient_id.rsplit("-", 1)[1]) % 2]
    write_manifest(ws.manifest_path, m)
    one, two = (ev.evaluate(ws, ev.EvaluateConfig(**{**TINY.__dict__, "arms": "real", "seeds": n,
                                                     "shortcut": True}),
                            name=f"s{n}", show_progress=False) for n in (1, 2))  # fmt: skip
    assert one.shortcut["status"] == "ok", one.shortcut
    for key in ("balanced_accuracy", "best_step", "within_class_balanced_accuracy"):
        assert one.shortcut[key] == two.shortcut[key], key


def test_one_training_patient_of_a_class_is_a_clear_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, None, n_covid_train=4)
    m = ws.load_manifest()
    for r in m.select(label="covid", split="train"):
        r.patient_id = "one"  # 4 covid training images, all of one patient
    ws.save_manifest(m)
    with pytest.raises(ev.InputError, match="at least 2 training patients per class"):
        _run(ws, arms="real")
