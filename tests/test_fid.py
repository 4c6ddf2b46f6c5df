"""`cxraug fid` end to end: inputs, cache, report and CLI, with a tiny feature function in
place of Inception-v3 (the network itself is tested in test_features.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _fakes import tiny_extractor
from typer.testing import CliRunner

from cxraug import fid
from cxraug.cli import app
from cxraug.core import ui
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.errors import InputError
from cxraug.core.images import to_uint8, write_png_gray
from cxraug.core.manifest import Manifest, Record, read_manifest, write_manifest
from cxraug.metrics import features as feats

runner = CliRunner()
SMALL = fid.FidConfig(kid_subsets=10, kid_subset_size=50)


def _images(seed: int, n: int, bright: float = 0.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 120, 32)[None, :] + np.linspace(0, 60, 32)[:, None]
    return [
        np.clip(base + bright + rng.normal(0, 25, (32, 32)), 0, 255).astype(np.uint8)
        for _ in range(n)
    ]


def _folder(path: Path, imgs: list[np.ndarray]) -> Path:
    for i, im in enumerate(imgs):
        write_png_gray(path / f"sub{i % 2}" / f"img{i:03d}.png", im)
    return path


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default workspace is "."; never let a test write .cache/ into the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every extractor the CLI asks for is the tiny one; random mode keeps its real label."""
    monkeypatch.setattr(
        feats, "inception_extractor", lambda weights=None, xla=False: tiny_extractor()
    )
    monkeypatch.setattr(
        feats,
        "random_extractor",
        lambda seed=0, xla=False: tiny_extractor(
            f"inception_v3-random-init(seed={seed})", standard=False
        ),
    )
    monkeypatch.setattr(ui.out, "width", 250)  # keep each table row on one line


def _run(*args: str) -> tuple[int, str, dict]:
    r = runner.invoke(app, ["fid", *args])
    data = json.loads(r.stdout) if "--json" in args and r.exit_code == 0 else {}
    return r.exit_code, r.output, data


def test_identical_arrays_score_zero_and_report_everything() -> None:
    imgs = _images(0, 12)
    r = fid.fid_from_arrays(imgs, [im.copy() for im in imgs], SMALL, extractor=tiny_extractor())
    assert abs(r.fid) < 1e-6 and (r.precision, r.recall) == (1.0, 1.0)
    assert (r.n_real, r.n_fake, r.baseline_n) == (12, 12, 6)
    assert r.baseline_fid is not None and r.baseline_fid > 0
    assert r.resize_filter.startswith("bilinear-aa") and r.cache == {"real": "off", "fake": "off"}
    assert any("< 2048" in w and "equal N" in w for w in r.warnings)


def test_shifted_fakes_score_above_real_baseline_and_order_does_not_matter() -> None:
    real, fake = _images(1, 16), _images(2, 16, bright=60)
    ex = tiny_extractor()
    r = fid.fid_from_arrays(real, fake, SMALL, extractor=ex)
    assert r.baseline_fid is not None and r.fid > 10 * r.baseline_fid
    assert r.kid_mean > 0 and r.precision < 0.5
    shuffled = fid.fid_from_arrays(real[::-1], fake[::-1], SMALL, extractor=ex)
    assert shuffled.to_dict() == r.to_dict()  # canonical (content-sorted) order


def test_equal_n_precision_recall_and_real_baseline_in_the_report() -> None:
    """Twice as many fakes as reals: the equal-N numbers are `pr_draws` subsets of the fakes
    (the seed's third stream), the unequal ones stay beside them, and the baseline's two real
    halves get their own precision/recall."""
    from cxraug.metrics import distances

    real, fake = _images(3, 10), _images(4, 20, bright=10)
    ex = tiny_extractor()
    r = fid.fid_from_arrays(real, fake, SMALL, extractor=ex)
    assert (r.pr_equal_n, r.pr_draws, r.n_fake) == (10, SMALL.pr_draws, 20)

    def features(imgs: list[np.ndarray]) -> np.ndarray:  # as compute_fid: canonical order
        s = fid.array_set(imgs, "x").canonical()
        return feats.extract_features(lambda i: s.loaders[i](), len(s), ex, show_progress=False)

    fr, ff = features(real), features(fake)
    rng = np.random.default_rng(np.random.SeedSequence(SMALL.seed).spawn(3)[2])
    exp = distances.precision_recall_equal_n(fr, ff, k=3, draws=SMALL.pr_draws, rng=rng)
    assert r.precision_equal_n == pytest.approx(exp.precision)
    assert r.recall_equal_n == pytest.approx(exp.recall)
    assert r.recall_equal_n_std == pytest.approx(exp.recall_std)
    assert (r.precision, r.recall) == pytest.approx(
        (distances.precision_recall(fr, ff, k=3).precision,
         distances.precision_recall(fr, ff, k=3).recall))  # fmt: skip
    assert r.baseline_precision is not None and 0 <= r.baseline_recall <= 1  # type: ignore[operator]
    same = fid.fid_from_arrays(real, real, SMALL, extractor=ex)
    assert (same.pr_draws, same.precision_equal_n, same.recall_equal_n) == (0, 1.0, 1.0)
    with pytest.raises(InputError, match="pr-draws"):
        fid.fid_from_arrays(real, fake, fid.FidConfig(pr_draws=0), extractor=ex)


