"""A hostile read of the code, as tests: names that climb out of their folder, two commands on
one workspace, markup in file names, files that are not files, spreadsheet formulas in cells.

Concurrency is tested with real processes: a child Python process takes the lock (the same
`Workspace.lock` the commands use), reports "ready" and holds it until told to stop."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.collect import CollectConfig, collect
from cxraug.core.errors import EXIT_BUSY, BusyError, ImageError, InputError
from cxraug.core.images import encode_image, read_bytes
from cxraug.core.manifest import (
    COLUMNS,
    Manifest,
    Record,
    csv_plain,
    csv_safe,
    parse_manifest_text,
    read_manifest,
    to_csv_text,
    write_manifest,
)
from cxraug.core.names import check_name, name_problem
from cxraug.core.ui import warn
from cxraug.core.workspace import Workspace
from cxraug.prep.phantom import make_phantom

REPO = Path(__file__).resolve().parents[1]
CFG = CollectConfig(workers=1, show_progress=False)
runner = CliRunner()


def write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(arr, path.suffix))
    return path


def phantom_folder(root: Path, n: int = 3) -> Path:
    for k in range(n):
        for label in ("normal", "covid"):
            img = make_phantom(np.random.default_rng(10 * k + (label == "covid")), label, (64, 56))
            write(root / label / f"{label}{k}.png", img)
    return root


def cxraug(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m cxraug ARGS` in a fresh process, with a hard time limit (hangs fail)."""
    return subprocess.run([sys.executable, "-m", "cxraug", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout)  # fmt: skip


# ---- 1. names that become paths ------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/tmp/x", "~x", ".hidden", "",
                                  "a b", "x" * 101, "a\\b", "run;rm"])  # fmt: skip
def test_unsafe_names_are_refused(name: str) -> None:
    assert name_problem(name) is not None
    with pytest.raises(InputError, match="choose a plain name"):
        check_name(name, "run name")


@pytest.mark.parametrize("name", ["paper", "conv-64", "bf16_2k", "run.1", "A" * 100, "20261202"])
def test_plain_names_pass(name: str) -> None:
    assert check_name(name) == name


def test_train_name_dotdot_force_deletes_nothing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "processed").mkdir(parents=True)
    keep = [ws / "manifest.csv", ws / "processed" / "dataset.npz", ws / "runs" / "a" / "x.txt"]
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("precious")
    for name in ("..", "../..", str(tmp_path), "a/../..", ".."):
        r = runner.invoke(app, ["train", "-w", str(ws), "--name", name, "--force"])
        assert r.exit_code == 3, (name, r.output)
        assert "is a path, not a name" in r.output or "plain name" in r.output
    assert all(p.read_text() == "precious" for p in keep)


