"""`cxraug collect`: source readers, file checks, duplicates, the patient-level split, merge and
the CLI, on tiny trees made in tmp_path; plus a real-data tier on ../shared/cxr-data."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cxraug.prep.duplicates
import cxraug.prep.inspect
from cxraug.cli import app
from cxraug.collect import (
    CollectConfig,
    assign_splits,
    collect,
    near_duplicate_pairs,
    summary_lines,
)
from cxraug.core.errors import InputError
from cxraug.core.images import encode_image
from cxraug.core.manifest import Manifest, Record, read_manifest, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep.duplicates import NOTE_LISTED, note_near_duplicates
from cxraug.prep.listing import patient_from_name
from cxraug.prep.phantom import make_phantom
from cxraug.prep.sources import cohen_verdict, parse_source

CFG = CollectConfig(workers=1, show_progress=False)
runner = CliRunner()


def phantom(seed: int, label: str = "normal", size: tuple[int, int] = (96, 80)) -> np.ndarray:
    return make_phantom(np.random.default_rng(seed), label, size)


def write(path: Path, arr: np.ndarray, suffix: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(arr, suffix or path.suffix))
    return path


def by_id(ws: Path) -> dict[str, Record]:
    return read_manifest(ws / "manifest.csv").by_id()


# ---- cohen -------------------------------------------------------------------------------------

COHEN_ROWS = [  # patientid, finding, view, modality, filename, license
    ("1", "COVID-19", "PA", "X-ray", "a.jpg", "CC BY"),
    ("1", "COVID-19, ARDS", "AP Supine", "X-ray", "b.png", ""),
    ("2", "COVID-19", "L", "X-ray", "c.jpg", ""),
    ("3", "COVID-19", "Axial", "CT", "d.jpg", ""),
    ("4", "todo", "PA", "X-ray", "e.jpg", ""),
    ("5", "Pneumonia", "PA", "X-ray", "f.jpg", ""),
    ("6", "COVID-19", "", "X-ray", "g.jpg", ""),
    ("7", "COVID-19", "AP erect", "X-ray", "missing.jpg", ""),
    ("8", "COVID-19", "PA", "X-ray", "shared.jpg", "CC BY-NC-SA"),
    ("9", "COVID-19", "PA", "X-ray", "shared.jpg", "CC BY-NC-SA"),
]


def make_cohen(root: Path) -> Path:
    cols = ["patientid", "offset", "finding", "view", "modality", "folder", "filename", "license",
            "clinical_notes", ""]  # fmt: skip  # the real file's header ends with a comma
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for k, (pid, finding, view, mod, fname, lic) in enumerate(COHEN_ROWS):
            w.writerow([pid, "0", finding, view, mod, "images", fname, lic, "note, with comma", ""])
            if fname != "missing.jpg" and not (root / "images" / fname).exists():
                write(root / "images" / fname, phantom(100 + k, "covid"))
    write(root / "images" / "extra.png", phantom(99))
    return root


def test_cohen_rules(tmp_path: Path) -> None:
    make_cohen(tmp_path / "cohen")
    result = collect(Workspace.at(tmp_path / "ws"), [f"cohen:{tmp_path / 'cohen'}"], CFG)
    rows = by_id(tmp_path / "ws")
    got = {k.removeprefix("cohen/images/"): (r.status, r.reason) for k, r in rows.items()}
    assert got == {
        "a.jpg": ("ok", ""), "b.png": ("ok", ""),
        "c.jpg": ("excluded", "lateral view (L)"), "d.jpg": ("excluded", "CT scan (Axial)"),
        "e.jpg": ("excluded", "finding not yet labelled (todo)"),
        "f.jpg": ("excluded", "finding 'Pneumonia' is not COVID-19"),
        "g.jpg": ("excluded", "view not stated"),
        "missing.jpg": ("error", "file not found"),
        "shared.jpg": ("ok", ""),
        "shared.jpg#2": ("duplicate", "duplicate of cohen/images/shared.jpg"),
        "extra.png": ("excluded", "not in metadata.csv"),
    }  # fmt: skip
    a = rows["cohen/images/a.jpg"]
    assert (a.label, a.patient_id, a.view, a.license) == ("covid", "cohen-1", "PA", "CC BY")
    assert a.sha256 == hashlib.sha256((tmp_path / "cohen/images/a.jpg").read_bytes()).hexdigest()
    assert (a.width, a.height) == (80, 96)
    assert "rows 10, 11 list this file" in rows["cohen/images/shared.jpg#2"].note
    assert rows["cohen/images/shared.jpg"].split in ("train", "test")
    assert rows["cohen/images/shared.jpg#2"].split == ""  # only usable rows get a split
    assert result.errors == [("cohen/images/missing.jpg", "file not found")]


@pytest.mark.parametrize(("modality", "view", "finding", "reason"), [
    ("X-ray", "AP semi erect", "COVID-19", ""),
    ("X-ray", "PA", "Pneumonia/Viral/COVID-19", ""),  # later releases' hierarchical findings
    ("CT", "Coronal", "COVID-19", "CT scan (Coronal)"),
    ("X-ray", "?", "COVID-19", "view not stated ('?')"),
    ("X-ray", "Lateral", "COVID-19", "lateral view (Lateral)"),
    ("X-ray", "PA", "SARS", "finding 'SARS' is not COVID-19"),
    ("X-ray", "PA", "", "finding not stated"),
])  # fmt: skip
def test_cohen_verdict(modality: str, view: str, finding: str, reason: str) -> None:
    assert cohen_verdict(modality, view, finding) == reason


def test_cohen_missing_metadata_or_columns(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    with pytest.raises(InputError, match="has no metadata.csv"):
        collect(Workspace.at(tmp_path / "ws"), [f"cohen:{tmp_path / 'c'}"], CFG)
    (tmp_path / "c" / "metadata.csv").write_text("patientid,filename\n1,a.jpg\n")
    with pytest.raises(InputError, match="missing column.*finding, view, modality, folder"):
        collect(Workspace.at(tmp_path / "ws"), [f"cohen:{tmp_path / 'c'}"], CFG)


# ---- kermany and folder --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "patient"), [
    ("IM-0117-0001.jpeg", "kermany-IM-0117"),
    ("NORMAL2-IM-1294-0001-0002.jpeg", "kermany-NORMAL2-IM-1294"),
    ("person1_virus_6.jpeg", "kermany-person1"),
    ("00001280_004.png", "nih-00001280"),
    ("17.jpeg", ""),
])  # fmt: skip
def test_patient_from_name(name: str, patient: str) -> None:
    assert patient_from_name(name) == patient


def make_kermany(root: Path) -> Path:
    for k, rel in enumerate(["train/NORMAL/IM-0117-0001.jpeg", "train/NORMAL/IM-0117-0002.jpeg",
                             "train/NORMAL/NORMAL2-IM-1294-0001-0002.jpeg",
                             "test/NORMAL/IM-0200-0001.jpeg",
                             "train/PNEUMONIA/person1_virus_6.jpeg"]):  # fmt: skip
        write(root / "chest_xray" / rel, phantom(200 + k))
    (root / "chest_xray" / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("x")
    return root


@pytest.mark.parametrize("sub", ["", "chest_xray", "chest_xray/train"])
def test_kermany_layouts(tmp_path: Path, sub: str) -> None:
    root = make_kermany(tmp_path / "k")
    result = collect(Workspace.at(tmp_path / "ws"), [f"kermany:{root / sub}"], CFG)
    rows = by_id(tmp_path / "ws")
    ok = {r.source_path: r.patient_id for r in rows.values() if r.status == "ok"}
    expect_ok = {"IM-0117-0001.jpeg": "kermany-IM-0117", "IM-0117-0002.jpeg": "kermany-IM-0117",
                 "NORMAL2-IM-1294-0001-0002.jpeg": "kermany-NORMAL2-IM-1294"}  # fmt: skip
    if sub != "chest_xray/train":
        expect_ok["IM-0200-0001.jpeg"] = "kermany-IM-0200"
    assert {Path(k).name: v for k, v in ok.items()} == expect_ok
    pneu = [r for r in rows.values() if "PNEUMONIA" in r.id]
    assert [(r.status, r.reason) for r in pneu] == [("excluded", "pneumonia (not a paper class)")]
    assert all(r.id.startswith("kermany/") and r.label in ("normal", "") for r in rows.values())
    assert result.skipped_files == ({"kermany": 1} if sub == "" else {})  # README.md only
    train = [r.split for r in rows.values() if r.patient_id == "kermany-IM-0117"]
    assert len(set(train)) == 1  # one patient, one split


def test_folder_classes_names_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    write(root / "COVID-19" / "x1.png", phantom(1, "covid"))
    write(root / "NORMAL" / "00001280_004.png", phantom(2))
    write(root / "normal" / "sub" / "y.jpg", phantom(3))
    write(root / "loose.png", phantom(4))
    collect(Workspace.at(tmp_path / "ws"), [f"mine=folder:{root}"], CFG)
    rows = by_id(tmp_path / "ws")
    assert {k: (r.label, r.status, r.patient_id) for k, r in rows.items()} == {
        "mine/COVID-19/x1.png": ("covid", "ok", ""),
        "mine/NORMAL/00001280_004.png": ("normal", "ok", "nih-00001280"),
        "mine/normal/sub/y.jpg": ("normal", "ok", ""),
        "mine/loose.png": ("", "excluded", ""),
    }
    write(root / "pneumonia" / "z.png", phantom(5))
    with pytest.raises(InputError, match=r"class folder\(s\) 'pneumonia'.*accepted names: covid/"):
        collect(Workspace.at(tmp_path / "ws2"), [f"folder:{root}"], CFG)


@pytest.mark.parametrize(("spec", "message"), [
    ("nope:/tmp", "unknown form; write SCHEME:PATH"),
    ("/just/a/path", "unknown form"),
    ("folder:", "is empty"),
    ("folder:/does/not/exist", "does not exist"),
    ("bad name=folder:/tmp", "must be letters"),
])  # fmt: skip
def test_parse_source_errors(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_source(spec)


def test_parse_source_names(tmp_path: Path) -> None:
    (tmp_path / "nih-data").mkdir()
    assert parse_source(f"folder:{tmp_path / 'nih-data'}").name == "nih-data"
    assert parse_source(f"nih=folder:{tmp_path / 'nih-data'}").name == "nih"
    assert parse_source(f"cohen:{tmp_path}").name == "cohen"


# ---- bad files, duplicates, near-duplicates ------------------------------------------------


def make_bad_folder(root: Path) -> dict[str, str]:
    n = root / "normal"
    good = write(n / "good.png", phantom(1))
    (n / "z-copy.png").write_bytes(good.read_bytes())  # sorts after good.png: the copy
    (n / "empty.png").write_bytes(b"")
    jpg = encode_image(phantom(2), ".jpg")
    (n / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (n / "text.png").write_text("this is not an image\n")
    (n / "dir.jpeg").mkdir()
    os.symlink(n / "nowhere.png", n / "dangling.png")
    write(n / "tiny.png", np.zeros((1, 1), np.uint8))
    write(n / "flat.png", np.full((64, 64), 7, np.uint8))
    write(root / "covid" / "c.png", phantom(3, "covid"))
    return {
        "z-copy.png": "duplicate of f/normal/good.png",
        "empty.png": "empty file (0 bytes)",
        "truncated.jpg": "truncated JPEG (no end-of-image marker)",
        "text.png": "not an image (unrecognised file signature)",
        "dir.jpeg": "is a directory, not an image file",
        "dangling.png": "dangling symbolic link",
        "tiny.png": "too small (1x1; need 16 px per side)",
        "flat.png": "flat constant image",
    }


def test_bad_files_become_error_rows(tmp_path: Path) -> None:
    expected = make_bad_folder(tmp_path / "f")
    result = collect(Workspace.at(tmp_path / "ws"), [f"folder:{tmp_path / 'f'}"], CFG)
    rows = {Path(k).name: r for k, r in by_id(tmp_path / "ws").items()}
    for name, reason in expected.items():
        assert rows[name].reason.startswith(reason), (name, rows[name].reason)
        assert rows[name].status == ("duplicate" if name == "z-copy.png" else "error")
        assert rows[name].split == ""
    assert rows["good.png"].status == rows["c.png"].status == "ok"
    assert result.n_errors == 7 and result.exact_duplicates == 1
    assert rows["flat.png"].sha256 and (rows["flat.png"].width, rows["flat.png"].height) == (64, 64)


def test_near_duplicates_reported_not_removed(tmp_path: Path) -> None:
    img = phantom(7, size=(300, 260))
    write(tmp_path / "f" / "normal" / "a.png", img)
    write(tmp_path / "f" / "normal" / "b.jpg", img)  # same pixels, different bytes
    write(tmp_path / "f" / "covid" / "c.png", phantom(8, "covid", size=(300, 260)))
    result = collect(Workspace.at(tmp_path / "ws"), [f"folder:{tmp_path / 'f'}"], CFG)
    rows = by_id(tmp_path / "ws")
    assert [(a, b) for a, b, _ in result.near_duplicates] == [("f/normal/a.png", "f/normal/b.jpg")]
    assert rows["f/normal/a.png"].status == rows["f/normal/b.jpg"].status == "ok"
    assert "near-duplicate of f/normal/b.jpg" in rows["f/normal/a.png"].note
    assert rows["f/normal/a.png"].split == rows["f/normal/b.jpg"].split


@pytest.mark.parametrize("numpy1", [False, True], ids=["bitwise_count", "numpy-1.26-table"])
def test_near_duplicate_pairs_matches_bruteforce(numpy1: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # numpy1: the path numpy 1.26 takes (no np.bitwise_count), checked against unpackbits
    if numpy1:
        monkeypatch.setattr(cxraug.prep.duplicates, "_bitwise_count", None)
    rng = np.random.default_rng(0)
    h = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    h[5] = h[17]
    h[40, 0] ^= 0b111  # 3 bits away from h[41]
    h[41] = h[40]
    h[41, 0] ^= 0b111
    bits = np.unpackbits(h, axis=1).astype(int)
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    expect = [(i, j, d[i, j]) for i in range(300) for j in range(i + 1, 300) if d[i, j] <= 90]
    assert sorted(near_duplicate_pairs(h, 90, block=64)) == expect
    assert (5, 17, 0) in expect and (40, 41, 3) in expect
    # every byte value's popcount, against Python's own
    table = cxraug.prep.duplicates._POPCOUNT16
    assert [int(c) for c in table[:256]] == [bin(b).count("1") for b in range(256)]
    assert int(table[0xFFFF]) == 16 and int(table[0x8001]) == 2


# ---- split ---------------------------------------------------------------------------------


def synthetic_records(n_normal_patients: int, n_covid_patients: int, seed: int) -> list[Record]:
    rng = np.random.default_rng(seed)
    recs = []
    for label, n in (("normal", n_normal_patients), ("covid", n_covid_patients)):
        for p in range(n):
            for k in range(int(rng.integers(1, 5))):
                recs.append(Record(id=f"{label}/{p}/{k}", path=f"{label}/{p}/{k}.png",
                                   label=label, patient_id=f"{label}-{p}",
                                   sha256=f"{label}{p}{k}"))  # fmt: skip
    return recs


def test_split_by_patient_stratified_deterministic() -> None:
    recs = synthetic_records(300, 80, seed=1)
    assign_splits(recs, [], 0.2, seed=0)
    per_patient = defaultdict(set)
    for r in recs:
        per_patient[r.patient_id].add(r.split)
    assert all(len(s) == 1 for s in per_patient.values())
    for label in ("normal", "covid"):
        mine = [r for r in recs if r.label == label]
        frac = sum(r.split == "test" for r in mine) / len(mine)
        assert abs(frac - 0.2) <= 4 / len(mine), (label, frac)  # within one group of target
    first = [r.split for r in recs]
    again = synthetic_records(300, 80, seed=1)
    assign_splits(again, [], 0.2, seed=0)
    assert [r.split for r in again] == first
    assign_splits(again, [], 0.2, seed=1)
    assert [r.split for r in again] != first


def test_split_links_shared_files_and_only_ok_rows() -> None:
    recs = synthetic_records(20, 5, seed=2)
    recs[1].sha256 = recs[-1].sha256  # the same bytes under a normal and a covid patient
    recs[-1].set_status("duplicate", "x")
    recs[0].set_status("error", "y")
    for seed in range(10):
        assign_splits(recs, [], 0.5, seed)
        assert recs[0].split == "" and recs[-1].split == ""
        p1 = {r.split for r in recs if r.patient_id == recs[1].patient_id and r.split}
        p2 = {r.split for r in recs if r.patient_id == recs[-1].patient_id and r.split}
        assert len(p1 | p2) == 1


def test_test_fraction_zero_and_bad(tmp_path: Path) -> None:
    recs = synthetic_records(10, 3, seed=3)
    assign_splits(recs, [], 0.0, 0)
    assert {r.split for r in recs} == {"train"}
    (tmp_path / "f" / "normal").mkdir(parents=True)
    with pytest.raises(InputError, match=r"--test-fraction 1.0 must be in \[0, 1\)"):
        collect(Workspace.at(tmp_path), [f"folder:{tmp_path / 'f'}"],
                CollectConfig(test_fraction=1.0))  # fmt: skip


def test_two_workers_equal_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bad_folder(tmp_path / "f")
    for i in range(6):
        write(tmp_path / "f" / "normal" / f"n{i}.jpg", phantom(300 + i))
    collect(Workspace.at(tmp_path / "w1"), [f"f=folder:{tmp_path / 'f'}"], CFG)
    monkeypatch.setattr(cxraug.prep.inspect, "IN_PROCESS_BELOW", 0)  # use the pool on tiny input
    collect(Workspace.at(tmp_path / "w2"), [f"f=folder:{tmp_path / 'f'}"],
            CollectConfig(workers=2, show_progress=False))  # fmt: skip
    assert (tmp_path / "w1/manifest.csv").read_text() == (tmp_path / "w2/manifest.csv").read_text()


# ---- re-run and merge ----------------------------------------------------------------------


def test_rerun_refuses_then_merges_user_edits(tmp_path: Path) -> None:
    make_kermany(tmp_path / "k")
    ws = Workspace.at(tmp_path / "ws")
    collect(ws, [f"kermany:{tmp_path / 'k'}"], CFG)
    m = ws.load_manifest()
    rid = "kermany/chest_xray/train/NORMAL/IM-0117-0001.jpeg"
    m.by_id()[rid].crop = (1, 2, 50, 60)
    m.by_id()[rid].extra["reader"] = "dr. x"
    m.extra_columns.append("reader")
    m.add(Record(id="synthetic/covid/r-0", path="synthetic/covid/r-0.png", label="covid",
                 split="train", synthetic=True, source="synthetic"))  # fmt: skip
    m.add(Record(id="kermany/gone.jpeg", path="/gone.jpeg", label="normal", split="train"))
    write_manifest(ws.manifest_path, m)
    before = ws.manifest_path.read_text()
    with pytest.raises(InputError, match="already exists; re-run with --force"):
        collect(ws, [f"kermany:{tmp_path / 'k'}"], CFG)
    result = collect(ws, [f"kermany:{tmp_path / 'k'}"], CollectConfig(workers=1, force=True,
                                                                      show_progress=False))
    after = ws.load_manifest().by_id()
    assert after[rid].crop == (1, 2, 50, 60) and after[rid].extra["reader"] == "dr. x"
    assert after["synthetic/covid/r-0"].synthetic and "kermany/gone.jpeg" not in after
    assert result.merge is not None and result.merge.dropped_rows == ["kermany/gone.jpeg"]
    assert (tmp_path / "ws" / "manifest.csv.bak").read_text() == before
    config = json.loads((tmp_path / "ws" / "collect-config.json").read_text())
    assert config["config"]["force"] is True and config["config"]["test_fraction"] == 0.2


# ---- CLI -----------------------------------------------------------------------------------


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    write(tmp_path / "good" / "normal" / "a.png", phantom(1))
    write(tmp_path / "good" / "covid" / "b.png", phantom(2, "covid"))
    r = runner.invoke(app, ["collect", f"folder:{tmp_path / 'good'}", "-w", str(tmp_path / "w1"),
                            "--workers", "1", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["status_counts"] == {"ok": 2} and summary["errors"] == []
    r = runner.invoke(app, ["collect", f"folder:{tmp_path / 'good'}", "-w", str(tmp_path / "w1")])
    assert r.exit_code == 3 and "already exists; re-run with --force" in r.output
    make_bad_folder(tmp_path / "bad")
    r = runner.invoke(app, ["collect", f"folder:{tmp_path / 'bad'}", "-w", str(tmp_path / "w2")])
    assert r.exit_code == 1
    assert "collect summary" in r.output and "split by patient" in r.output
    assert "error: bad/normal/empty.png: empty file (0 bytes)" in r.output
    r = runner.invoke(app, ["collect", "zip:/x", "-w", str(tmp_path / "w3")])
    assert r.exit_code == 3 and "unknown form; write SCHEME:PATH" in r.output
    r = runner.invoke(app, ["collect", f"folder:{tmp_path / 'nope'}", "-w", str(tmp_path / "w3")])
    assert r.exit_code == 3 and "does not exist" in r.output
    r = runner.invoke(app, ["collect", "-w", str(tmp_path / "w3")])
    assert r.exit_code == 2
    assert not (tmp_path / "w3" / "manifest.csv").exists()


# ---- real data -----------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_data_counts(cxr_data: Path, tmp_path: Path) -> None:
    sources = [f"cohen:{cxr_data / 'cohen-covid-chestxray'}",
               f"kermany:{cxr_data / 'kermany-chest-xray'}",
               f"folder:{cxr_data / 'folders' / 'kermany-reencoded'}",
               f"folder:{cxr_data / 'folders' / 'nih-nofinding'}"]  # fmt: skip
    result = collect(Workspace.at(tmp_path), sources, CollectConfig(show_progress=False))
    rows = list(read_manifest(tmp_path / "manifest.csv"))
    # expectations from metadata.csv (the paper's rule) and SOURCES.csv, computed independently
    with open(cxr_data / "cohen-covid-chestxray" / "metadata.csv", encoding="utf-8") as f:
        meta = list(csv.DictReader(f))
    frontal = [m for m in meta if m["modality"] == "X-ray" and m["view"][:2] in ("PA", "AP")
               and "COVID-19" in m["finding"]]  # fmt: skip
    with open(cxr_data / "SOURCES.csv", encoding="utf-8") as f:
        src = Counter((r["path"].split("/")[0] if not r["path"].startswith("folders/")
                       else r["path"].split("/")[1], r["class"]) for r in csv.DictReader(f))
    assert len(frontal) == src["cohen-covid-chestxray", "covid"]  # the README's 427
    digests: dict[str, Counter[str]] = {}
    for name in ("kermany-reencoded", "nih-nofinding"):
        files = sorted((cxr_data / "folders" / name / "normal").iterdir())
        digests[name] = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    expect_ok = {
        ("cohen", "covid"): len(frontal),
        ("kermany", "normal"): src["kermany-chest-xray", "normal"],
        ("kermany-reencoded", "normal"): len(digests["kermany-reencoded"]),  # distinct bytes
        ("nih-nofinding", "normal"): len(digests["nih-nofinding"]),
    }
    got_ok = Counter((r.source, r.label) for r in rows if r.status == "ok")
    assert dict(got_ok) == expect_ok
    n_dup = sum(sum(c.values()) - len(c) for c in digests.values())
    assert result.exact_duplicates == n_dup
    assert sum(r.status == "excluded" for r in rows if r.source == "cohen") == len(meta) - len(
        frontal)
    assert not any(r.status == "error" for r in rows)
    assert all(r.reason for r in rows if r.status != "ok")  # no unexplained row
    splits = defaultdict(set)
    for r in rows:
        if r.status == "ok":
            splits[r.patient_id or r.id].add(r.split)
    assert all(len(s) == 1 for s in splits.values())
    for label in ("covid", "normal"):
        d = result.splits[label]
        assert abs(d["test"] / (d["train"] + d["test"]) - 0.2) < 0.03
    assert Manifest(rows).select(label="covid", split="test")


def test_force_keeps_label_and_exclusion_edits_and_lists_what_it_recomputes(
    tmp_path: Path,
) -> None:
    make_kermany(tmp_path / "k")
    ws = Workspace.at(tmp_path / "ws")
    src = [f"kermany:{tmp_path / 'k'}"]
    collect(ws, src, CFG)
    m = ws.load_manifest()
    relabelled = "kermany/chest_xray/train/NORMAL/IM-0117-0001.jpeg"
    excluded = "kermany/chest_xray/train/NORMAL/IM-0117-0002.jpeg"
    moved = "kermany/chest_xray/test/NORMAL/IM-0200-0001.jpeg"
    rows = m.by_id()
    rows[relabelled].label = "covid"  # a reader's correction
    rows[excluded].set_status("excluded", "rib fracture hardware, reader")
    old_split = rows[moved].split
    rows[moved].split = "test" if old_split == "train" else "train"
    write_manifest(ws.manifest_path, m)
    result = collect(ws, src, CollectConfig(workers=1, force=True, show_progress=False))
    after = ws.load_manifest().by_id()
    assert after[relabelled].label == "covid"
    assert (after[excluded].status, after[excluded].reason) == ("excluded",
                                                                "rib fracture hardware, reader")
    assert after[moved].split == old_split  # recomputed by patient group...
    assert result.merge is not None
    assert result.merge.kept_labels == [f"{relabelled}: covid (collect says normal)"]
    assert result.merge.kept_exclusions == [excluded]
    assert f"{moved}: split {rows[moved].split} -> {old_split}" in result.merge.discarded
    lines = "\n".join(summary_lines(result))  # ...and the user is told
    assert "kept your edits: 1 label(s), 1 status excluded" in lines
    assert f"{moved}: split {rows[moved].split} -> {old_split}" in lines
    assert "manifest.csv.bak" in lines


def test_a_near_duplicate_note_names_three_rows_then_how_many_more() -> None:
    recs = [Record(id=f"r{i}", path=f"{i}.png") for i in range(6)]
    note_near_duplicates(recs, [(0, j, j) for j in range(1, 6)])  # r0 resembles 5 rows
    assert recs[0].note == ("near-duplicate of r1 (1/256 bits), r2 (2/256 bits), r3 (3/256 bits)"
                            f" ... and {5 - NOTE_LISTED} more")  # fmt: skip
    assert recs[5].note == "near-duplicate of r0 (5/256 bits)"