def test_array_inputs_and_counts_are_checked() -> None:
    ex = tiny_extractor()
    with pytest.raises(InputError, match="uint8 array.*to_uint8"):
        fid.fid_from_arrays([np.zeros((8, 8), np.float32)] * 4, _images(0, 4), extractor=ex)
    with pytest.raises(InputError, match="has 1 image.*at least 2"):
        fid.fid_from_arrays(_images(0, 1), _images(0, 4), extractor=ex)
    with pytest.raises(InputError, match="k=3 needs at least 4.*--pr-k"):
        fid.fid_from_arrays(_images(0, 3), _images(0, 4), extractor=ex)
    r = fid.fid_from_arrays(_images(0, 3), _images(1, 3), fid.FidConfig(pr_k=1), extractor=ex)
    assert r.baseline_fid is None and any("baseline needs >= 4" in w for w in r.warnings)


def test_cli_json_cache_hit_and_invalidation(tmp_path: Path, tiny: None) -> None:
    real = _folder(tmp_path / "real", _images(3, 10))
    fake = _folder(tmp_path / "fake", _images(4, 10, bright=30))
    ws = tmp_path / "ws"
    ws.mkdir()  # -w must exist (only collect creates a workspace)
    code, out, first = _run(str(real), str(fake), "-w", str(ws), "--json", "--kid-subsets", "5")
    assert code == 0, out
    assert first["cache"] == {"real": "miss", "fake": "miss"} and first["standard"] is True
    assert len(list((ws / ".cache" / "fid").glob("*.npz"))) == 2
    code, out, second = _run(str(real), str(fake), "-w", str(ws), "--json", "--kid-subsets", "5")
    assert code == 0 and second["cache"] == {"real": "hit", "fake": "hit"}
    assert "real: feature cache hit" in out
    assert {k: v for k, v in second.items() if k != "cache"} == {
        k: v for k, v in first.items() if k != "cache"
    }
    write_png_gray(real / "sub0" / "img000.png", _images(99, 1)[0])  # one file changes
    code, out, third = _run(str(real), str(fake), "-w", str(ws), "--json", "--kid-subsets", "5")
    assert code == 0 and third["cache"] == {"real": "miss", "fake": "hit"}
    assert third["fid"] != second["fid"]


def test_cli_no_cache_and_stale_entry_is_not_reused(tmp_path: Path, tiny: None) -> None:
    real = _folder(tmp_path / "real", _images(5, 8))
    fake = _folder(tmp_path / "fake", _images(6, 8))
    cache = tmp_path / "cache"
    code, _, data = _run(str(real), str(fake), "--cache-dir", str(cache), "--no-cache", "--json")
    assert code == 0 and data["cache"] == {"real": "off", "fake": "off"} and not cache.exists()
    code, _, data = _run(str(real), str(fake), "--cache-dir", str(cache), "--json")
    assert data["cache"]["real"] == "miss"
    for entry in cache.glob("*.npz"):  # same file names, tampered contents
        with np.load(entry) as z:
            arrays = dict(z)
        arrays["features"] = arrays["features"] + 1.0
        arrays["keys"] = arrays["keys"][::-1]
        np.savez(entry, **arrays)
    code, out, again = _run(str(real), str(fake), "--cache-dir", str(cache), "--json")
    assert code == 0 and again["cache"] == {"real": "miss", "fake": "miss"}
    assert "does not match the inputs; recomputing" in out and again["fid"] == data["fid"]
    for entry in cache.glob("*.npz"):
        entry.write_bytes(b"PK\x03\x04 torn")  # not a valid npz/zip
    code, out, third = _run(str(real), str(fake), "--cache-dir", str(cache), "--json")
    assert code == 0 and third["cache"] == {"real": "miss", "fake": "miss"}
    assert "is unreadable" in out and third["fid"] == data["fid"]