def test_run_and_resume_must_be_runs_of_the_workspace(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    outside = tmp_path / "elsewhere"
    (outside / "checkpoints").mkdir(parents=True)  # looks like a run, but outside runs/
    (ws.runs_dir / "ok" / "checkpoints").mkdir(parents=True)
    for given in (str(outside), "../elsewhere", "runs/../../elsewhere"):
        with pytest.raises(InputError, match="not a folder of"):
            ws.find_run(given)
    # a run of the workspace, named or given by its path, is found
    for given in ("ok", str(ws.runs_dir / "ok"), "runs/ok"):
        assert ws.find_run(given).path == ws.runs_dir / "ok"
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", str(outside)])
    assert r.exit_code == 3 and "not a folder of" in r.output


def test_cohen_metadata_paths_leading_outside_are_refused_unread(tmp_path: Path) -> None:
    root = tmp_path / "cohen"
    secret = write(tmp_path / "secret.png", make_phantom(np.random.default_rng(5), "covid",
                                                         (64, 56)))  # fmt: skip
    write(root / "images" / "a.png", make_phantom(np.random.default_rng(6), "covid", (64, 56)))
    rows = [("images", "a.png"), ("images", "../../secret.png"), ("images", str(secret)),
            ("..", "secret.png"), ("/", "etc/passwd")]  # fmt: skip
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patientid", "finding", "view", "modality", "folder", "filename"])
        for k, (folder, fname) in enumerate(rows):
            w.writerow([str(k), "COVID-19", "PA", "X-ray", folder, fname])
    result = collect(Workspace.at(tmp_path / "ws"), [f"cohen:{root}"], CFG)
    got = read_manifest(tmp_path / "ws" / "manifest.csv").records
    assert [r.status for r in got] == ["ok", "error", "error", "error", "error"]
    for line, r in zip(range(3, 7), got[1:], strict=True):
        assert r.reason.startswith(f"metadata.csv row {line}: ") and "refused, not read" in r.reason
        assert r.sha256 == "" and r.width is None  # never opened
    assert len(result.errors) == 4 and got[0].sha256


def test_filter_never_moves_a_file_outside_synthetic(tmp_path: Path) -> None:
    """--move-rejected unlinks the old name: a manifest path pointing outside synthetic/CLASS
    must not make it delete (or move) that file."""
    from cxraug.core.dataset import Dataset, save_dataset
    from cxraug.core.images import write_png_gray
    from cxraug.filter import filter_synthetic
    from cxraug.quality.decide import FilterConfig

    ws = Workspace.at(tmp_path / "ws")
    rng = np.random.default_rng(0)
    real = np.stack([make_phantom(rng, "covid", (64, 64)) for _ in range(12)])
    ds = Dataset(real.astype(np.float32) / 127.5 - 1, np.ones(12, np.int64),
                 np.array([f"r{i}" for i in range(12)]), np.array(["train"] * 12))  # fmt: skip
    save_dataset(ws.dataset_path, ds)
    victim = tmp_path / "outside" / "victim.png"
    write_png_gray(victim, rng.integers(0, 256, (64, 64), dtype=np.uint8))  # noise: rejected
    inside = ws.synthetic_dir / "covid" / "noise.png"
    write_png_gray(inside, rng.integers(0, 256, (64, 64), dtype=np.uint8))
    recs = [Record(id=f"synthetic/covid/{p.stem}", path=str(p), label="covid", split="train",
                   source="synthetic", synthetic=True) for p in (victim, inside)]  # fmt: skip
    ws.save_manifest(Manifest(recs))
    res = filter_synthetic(ws, FilterConfig(), label="covid", move_rejected=True)
    assert all(not d.kept for d in res.decisions)
    assert victim.is_file()  # untouched
    assert (ws.rejected_dir("covid") / "noise.png").is_file() and not inside.exists()
    assert any("victim" in f and "not moved" in f for f in res.move_failures)
    assert not (ws.rejected_dir("covid") / "victim.png").exists()


# ---- 2. two commands, one workspace ----------------------------------------------------------

HOLDER = """
import sys
from cxraug.core.manifest import Record
from cxraug.core.workspace import Workspace
ws = Workspace.at(sys.argv[1])
with ws.lock(sys.argv[2]):
    m = ws.load_manifest() if sys.argv[3] == "add" else None
    print("ready", flush=True)
    sys.stdin.readline()  # hold the lock until the parent says so
    if m is not None:  # the read-modify-write of a writer: add one row
        m.add(Record(id="holder/row", path="x.png", status="excluded", reason="added by holder"))
        ws.save_manifest(m)
"""


def hold_lock(ws: Path, command: str = "cxraug generate", add: bool = False) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws), command, "add" if add else "-"],
                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def release(p: subprocess.Popen) -> None:
    assert p.stdin is not None
    p.stdin.write("\n")
    p.stdin.close()
    assert p.wait(timeout=60) == 0


@pytest.fixture()
def collected(tmp_path: Path) -> Workspace:
    ws = Workspace.at(tmp_path / "ws")
    collect(ws, [f"folder:{phantom_folder(tmp_path / 'src')}"], CFG)
    return ws


