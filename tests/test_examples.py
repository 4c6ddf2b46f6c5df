"""The library example runs end to end (guards the public API it shows against drift)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_library_api_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("library_api", EXAMPLES / "library_api.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    out = capsys.readouterr().out
    assert "dataset: (90, 64, 64)" in out
    assert "standard=False" in out  # random features are labelled as such
    assert (tmp_path / "runs" / "lib" / "config.json").is_file()


def test_reproduce_script_is_valid_bash() -> None:
    import subprocess

    r = subprocess.run(["bash", "-n", str(EXAMPLES / "reproduce_paper.sh")], capture_output=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_reproduce_script_runs_end_to_end_and_again(tmp_path: Path) -> None:
    """examples/reproduce_paper.sh on a tiny phantom workspace (16 px, 4 iterations): the
    first run stops for the crop review, the second runs every stage (collect's exit 1 for an
    unreadable file does not stop it), a third re-runs all of it (fid --out already exists)."""
    import json
    import os
    import subprocess
    import sys

    from cxraug.core.manifest import Manifest, read_manifest
    from cxraug.generate import balance_count
    from cxraug.prep.phantom import write_phantom_folder

    data = write_phantom_folder(tmp_path / "data", 20, 36, 0)
    (data / "normal" / "broken.png").write_bytes(b"not a picture")  # collect exits 1
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent), "SOURCES": f"folder:{data}",
           "WS": str(ws), "SIZE": "16", "ITERATIONS": "4", "TEST_FRACTION": "0.3",
           "FEATURES": "random", "CXRAUG": f"{sys.executable} -m cxraug",
           # a 4-iteration GAN makes no image filter keeps: score all of them
           "FID_FAKE": "manifest:synthetic=true,label=covid,status=any",
           "TRAIN_ARGS": "--no-xla --mixed-precision none --batch-size 8 "
           "--g-widths 16,32 --d-widths 32,32,32,32 --latent-dim 8 --sample-interval 100000 "
           "-q"}  # fmt: skip

    def script() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(EXAMPLES / "reproduce_paper.sh")], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    first = script()
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Review" in first.stdout and (ws / "boxes.csv").is_file()
    assert "some rows failed" in first.stderr
    assert read_manifest(ws / "manifest.csv").by_id()["data/normal/broken.png"].status == "error"
    for _ in range(2):  # the full pipeline, then all of it again
        r = script()
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads((ws / "fid.json").read_text())
        # generate --balance made the real covid train rows as many as the normal ones; fid
        # scored those (status=any) against the real covid test rows
        real = Manifest([x for x in read_manifest(ws / "manifest.csv") if not x.synthetic])
        n_test = len(real.select(label="covid", split="test"))
        assert report["n_fake"] == balance_count(real, "covid") > 0, report
        assert report["n_real"] == n_test > 0, report
    assert (ws / "runs" / "paper" / "checkpoints" / "ckpt-0000004.npz").is_file()
    run_cfg = json.loads((ws / "runs" / "paper" / "config.json").read_text())
    assert run_cfg["recipe"] == "paper" and run_cfg["arch"] == "mlp"  # the paper's CGAN
    assert (ws / "synthetic" / "covid-filter-sheet.png").is_file()


def test_collect_external_script_is_valid_bash() -> None:
    import subprocess

    r = subprocess.run(["bash", "-n", str(EXAMPLES / "collect_external.sh")], capture_output=True)
    assert r.returncode == 0, r.stderr


def _shared_like(root: Path) -> Path:
    """A tiny tree laid out like ../shared/cxr-data (phantoms, not patients)."""
    import csv

    import numpy as np

    from cxraug.core.images import encode_image
    from cxraug.prep.phantom import make_phantom

    def img(path: Path, seed: int, label: str) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = make_phantom(np.random.default_rng(seed), label, (96, 80))
        path.write_bytes(encode_image(arr, path.suffix))
        return path.name

    cohen = root / "cohen-covid-chestxray"
    names = [img(cohen / "images" / f"c{i}.png", i, "covid") for i in range(4)]
    with open(cohen / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patientid", "finding", "view", "modality", "folder", "filename"])
        w.writerows([str(i), "COVID-19", "PA", "X-ray", "images", n] for i, n in enumerate(names))
    for i in range(3):
        img(root / f"kermany-chest-xray/chest_xray/train/NORMAL/IM-00{i}-0001.jpeg", 10 + i,
            "normal")  # fmt: skip
        img(root / f"folders/kermany-reencoded/normal/{i}.jpeg", 20 + i, "normal")
        img(root / f"folders/nih-nofinding/normal/0000000{i}_000.png", 30 + i, "normal")
    am = root / "external" / "actualmed"
    rows = [("A1", "COVID-19", "AP"), ("A1", "COVID-19", "PA"), ("A2", "No finding", "PA"),
            ("A3", "No finding", "AP"), ("A4", "", "AP")]  # fmt: skip
    with_files = [(p, f, v, img(am / "images" / f"CR.{k}.png", 40 + k, "normal"))
                  for k, (p, f, v) in enumerate(rows)]  # fmt: skip
    with open(am / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patientid", "offset", "finding", "view", "modality", "imagename", "notes"])
        w.writerows([p, "", fi, v, "X-ray", n, ""] for p, fi, v, n in with_files)
    return root


@pytest.mark.slow
def test_collect_external_script_runs_and_again(tmp_path: Path) -> None:
    """examples/collect_external.sh on a tiny tree laid out like the shared data: Actualmed's
    rows are all `external`, preprocessed, and a second run rebuilds with --force."""
    import os
    import subprocess
    import sys

    from cxraug.core.dataset import load_dataset
    from cxraug.core.manifest import read_manifest

    data = _shared_like(tmp_path / "data")
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent),
           "CXRAUG": f"{sys.executable} -m cxraug", "COLLECT_ARGS": "--workers 1",
           "PREPROCESS_ARGS": "--size 16 --workers 1"}  # fmt: skip
    cmd = ["bash", str(EXAMPLES / "collect_external.sh"), str(ws), str(data)]
    for run in range(2):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        rows = read_manifest(ws / "manifest.csv").records
        am = [x for x in rows if x.source == "actualmed"]
        assert {(x.label, x.status, x.split) for x in am} == {
            ("covid", "ok", "external"), ("normal", "ok", "external"), ("", "excluded", "")}
        assert {x.source for x in rows} == {"actualmed", "cohen", "kermany",
                                            "kermany-reencoded", "nih"}  # fmt: skip
        assert (ws / "manifest.csv.bak").exists() == (run == 1)
    ds = load_dataset(ws / "processed" / "dataset.npz")
    assert {x.id for x in am if x.status == "ok"} <= set(ds.ids)
    r = subprocess.run(cmd[:3], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "usage:" in r.stderr