def test_cli_random_mode_is_labelled_non_standard_everywhere(tmp_path: Path, tiny: None) -> None:
    real = _folder(tmp_path / "real", _images(7, 8))
    fake = _folder(tmp_path / "fake", _images(8, 8, bright=20))
    args = [str(real), str(fake), "--features", "random", "--no-cache"]
    r = runner.invoke(app, ["fid", *args])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "NOT a standard FID" in lines[0] and "inception_v3-random-init(seed=0)" in lines[0]
    metric_lines = [
        ln
        for ln in lines
        if ln.startswith("│") and ln.strip("│ ").startswith(("FID", "KID", "precision", "recall"))
    ]
    assert len(metric_lines) == 8  # FID, baseline, KID, P, R, P and R at equal N, P/R baseline
    assert all("NOT a standard FID" in ln for ln in metric_lines)
    code, _, data = _run(*args, "--json")
    assert data["standard"] is False and data["extractor"] == "inception_v3-random-init(seed=0)"
    assert any("NOT a standard FID" in w for w in data["warnings"])


def test_cli_missing_weights_exit_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setenv("HOME", str(tmp_path))
    real = _folder(tmp_path / "real", _images(9, 4))
    r = runner.invoke(app, ["fid", str(real), str(real), "--no-cache"])
    assert r.exit_code == 4
    assert feats.WEIGHTS_FILE in r.output and "--weights" in r.output
    assert "storage.googleapis.com" in r.output