def test_every_manifest_writer_is_refused_while_another_holds_the_workspace(
    collected: Workspace, tmp_path: Path
) -> None:
    ws = collected
    before = ws.manifest_path.read_bytes()
    holder = hold_lock(ws.root, "cxraug generate")
    try:
        w = ["-w", str(ws.root)]
        for args in (["collect", f"folder:{tmp_path / 'src'}", "--force", *w],
                     ["preprocess", "--size", "16", "--workers", "1", *w],
                     ["generate", "--class", "covid", "-n", "1", *w],
                     ["filter", *w]):  # fmt: skip
            r = runner.invoke(app, args)
            assert r.exit_code == EXIT_BUSY == 7, (args, r.output)
            assert f"PID {holder.pid} is running `cxraug generate` (since " in r.output, r.output
            assert "wait for it" in r.output and "Traceback" not in r.output
        assert ws.manifest_path.read_bytes() == before and not ws.dataset_path.exists()
    finally:
        release(holder)
    r = runner.invoke(app, ["preprocess", "--size", "16", "--workers", "1", "-w", str(ws.root)])
    assert r.exit_code == 0, r.output  # free again


def test_a_second_writer_no_longer_drops_the_first_ones_rows(collected: Workspace) -> None:
    """The lost update: B reads the manifest while A is mid read-modify-write, A saves, B saves
    its stale copy and A's row is gone. Now B is refused (exit 7) until A is done, and B's rerun
    keeps A's row."""
    ws = collected
    rid = next(r.id for r in ws.load_manifest() if r.status == "ok")
    boxes = ws.root / "boxes.csv"
    boxes.write_text(f"id,x0,y0,x1,y1\n{rid},2,2,50,50\n")
    holder = hold_lock(ws.root, "cxraug collect", add=True)  # A: has read, will add a row
    try:
        args = ["preprocess", "--size", "16", "--workers", "1", "--crop-boxes", str(boxes),
                "-w", str(ws.root)]  # fmt: skip
        r = runner.invoke(app, args)  # B, concurrently
        assert r.exit_code == 7, r.output
    finally:
        release(holder)  # A saves its row
    r = runner.invoke(app, args)  # B again, after A
    assert r.exit_code == 0, r.output
    m = ws.load_manifest().by_id()
    assert m["holder/row"].reason == "added by holder"  # A's row survived B
    assert m[rid].crop == (2, 2, 50, 50)  # and B's change is in


def test_lock_left_by_a_killed_process_does_not_block(collected: Workspace) -> None:
    ws = collected
    holder = hold_lock(ws.root, "cxraug filter")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    info = json.loads(ws.lock_path.read_text())  # the dead holder's record is still there
    assert info["pid"] == holder.pid and info["command"] == "cxraug filter"
    with ws.lock("cxraug preprocess"):  # the kernel released the lock with the process
        # read from another process: a POSIX record lock is dropped when its holder closes
        # ANY descriptor of the file, so this process must not open it (core/lock.py)
        seen = subprocess.run([sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())",
                               str(ws.lock_path)], capture_output=True, text=True, check=True)
        assert json.loads(seen.stdout)["pid"] == os.getpid()
    ws.lock_path.write_text(json.dumps({"pid": 999999, "command": "x", "since": 0}))
    r = runner.invoke(app, ["preprocess", "--size", "16", "--workers", "1", "-w", str(ws.root)])
    assert r.exit_code == 0, r.output


def test_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    with ws.lock("a"), ws.lock("b"):  # nested in this process: fine
        pass
    holder = hold_lock(tmp_path, "cxraug preprocess")
    try:
        with pytest.raises(BusyError, match=f"PID {holder.pid} is running `cxraug preprocess`"):
            with ws.lock("cxraug collect"):
                pass
    finally:
        release(holder)


