"""Tests of `cxraug filter`: planted bad images must be rejected for the right reason while
clean images are kept; manifest updates, file moves, sheet and CLI behaviour."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.errors import InputError
from cxraug.core.images import read_gray_u8, write_png_gray
from cxraug.core.manifest import Manifest, Record, _to_row
from cxraug.core.workspace import Workspace
from cxraug.filter import filter_folder, filter_synthetic
from cxraug.quality import scores as quality
from cxraug.quality import vectors
from cxraug.quality.decide import FilterConfig, calibrate, decide, judge
from cxraug.quality.nearest import distances, near_duplicates

S = 96  # image side: small for speed, large enough for 2-4 px shifts to matter
N_REAL = 100


def chest(rng: np.random.Generator, size: int = S) -> np.ndarray:
    """A smooth chest-like phantom (H, W) uint8: body, two dark lungs, ribs, a few opacities,
    mild noise. Every call draws a new anatomy, so no two phantoms are copies."""
    y, x = np.mgrid[0:size, 0:size] / size

    def ell(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return np.clip(1 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2, 0, 1) ** 0.5

    img = 0.15 + 0.55 * ell(0.5 + rng.normal(0, 0.02), 0.55, 0.45 + rng.normal(0, 0.03), 0.55)
    for side in (-1, 1):
        cx = 0.5 + side * (0.2 + rng.normal(0, 0.02))
        ry = 0.28 + rng.normal(0, 0.03)
        img -= (0.35 + rng.normal(0, 0.04)) * ell(
            cx, 0.5 + rng.normal(0, 0.03), 0.13 + rng.normal(0, 0.015), ry
        )
    bend = 0.3 * (x - 0.5) ** 2 * rng.uniform(-3, 3)
    img += (
        0.06 * np.sin(2 * np.pi * (y * rng.uniform(6, 9) + rng.uniform(0, 1) + bend)) * (img < 0.45)
    )
    for _ in range(rng.integers(2, 6)):
        img += rng.uniform(0.05, 0.15) * ell(
            rng.uniform(0.2, 0.8),
            rng.uniform(0.25, 0.8),
            rng.uniform(0.04, 0.12),
            rng.uniform(0.04, 0.12),
        )
    img = img * rng.uniform(0.92, 1.08) + rng.normal(0, 0.02)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5) * 255 + rng.normal(0, 2, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted() -> dict[str, object]:
    rng = np.random.default_rng(1)
    real = np.stack([chest(rng) for _ in range(N_REAL)])
    real_ids = [f"real/r{i:03d}" for i in range(N_REAL)]
    good = {f"good-{i:02d}": chest(rng) for i in range(10)}
    r2 = np.random.default_rng(5)
    fresh = chest(rng)
    dup = chest(rng)
    shifted = np.roll(np.pad(real[11], 4, mode="edge"), (3, -2), axis=(0, 1))[4:-4, 4:-4]
    bad = {
        "bad-noise": r2.integers(0, 256, (S, S)).astype(np.uint8),
        "bad-blank": np.full((S, S), 120, np.uint8),
        "bad-almost-blank": _u8(120 + (r2.random((S, S)) < 0.02) * 40.0),
        "bad-saturated": np.where(fresh > np.median(fresh), 255, 0).astype(np.uint8),
        "bad-copy": real[7].copy(),
        "bad-shifted": _u8(shifted + r2.normal(0, 2, (S, S))),
        "bad-washed": _u8(fresh.mean() + (fresh - fresh.mean()) * 0.25),
        "dup-a": dup.copy(),
        "dup-b": dup.copy(),
        "dup-c": _u8(dup + r2.normal(0, 1, (S, S))),
    }
    imgs = {**good, **bad}
    ids = list(imgs)
    syn = np.stack(list(imgs.values()))
    ev = judge(syn, ids, calibrate(real, real_ids, FilterConfig()))
    return {
        "real": real,
        "real_ids": real_ids,
        "ids": ids,
        "syn": syn,
        "ev": ev,
        "by_id": {d.id: d for d in ev.decisions},
    }


EXPECTED_PRIMARY = {
    "bad-noise": "noise",
    "bad-blank": "blank",
    "bad-almost-blank": "blank",
    "bad-saturated": "saturated",
    "bad-copy": "memorised",
    "bad-shifted": "memorised",
    "bad-washed": "low-contrast",
    "dup-b": "near-duplicate",
    "dup-c": "near-duplicate",
}


@pytest.mark.parametrize("image_id,key", sorted(EXPECTED_PRIMARY.items()))
def test_planted_image_rejected_for_the_right_reason(planted, image_id, key):
    d = planted["by_id"][image_id]
    assert not d.kept
    assert d.primary == key, d.reason


def test_clean_images_and_first_duplicate_are_kept(planted):
    by_id, thr = planted["by_id"], planted["ev"].calibration.thresholds["memorised_max"]
    assert by_id["dup-a"].kept
    good = [d for i, d in by_id.items() if i.startswith("good-")]
    assert all(d.keys in ((), ("memorised",)) for d in good)
    # The memorisation threshold is the 1st percentile of real-vs-real neighbour distances, so
    # a new image from the real distribution is flagged ~1 % of the time (privacy first);
    # such a borderline draw is still far from a copy (copies score ~0).
    flagged = [d for d in good if not d.kept]
    assert len(flagged) <= 1 and all(d.scores["nn_real"] > 0.5 * thr for d in flagged)


def test_reasons_name_the_evidence(planted):
    by_id = planted["by_id"]
    copy = by_id["bad-copy"]
    assert copy.nearest_real == "real/r007"
    assert copy.reason.startswith("memorised: too close to real real/r007 (d=0.000, threshold")
    assert by_id["bad-shifted"].nearest_real == "real/r011"
    assert by_id["dup-b"].reason.startswith("near-duplicate of dup-a (d=0.000")
    assert by_id["dup-c"].duplicate_of == "dup-a"
    assert "too noisy (noise ratio" in by_id["bad-noise"].reason
    assert "blank (fraction 1.000 of pixels" in by_id["bad-blank"].reason


def test_shift_search_finds_shifted_copies_closer(planted):
    syn = planted["syn"][[planted["ids"].index("bad-shifted")]]
    args = (syn, planted["real"], ["s"], planted["real_ids"])
    d_search = decide(*args, FilterConfig())[0].scores["nn_real"]
    d_plain = decide(*args, FilterConfig(shift_px=0))[0].scores["nn_real"]
    assert d_search < 0.6 * d_plain


def test_deterministic(planted):
    again = decide(planted["syn"], planted["real"], planted["ids"], planted["real_ids"])
    assert [(d.id, d.keys, d.scores) for d in again] == [
        (d.id, d.keys, d.scores) for d in planted["ev"].decisions
    ]


def test_looser_threshold_keeps_what_the_default_rejects(planted):
    i = planted["ids"].index("bad-washed")
    args = (planted["syn"][[i]], planted["real"], ["w"], planted["real_ids"])
    assert decide(*args, FilterConfig())[0].keys == ("low-contrast",)
    cal = calibrate(planted["real"], planted["real_ids"], FilterConfig(contrast_min=1.0))
    loose = judge(planted["syn"][[i]], ["w"], cal)
    assert loose.decisions[0].kept
    assert cal.thresholds["contrast_min"] == 1.0 and not cal.calibrated["contrast_min"]


def test_calibrated_threshold_follows_real_percentiles(planted):
    ev = planted["ev"]
    real = planted["real"]
    std = real.reshape(len(real), -1).std(axis=1)  # independent of the histogram maths
    lo, hi = np.percentile(std, [1, 99])
    widen = max(0.1 * (hi - lo), quality.SPECS["contrast"].floor)
    assert ev.calibration.thresholds["contrast_min"] == pytest.approx(lo - widen, rel=1e-6)
    assert ev.calibration.thresholds["contrast_max"] == pytest.approx(hi + widen, rel=1e-6)


def test_scores_match_their_definitions():
    rng = np.random.default_rng(0)
    noise = rng.normal(128, 20, (4, 256, 256)).clip(0, 255).astype(np.uint8)
    assert quality.noise_scores(noise) == pytest.approx(np.ones(4), abs=0.03)
    half = np.zeros((1, 10, 10), np.uint8)
    half[0, :, 5:] = 255
    h = quality.histogram_scores(half)
    assert h["saturated"][0] == 1.0 and h["blank"][0] == 0.5
    assert h["brightness"][0] == 127.5 and h["contrast"][0] == pytest.approx(127.5)


def test_downsample_equals_opencv_area_resize_and_distances_equal_a_loop():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, 70, 50)).astype(np.uint8)
    small = vectors.shifted_downsamples(x, 16, [(0, 0), (2, -1)])
    ref = [cv2.resize(i.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA) for i in x]
    assert np.allclose(small[:, 0].reshape(5, 16, 16), ref, atol=1e-3)
    moved = np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="edge")[:, 0:70, 3:53]  # content +2, -1
    ref2 = [cv2.resize(i.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA) for i in moved]
    assert np.allclose(small[:, 1].reshape(5, 16, 16), ref2, atol=1e-3)
    u = vectors.unit_rows(small[:, 0])
    loop = [[np.linalg.norm(a - b) for b in u] for a in u]
    assert np.allclose(distances(u, u), loop, atol=1e-3)


def test_near_duplicates_keep_the_first_of_each_cluster():
    v = np.array([[1, 0, 0], [0.999, 0.04, 0], [0, 1, 0], [0, 0.999, 0.04]], np.float32)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert near_duplicates(u, [0, 1, 2, 3], 0.1) == {
        1: (0, pytest.approx(0.04, abs=1e-3)),
        3: (2, pytest.approx(0.04, abs=1e-3)),
    }
    assert set(near_duplicates(u, [1, 0, 3, 2], 0.1)) == {0, 2}


def test_bad_inputs_raise_clear_errors(planted):
    real, rid = planted["real"], planted["real_ids"]
    with pytest.raises(InputError, match="needs at least 10"):
        decide(real[:2], real[:5], ["a", "b"], rid[:5])
    with pytest.raises(InputError, match="synthetic images are 64x64 but the real"):
        decide(np.zeros((1, 64, 64), np.uint8), real, ["a"], rid)


# ---- workspace, manifest, moves, sheet, CLI ---------------------------------------------


def make_workspace(root: Path, planted: dict, names: list[str], n_real: int = N_REAL) -> Workspace:
    """A workspace with processed/dataset.npz (real phantoms as train/covid) and one synthetic
    manifest row + PNG per name, plus two real rows that must stay untouched."""
    ws = Workspace.at(root)
    real = planted["real"][:n_real]
    images = real.astype(np.float32) / 127.5 - 1.0  # to_uint8 gives back exactly `real`
    ds = Dataset(
        images,
        np.ones(n_real, np.int64),
        np.array(planted["real_ids"][:n_real]),
        np.array(["train"] * n_real),
    )
    save_dataset(ws.dataset_path, ds)
    recs = [
        Record(
            id="real/r000",
            path="/data/r000.png",
            label="covid",
            split="train",
            source="cohen",
            note="keep me",
        ),
        Record(
            id="real/n001",
            path="/data/n001.png",
            label="normal",
            split="test",
            status="excluded",
            reason="lateral view (L)",
        ),
    ]
    for name in names:
        img = planted["syn"][planted["ids"].index(name)]
        p = ws.synthetic_dir / "covid" / f"{name}.png"
        write_png_gray(p, img)
        recs.append(
            Record(
                id=f"synthetic/covid/{name}",
                path=ws.relpath(p),
                label="covid",
                split="train",
                source="synthetic",
                synthetic=True,
            )
        )
    ws.save_manifest(Manifest(recs))
    return ws


BAD = ["bad-noise", "bad-copy", "dup-a", "dup-b"]


@pytest.fixture()
def good3(planted) -> list[str]:
    """Three new phantoms that the in-memory evaluation keeps (same 100 real images)."""
    return [i for i, d in planted["by_id"].items() if i.startswith("good-") and d.kept][:3]


def test_filter_synthetic_updates_rows_and_leaves_real_rows(tmp_path, planted, good3):
    ws = make_workspace(tmp_path, planted, good3 + BAD)
    before = [_to_row(r) for r in ws.load_manifest() if not r.synthetic]
    res = filter_synthetic(ws, FilterConfig(), label="covid")
    m = ws.load_manifest()
    assert [_to_row(r) for r in m if not r.synthetic] == before
    st = {r.id.split("/")[-1]: r for r in m if r.synthetic}
    assert {k for k, r in st.items() if r.status == "ok"} == {*good3, "dup-a"}
    assert st["bad-copy"].reason.startswith("memorised: too close to real real/r007")
    assert st["dup-b"].reason.startswith("near-duplicate of synthetic/covid/dup-a")
    assert st[good3[0]].note.startswith("filter: saturated=") and "nn_real=" in st[good3[0]].note
    # what generate wrote in a note stays; a second filter replaces only its own scores
    gen_note = "enlarged 4x the learnt enlargement; grey levels matched to real/r001"
    m2 = ws.load_manifest()
    for r in m2:
        if r.id == f"synthetic/covid/{good3[1]}":
            r.note = gen_note
    ws.save_manifest(m2)
    filter_synthetic(ws, FilterConfig(), label="covid")
    filter_synthetic(ws, FilterConfig(), label="covid")
    notes = {r.id.split("/")[-1]: r.note for r in ws.load_manifest() if r.synthetic}
    assert notes[good3[1]].startswith(gen_note + "; filter: saturated=")
    assert notes[good3[1]].count("filter: ") == 1
    assert notes[good3[0]].startswith("filter: ") and notes[good3[0]].count("filter: ") == 1
    assert res.by_reason() == {"memorised": 1, "near-duplicate": 1, "noise": 1}
    sheet = ws.synthetic_dir / "covid-filter-sheet.png"
    assert res.sheet_path == sheet and read_gray_u8(sheet).shape[1] == 10 * 112
    cfg = json.loads((ws.synthetic_dir / "covid-filter-sheet.config.json").read_text())
    assert cfg["config"]["margin"] == 0.1 and cfg["thresholds"]["memorised_max"] > 0
    # re-running re-evaluates rejected rows too and gives the same verdicts
    filter_synthetic(ws, FilterConfig(), label="covid")
    assert [(r.id, r.status, r.reason) for r in ws.load_manifest()] == [
        (r.id, r.status, r.reason) for r in m
    ]


def test_move_rejected_moves_files_and_paths_and_back(tmp_path, planted, good3):
    ws = make_workspace(tmp_path, planted, good3 + BAD)
    res = filter_synthetic(ws, FilterConfig(), label="covid", move_rejected=True)
    assert res.moved == 3 and not res.move_failures
    rows = {r.id.split("/")[-1]: r for r in ws.load_manifest() if r.synthetic}
    assert rows["bad-copy"].path == "synthetic/covid/rejected/bad-copy.png"
    assert rows[good3[0]].path == f"synthetic/covid/{good3[0]}.png"
    for r in rows.values():
        assert r.resolve(ws.root).is_file()
    assert not (ws.synthetic_dir / "covid" / "bad-copy.png").exists()
    # a looser memorisation threshold keeps the copy: it moves back to synthetic/covid/
    res2 = filter_synthetic(ws, FilterConfig(memorised_max=0.0), label="covid", move_rejected=True)
    assert res2.moved == 1
    r = ws.load_manifest().by_id()["synthetic/covid/bad-copy"]
    assert r.status == "ok" and r.path == "synthetic/covid/bad-copy.png"
    assert r.resolve(ws.root).is_file()


def test_unreadable_png_is_rejected_with_its_reason(tmp_path, planted, good3):
    ws = make_workspace(tmp_path, planted, [*good3[:1], "bad-blank"])
    res = filter_synthetic(ws, FilterConfig(), label="covid")
    d = {x.id: x for x in res.decisions}["synthetic/covid/bad-blank"]
    assert d.keys == ("unreadable",) and "flat constant image" in d.reason


runner = CliRunner()


def test_cli_summary_json_and_exit_zero_with_rejections(tmp_path, planted, good3):
    ws = make_workspace(tmp_path, planted, good3 + BAD)
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["kept"] == 4 and out["rejected_by_reason"]["memorised"] == 1
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--noise-max", "5"])
    assert r.exit_code == 0 and "kept" in r.stdout and "near-duplicate" in r.stdout
    assert ws.load_manifest().by_id()["synthetic/covid/bad-noise"].status == "rejected"  # lung


def test_without_class_filter_judges_the_scarce_class(tmp_path, planted, good3):
    ws = make_workspace(tmp_path, planted, good3 + BAD)  # real train rows: covid 1, normal 0
    res = filter_synthetic(ws, FilterConfig())
    assert res.label == "covid" and len(res.decisions) == len(good3 + BAD)
    saved = json.loads(ws.filter_sheet_path("covid").with_suffix(".config.json").read_text())
    assert saved["class"] == saved["config"]["label"] == "covid"  # recorded as resolved
    folder = filter_folder(ws, ws.synthetic_class_dir("covid"), FilterConfig())
    assert folder.label == "covid"
    m = ws.load_manifest()  # two real normal train rows: now covid has more, normal is scarce
    for i in range(2):
        m.add(Record(id=f"real/n{i}", path=f"/data/n{i}.png", label="normal", split="train"))
    m.add(Record(id="real/c9", path="/data/c9.png", label="covid", split="train"))
    m.add(Record(id="real/c8", path="/data/c8.png", label="covid", split="train"))
    ws.save_manifest(m)
    r = runner.invoke(app, ["filter", "-w", str(ws.root)])
    assert r.exit_code == 3 and "no synthetic normal rows" in r.output, r.output


def test_cli_bad_inputs(tmp_path, planted, good3):
    ws = make_workspace(tmp_path, planted, good3 + BAD)
    ws.dataset_path.unlink()
    r = runner.invoke(app, ["filter", "-w", str(ws.root)])
    assert r.exit_code == 3 and "cxraug preprocess" in r.output
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "normal"])
    assert r.exit_code == 3 and "no synthetic normal rows" in r.output
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "flu"])
    assert r.exit_code == 3 and "unknown class 'flu'" in r.output
    r = runner.invoke(
        app, ["filter", "-w", str(ws.root), "--folder", str(tmp_path), "--move-rejected"]
    )
    assert r.exit_code == 2 and "--move-rejected" in r.output


def test_cli_folder_report(tmp_path, planted, good3):
    ws = make_workspace(tmp_path, planted, good3 + BAD)
    report = tmp_path / "report.csv"
    folder = ws.synthetic_dir / "covid"
    args = ["filter", "-w", str(ws.root), "--folder", str(folder), "--report", str(report)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = {x["id"]: x for x in csv.DictReader(report.open())}
    assert (
        rows["bad-copy.png"]["status"] == "rejected" and rows[good3[0] + ".png"]["status"] == "ok"
    )
    assert all(r.status == "ok" for r in ws.load_manifest() if r.synthetic)  # untouched
    r = runner.invoke(app, args)
    assert r.exit_code == 3 and "--force" in r.output
    # a new report name, but the config JSON beside it exists: refused too, nothing written
    report2 = tmp_path / "report2.csv"
    mine = tmp_path / "report2.config.json"
    mine.write_text("my notes")
    r = runner.invoke(app, [*args[:-1], str(report2)])
    assert r.exit_code == 3 and "report2.config.json" in r.output and "--force" in r.output
    assert mine.read_text() == "my notes" and not report2.exists()
    r = runner.invoke(app, [*args[:-1], str(report2), "--force"])
    assert r.exit_code == 0 and json.loads(mine.read_text())["class"] == "covid"
    # the same for a user-named --sheet of manifest rows
    sheet = tmp_path / "s.png"
    (tmp_path / "s.config.json").write_text("mine")
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--sheet", str(sheet)])
    assert r.exit_code == 3 and "s.config.json" in r.output and not sheet.exists()
    assert (tmp_path / "s.config.json").read_text() == "mine"


# ---- real chest X-rays (read in place, never copied) -------------------------------------


@pytest.mark.realdata
def test_real_covid_images_held_out_are_kept_and_copies_caught(cxr_data):
    rows = list(csv.DictReader((cxr_data / "SOURCES.csv").open()))
    paths = [cxr_data / r["path"] for r in rows if r["class"] == "covid"][:150]
    from cxraug.core.images import read_gray

    imgs = []
    for p in paths:
        g, _, _ = read_gray(p, reduce=2)
        imgs.append(_u8(cv2.resize(g, (224, 224), interpolation=cv2.INTER_AREA) * 255))
    stack = np.stack(imgs)
    real, held = stack[:120], stack[120:]
    rng = np.random.default_rng(0)
    shifted = np.roll(np.pad(real[5], 4, mode="edge"), (2, 4), axis=(0, 1))[4:-4, 4:-4]
    planted_bad = [
        real[3],
        _u8(shifted + rng.normal(0, 2, shifted.shape)),
        rng.integers(0, 256, (224, 224)).astype(np.uint8),
    ]
    syn = np.concatenate([held, np.stack(planted_bad)])
    ids = [f"h{i:02d}" for i in range(len(held))] + ["copy", "shifted", "noise"]
    d = {x.id: x for x in decide(syn, real, ids, [f"r{i}" for i in range(120)])}
    assert d["copy"].primary == "memorised" and d["shifted"].primary == "memorised"
    assert d["noise"].primary == "noise"
    # distinct real X-rays are not flagged as copies, and most pass every check
    assert not any("memorised" in d[i].keys for i in ids[: len(held)])
    assert sum(d[i].kept for i in ids[: len(held)]) >= 0.8 * len(held)