def test_cli_bad_inputs_exit_3(tmp_path: Path, tiny: None) -> None:
    good = _folder(tmp_path / "good", _images(10, 6))
    (tmp_path / "empty").mkdir()
    broken = _folder(tmp_path / "broken", _images(11, 5))
    (broken / "sub1" / "zz-bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (broken / "notes.txt").write_text("ignored: not an image suffix")
    cases = [
        ([str(tmp_path / "missing"), str(good)], "is not a folder"),
        ([str(tmp_path / "empty"), str(good)], "no images in"),
        ([str(good), str(broken)], "1 unusable image(s)"),
        ([str(good), str(good), "--resize", "lanczos"], "unknown --resize 'lanczos'"),
        (["manifest:splitt=test", str(good)], "bad manifest selection"),
        (["manifest:split=test", str(good), "-w", str(tmp_path)], "no manifest at"),
    ]
    for args, message in cases:
        r = runner.invoke(app, ["fid", *args, "--no-cache"])
        assert r.exit_code == 3, (args, r.output)
        assert message in r.output, (args, r.output)
    usage = (("--c2st-folds", "1", "--c2st-folds 1 must be at least 2"),
             ("--c2st-sizes", "2,32", "--c2st-sizes 2,32 must be at least 4"))
    for option, value, message in usage:
        r = runner.invoke(app, ["fid", str(good), str(good), option, value, "--no-cache"])
        assert r.exit_code == 2 and message in r.output, r.output  # an option: usage error
    r = runner.invoke(app, ["fid", str(good), str(broken), "--no-cache"])
    assert "zz-bad.png: corrupt PNG" in r.output
    out = tmp_path / "report.json"
    out.write_text("{}")
    r = runner.invoke(app, ["fid", str(good), str(good), "--out", str(out), "--no-cache"])
    assert r.exit_code == 3 and "--force" in r.output
    r = runner.invoke(
        app, ["fid", str(good), str(good), "--out", str(out), "--force", "--no-cache"]
    )
    assert r.exit_code == 0 and json.loads(out.read_text())["config"]["seed"] == 0


def _workspace(root: Path) -> tuple[Path, np.ndarray]:
    """A workspace whose test COVID rows are in dataset.npz and whose synthetic PNGs are
    exactly those images as `generate` would save them (to_uint8)."""
    rng = np.random.default_rng(12)
    n = 8
    images = np.clip(rng.normal(0, 0.5, (n, 24, 24)), -1, 1).astype(np.float32)
    ids = [f"cohen/img{i}" for i in range(n)]
    save_dataset(
        root / "processed" / "dataset.npz",
        Dataset(images, np.ones(n, np.int64), np.asarray(ids), np.asarray(["test"] * n)),
    )
    recs = [Record(id=i, path=f"/nowhere/{i}.png", label="covid", split="test",
                   patient_id=f"p{k // 2}") for k, i in enumerate(ids)]  # 2 images per patient
    for i in range(n):
        write_png_gray(root / "synthetic" / "covid" / f"s{i}.png", to_uint8(images[i]))
        recs.append(
            Record(
                id=f"synthetic/covid/s{i}",
                path=f"synthetic/covid/s{i}.png",
                label="covid",
                split="train",
                synthetic=True,
                run="runs/r1",
            )
        )
    write_manifest(root / "manifest.csv", Manifest(recs))
    return root, images


def test_manifest_selections_compare_like_with_like(tmp_path: Path, tiny: None) -> None:
    ws, _ = _workspace(tmp_path / "ws")
    code, out, data = _run(
        "manifest:split=test,class=covid",
        "manifest:synthetic=true,run=r1",
        "-w",
        str(ws),
        "--json",
        "--pr-k",
        "2",
    )
    assert code == 0, out
    # the npz rows quantised with to_uint8 are pixel-identical to the saved PNGs
    assert abs(data["fid"]) < 1e-6 and data["precision"] == 1.0 and data["n_real"] == 8
    assert data["real"].startswith("manifest:split=test,class=covid")
    code, out, _ = _run(
        "manifest:split=train,synthetic=false", str(ws / "synthetic"), "-w", str(ws)
    )
    assert code == 3 and "matched no rows with status ok" in out
    code, out, _ = _run("manifest:synthetic=maybe", str(ws / "synthetic"), "-w", str(ws))
    assert code == 3 and "use true or false" in out


def test_manifest_patients_group_the_pixel_judges(tmp_path: Path, tiny: None) -> None:
    """REAL from the manifest: its patient_id column groups the C2ST folds and the baseline's
    halves (4 patients of 2 images each); synthetic rows are their own groups."""
    ws, _ = _workspace(tmp_path / "ws")
    code, out, data = _run("manifest:split=test", "manifest:synthetic=true", "-w", str(ws),
                           "--json", "--pr-k", "2", "--c2st-folds", "2",
                           "--c2st-sizes", "8")  # fmt: skip
    assert code == 0, out
    (c,) = data["c2st"]
    assert data["c2st_groups"] == "patient_id" and (c["groups_real"], c["groups_fake"]) == (4, 8)
    assert c["auc"] is not None and c["baseline_auc"] is not None
    assert c["baseline_n_per_side"] == 4  # two patients per half
    code, out, data = _run("manifest:split=test", "manifest:synthetic=true", "-w", str(ws),
                           "--json", "--pr-k", "2", "--c2st-sizes", "8")  # fmt: skip
    assert code == 0 and data["c2st"][0]["auc"] is None  # 5 folds need 5 patients per side
    assert "at least 5 groups" in data["c2st"][0]["note"]
    assert any(w.startswith("C2ST not computed") for w in data["warnings"])


def test_manifest_status_selection(tmp_path: Path, tiny: None) -> None:
    """status=ok (default) skips rows `filter` rejected; status=rejected/any select them."""
    ws, _ = _workspace(tmp_path / "ws")
    m = read_manifest(ws / "manifest.csv")
    for r in m.select(synthetic=True)[:3]:
        r.set_status("rejected", "noise")
    write_manifest(ws / "manifest.csv", m)
    counts = {}
    for status in ("", ",status=ok", ",status=rejected", ",status=any"):
        code, out, data = _run("manifest:split=test", f"manifest:synthetic=true{status}",
                               "-w", str(ws), "--json", "--pr-k", "2")  # fmt: skip
        assert code == 0, out
        counts[status] = data["n_fake"]
    assert counts == {"": 5, ",status=ok": 5, ",status=rejected": 3, ",status=any": 8}
    code, out, _ = _run("manifest:split=test", "manifest:status=maybe", "-w", str(ws))
    assert code == 3 and "use ok, rejected or any" in out


SPECTRUM_KEYS = {"cutoff", "hf_share_real", "hf_share_fake", "hf_ratio", "laplacian_var_real",
                 "laplacian_var_fake", "laplacian_ratio", "freq", "real_power", "fake_power",
                 "sizes", "fixed_real", "fixed_fake"}  # fmt: skip


def test_cli_pixel_judges_json_table_and_figures(tmp_path: Path, tiny: None) -> None:
    """C2ST per size beside its baseline, the spectrum numbers, spectrum.png beside --out and
    the --sheet, with --features random (pixel judges do not depend on the extractor)."""
    real = _folder(tmp_path / "real", _images(20, 14))
    fake = _folder(tmp_path / "fake", _images(21, 14, bright=40))
    out, sheet = tmp_path / "rep" / "report.json", tmp_path / "sheet.png"
    args = [str(real), str(fake), "--features", "random", "--no-cache", "--kid-subsets", "5",
            "--c2st-sizes", "8,16,64", "--c2st-repeats", "2"]  # fmt: skip
    code, output, data = _run(*args, "--json", "--out", str(out), "--sheet", str(sheet),
                              "--sheet-n", "3")  # fmt: skip
    assert code == 0, output
    c = data["c2st"]
    assert [d["size"] for d in c] == [8, 16, 64] and data["c2st_groups"] == "image"
    for d in c[:2]:  # 40 grey levels brighter: separable at any size
        assert d["auc"] > 0.95 and d["ci"][0] <= d["auc"] <= d["ci"][1] <= 1.0
        assert 0.0 <= d["baseline_auc"] <= 1.0 and len(d["baseline_ci"]) == 2
        assert (d["n_per_side"], d["baseline_n_per_side"], d["note"]) == (14, 7, "")
        # a brightness shift is a difference of pixel means: the pixel block alone sees it
        assert list(d["blocks"]) == ["pixels", "detail", "texture"] and d["blocks"]["pixels"] > 0.9
        assert list(d["baseline_blocks"]) == ["pixels", "detail", "texture"]
    assert c[2]["auc"] is None and "above the smallest image side (32 px)" in c[2]["note"]
    assert c[2]["blocks"] is None
    assert any("split are by image" in w for w in data["warnings"])
    spec = data["spectrum"]
    assert set(spec) == SPECTRUM_KEYS and spec["cutoff"] == 0.125 and len(spec["freq"]) == 16
    assert spec["hf_ratio"] > 0 and spec["sizes"] == ["32x32"]
    assert all(isinstance(spec[k], float) for k in ("fixed_real", "fixed_fake"))
    assert json.loads(out.read_text())["c2st"] == c
    plot = cv2.imread(str(out.with_name("report.spectrum.png")))
    grid = cv2.imread(str(sheet))
    assert plot is not None and plot.shape == (480, 760, 3)
    assert grid is not None and grid.shape == (30 + 2 * 164, 90 + 3 * 164, 3)
    code, output, _ = _run(*args, "--sheet", str(sheet))
    assert code == 3 and f"{sheet} exists; pass --force" in output
    code, output, _ = _run(*args, "--spectrum", str(sheet), "--force")
    assert code == 0 and "C2ST AUC" in output and "real-vs-real AUC" in output
    rows = [ln for ln in output.splitlines() if ln.startswith("│") and " px │" in ln]
    assert len(rows) == 3 + 2  # a C2ST row per size, then a by-block row per computed size
    assert "by block" in output and "texture" in output
    assert "hf ratio" in output and "Laplacian var ratio" in output and "fixed pattern" in output
    assert "valid with any --features" in output


@pytest.mark.realdata
@pytest.mark.slow
def test_real_images_random_features_end_to_end(cxr_data: Path, tmp_path: Path) -> None:
    """Two folders of real X-rays (linked, never copied) through the real random-init network."""
    sets = {
        "nih": cxr_data / "folders" / "nih-nofinding" / "normal",
        "kermany": cxr_data / "kermany-chest-xray" / "chest_xray" / "train" / "NORMAL",
    }
    for name, src in sets.items():
        (tmp_path / name).mkdir()
        for f in sorted(src.iterdir())[:6]:
            (tmp_path / name / f.name).symlink_to(f)
    args = [
        str(tmp_path / "nih"),
        str(tmp_path / "kermany"),
        "--features",
        "random",
        "-w",
        str(tmp_path),
        "--json",
        "--kid-subsets",
        "10",
    ]
    r = runner.invoke(app, ["fid", *args])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["standard"] is False and (data["n_real"], data["n_fake"]) == (6, 6)
    assert np.isfinite(data["fid"]) and data["fid"] > 0 and 0 <= data["precision"] <= 1