def test_second_train_of_one_run_is_refused(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    run = ws.run("x")
    run.path.mkdir(parents=True)
    run.config_path.write_text("{}")  # a run (for --resume); --force would replace it
    from cxraug.core.dataset import Dataset, save_dataset

    ds = Dataset(np.zeros((2, 8, 8), np.float32), np.array([0, 1]), np.array(["a", "b"]),
                 np.array(["train"] * 2))  # fmt: skip
    save_dataset(ws.dataset_path, ds)
    code = ("import sys; from cxraug.core.workspace import Workspace\n"
            "with Workspace.at(sys.argv[1]).run('x').lock('cxraug train'):\n"
            "    print('ready', flush=True); sys.stdin.readline()\n")  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for args in (["--name", "x", "--force"], ["--resume", "x"]):
            r = runner.invoke(app, ["train", "-w", str(tmp_path), *args])
            assert r.exit_code == 7, (args, r.output)
            assert f"run x is busy: PID {p.pid} is running `cxraug train`" in r.output
        assert run.config_path.read_text() == "{}"  # --force replaced nothing
    finally:
        release(p)


# ---- 4. markup in user-derived text ----------------------------------------------------------

NASTY = "a[red]b[/x].png"


def test_markup_in_file_names_is_printed_verbatim(
    collected: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = collected
    src = tmp_path / "src" / "covid" / NASTY
    write(src, make_phantom(np.random.default_rng(77), "covid", (64, 56)))
    r = runner.invoke(app, ["collect", f"folder:{tmp_path / 'src'}", "--force", "--workers", "1",
                            "-w", str(ws.root)])  # fmt: skip
    assert r.exit_code == 0, r.output
    src.write_bytes(b"changed")  # now preprocess reports this row as failed
    r = runner.invoke(app, ["preprocess", "--size", "16", "--workers", "1", "-w", str(ws.root)])
    assert r.exit_code == 1, r.output
    assert f"failed: src/covid/{NASTY}: " in r.output and "MarkupError" not in r.output
    # an error message (exit 3) that quotes a user-given name
    r = runner.invoke(app, ["generate", "-w", str(ws.root), "--class", "covid", "-n", "1",
                            "--run", "r[/x]"])  # fmt: skip
    assert r.exit_code == 3 and "'r[/x]'" in r.output, r.output
    warn(f"file {NASTY} [bold]x")
    assert f"warning: file {NASTY} [bold]x" in capsys.readouterr().err


# ---- 5. files that are not files ---------------------------------------------------------------


def test_fifo_device_and_oversized_files_are_error_rows_and_nothing_hangs(tmp_path: Path) -> None:
    src = phantom_folder(tmp_path / "src", n=2)
    os.mkfifo(src / "normal" / "fifo.png")
    os.symlink("/dev/zero", src / "normal" / "zero.png")
    noise = np.random.default_rng(1).integers(0, 256, (160, 160), dtype=np.uint8)
    big = write(src / "covid" / "big.png", noise)
    small = max(p.stat().st_size for p in src.rglob("*[0-9].png"))
    assert small < 24 * 1024 < big.stat().st_size  # the cap below lies between them
    ws = tmp_path / "ws"
    r = cxraug("collect", f"folder:{src}", "-w", str(ws), "--workers", "1",
               "--max-file-mb", str(24 / 1024))  # fmt: skip
    assert r.returncode == 1, r.stderr
    rows = {Path(x.id).name: x for x in read_manifest(ws / "manifest.csv")}
    assert rows["fifo.png"].reason == "a FIFO (named pipe), not an image file; point the row " \
        "at a regular file"
    assert rows["zero.png"].reason.startswith("a character device, not an image file")
    assert rows["big.png"].reason.startswith("file is 0.0") and "--max-file-mb" in rows[
        "big.png"].reason  # fmt: skip
    assert {x.status for n, x in rows.items() if n[-5].isdigit()} == {"ok"}  # the rest goes on
    # preprocess: a file that became a FIFO after collect is that row's error, the rest is built
    (src / "normal" / "normal0.png").unlink()
    os.mkfifo(src / "normal" / "normal0.png")
    r = cxraug("preprocess", "-w", str(ws), "--size", "16", "--workers", "1")
    assert r.returncode == 1, r.stderr
    assert "normal0.png: a FIFO (named pipe)" in r.stderr
    assert "3 images" in r.stdout  # normal1, covid0, covid1


def test_read_bytes_limits(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG" + b"\0" * 2000)
    assert len(read_bytes(p)) == 2004
    with pytest.raises(ImageError, match="raise --max-file-mb"):
        read_bytes(p, max_file_mb=1000 / 2**20)
    assert len(read_bytes(p, max_file_mb=2004 / 2**20)) == 2004  # the limit itself is allowed
    os.mkfifo(tmp_path / "f.png")
    with pytest.raises(ImageError, match="FIFO"):
        read_bytes(tmp_path / "f.png")


def test_max_megapixels_hint_names_an_option_that_exists() -> None:
    for command in ("collect", "preprocess"):
        r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--max-megapixels" in r.output and "--max-file-mb" in r.output


# ---- 8. spreadsheet formulas in cells ------------------------------------------------------------

TRICKY = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
          "\tx", "\r=1", "'quoted", "'=already", "''=two", "'", "plain", "a=b", "-", "=", ""]


@pytest.mark.parametrize("cell", TRICKY + ["-1.5", "+2", "3e-4"])
def test_csv_safe_round_trips_and_neutralises(cell: str) -> None:
    stored = csv_safe(cell)
    assert csv_plain(stored) == cell
    assert not stored.startswith(("=", "+", "-", "@", "\t", "\r")) or cell in ("-1.5", "+2")


def test_manifest_cells_are_neutralised_and_read_back_exactly(tmp_path: Path) -> None:
    recs = [Record(id=f"src/{i}", path=f"img{i}.png", label="covid", split="train",
                   view=cell, license=cell, patient_id=cell, note=cell, extra={"mine": cell})
            for i, cell in enumerate(TRICKY)]  # fmt: skip
    recs.append(Record(id="src/n", path="n.png", status="excluded", seed=-3, width=5,
                       extra={"mine": "-1.5"}))  # fmt: skip
    text = to_csv_text(Manifest(recs, ["mine"]))
    raw = list(csv.DictReader(io.StringIO(text, newline="")))
    for row in raw:
        for col in ("view", "license", "patient_id", "note", "mine"):
            assert not row[col].startswith(("=", "+", "@", "\t", "\r")), (col, row[col])
            assert not row[col].startswith("-") or row[col] == "-1.5"
    assert raw[-1]["seed"] == "-3" and raw[-1]["mine"] == "-1.5"  # numbers untouched
    write_manifest(tmp_path / "m.csv", Manifest(recs, ["mine"]))
    for back in (parse_manifest_text(text), read_manifest(tmp_path / "m.csv")):
        for cell, r in zip(TRICKY, back.records, strict=False):
            want = cell.strip()  # the manifest strips whitespace around its own columns
            assert (r.view, r.license, r.patient_id, r.note) == (want,) * 4
            assert r.extra["mine"] == cell  # user columns come back byte for byte
        assert back.records[-1].seed == -3 and back.records[-1].extra["mine"] == "-1.5"
    assert set(COLUMNS) <= set(raw[0])


def test_filter_report_cells_are_neutralised() -> None:
    from cxraug.filter import _report_csv
    from cxraug.quality.decide import Decision

    d = Decision("=evil", False, ("noise",), ("noise: -3",))
    rows = list(csv.reader(io.StringIO(_report_csv([d], [Path("=evil.png")]))))
    assert rows[1][0] == "'=evil" and rows[1][1] == "'=evil.png"


def test_a_reader_never_sees_a_half_written_manifest(tmp_path: Path) -> None:
    """fid and the other readers take no lock: atomic replacement alone must be enough. A writer
    process rewrites a 2,000-row manifest while this process reads it in a loop."""
    ws = Workspace.at(tmp_path)
    rows = [Record(id=f"s/{i:05d}", path=f"{i}.png", status="excluded", note="x" * 40)
            for i in range(2000)]  # fmt: skip
    ws.save_manifest(Manifest(rows))
    code = ("import sys; from cxraug.core.workspace import Workspace\n"
            "ws = Workspace.at(sys.argv[1]); m = ws.load_manifest()\n"
            "for k in range(30):\n"
            "    m.records[0].note = str(k); ws.save_manifest(m)\n")  # fmt: skip
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO)
    reads = 0
    while writer.poll() is None or reads == 0:
        assert len(ws.load_manifest()) == 2000  # a torn file would fail to parse or be short
        reads += 1
    assert writer.wait(timeout=60) == 0 and ws.load_manifest().records[0].note == "29"


def test_train_without_a_dataset_creates_no_run_folder(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "-w", str(tmp_path), "--name", "x"])
    assert r.exit_code == 3 and "cxraug preprocess" in r.output
    assert not (tmp_path / "runs").exists()  # the run lock is taken only once there is work
