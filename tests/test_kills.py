"""Data loss and hangs (issue 19, docs/safety.md): a command killed at any moment and what the
next command finds; a full disk part-way; error rows read again, cut-off manifest rows, fid on
a FIFO.

Every kill here is real: a child process runs the command (with a test seam patched in before
it starts, e.g. a worker that stalls or a write that kills its own process), the test waits for
a condition (never a fixed sleep), sends the signal, and then checks what is left and what the
next command does with it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_preprocess import make_ws
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.fsutil import sha256_file
from cxraug.core.images import encode_image, write_png_gray
from cxraug.core.manifest import COLUMNS, Manifest, Record, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep.phantom import make_phantom

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
runner = CliRunner()


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll `cond` until it holds; fail naming `what` after `timeout` s (a loaded 2-core
    machine may take long to start a Python process, so the limit is generous)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Is `pid` a running process (a zombie, dead but not yet reaped, is not)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


@contextlib.contextmanager
def reaped(pids: Callable[[], list[int]]) -> Iterator[None]:
    """Kill whatever `pids()` names that is still alive when the block ends (a failing test
    must not leave stalled processes behind)."""
    try:
        yield
    finally:
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start(code: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO,
                                env=ENV, stdout=f, stderr=subprocess.STDOUT)  # fmt: skip


# ---- 1. a killed pool command: its workers die with it, the lock is free -------------------

#: Runs `cxraug ARGS` with the per-file function of preprocess and collect replaced by one
#: that records its worker's PID in MARKS/ and then stalls: the pool is busy when killed.
STALLING = """
    import os, signal, sys, time
    from pathlib import Path
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, even under nohup
    import cxraug.prep.inspect as ins
    import cxraug.preprocess as pp
    def stall(*args, **kwargs):
        (Path(sys.argv[1]) / str(os.getpid())).touch()
        time.sleep(600)
    pp.load_image = ins.inspect_file = stall  # inherited by the forked workers
    from cxraug.cli import app
    app(sys.argv[2:], prog_name="cxraug")
"""


def tiny_folder_source(root: Path, n: int) -> Path:
    for i in range(n):
        label = ("covid", "normal")[i % 2]
        p = root / label / f"{label}{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_image(make_phantom(np.random.default_rng(i), label, (40, 32)), ".png"))
    return root


@pytest.mark.parametrize(("command", "sig"), [("preprocess", signal.SIGKILL),
                                              ("collect", signal.SIGHUP)])  # fmt: skip
def test_a_killed_pool_command_takes_its_workers_along_and_frees_the_workspace(
    command: str, sig: signal.Signals, tmp_path: Path
) -> None:
    if command == "preprocess":
        ws = make_ws(tmp_path, n=40, size=(40, 32))  # > 16 rows: a real pool
        args = ["preprocess", "-w", str(ws.root), "--size", "16", "--workers", "2"]
    else:
        ws = Workspace.at(tmp_path / "ws")
        src = tiny_folder_source(tmp_path / "src", 70)  # collect pools from 64 files on
        args = ["collect", f"folder:{src}", "-w", str(ws.root), "--workers", "2"]
    marks = tmp_path / "marks"
    marks.mkdir()
    workers = lambda: [int(p.name) for p in marks.iterdir()]  # noqa: E731
    with reaped(workers):
        main = start(STALLING, str(marks), *args, log=tmp_path / "log")
        wait_for(lambda: len(workers()) == 2, "both pool workers to start")
        main.send_signal(sig)
        assert main.wait(timeout=60) == -sig
        wait_for(lambda: not any(alive(p) for p in workers()),
                 "the pool workers to die with their parent", timeout=30)  # fmt: skip
    with ws.lock("cxraug test"):  # free: nobody holds the workspace any more
        pass
    again = [a if a != "2" else "1" for a in args]  # the next command, in this process
    r = runner.invoke(app, [*again, *(["--force"] if command == "collect" and
                                      ws.manifest_path.exists() else [])])  # fmt: skip
    assert r.exit_code == 0, r.output
    if command == "preprocess":
        assert not list(ws.processed_dir.glob(".images-*")), "scratch array left behind"
        assert ws.dataset_path.is_file()
    else:
        assert len(ws.load_manifest()) == 70


#: Takes the workspace lock, forks a child that inherits the lock file's descriptor and
#: outlives this process, prints the child's PID and waits to be killed.
FORKING_HOLDER = """
    import os, sys, time
    from cxraug.core.workspace import Workspace
    with Workspace.at(sys.argv[1]).lock("cxraug collect"):
        child = os.fork()
        if child == 0:
            time.sleep(600)
            os._exit(0)
        print(child, flush=True)
        time.sleep(600)
"""


def test_the_lock_belongs_to_the_process_that_took_it_not_to_its_children(
    tmp_path: Path,
) -> None:
    """A descriptor a child inherited keeps an flock held after its parent died; the lock
    must go with the process that took it (its recorded PID is dead: the lock is free)."""
    ws = Workspace.at(tmp_path)
    log = tmp_path / "log"
    holder = start(FORKING_HOLDER, str(tmp_path), log=log)
    child: list[int] = []
    with reaped(lambda: child):
        wait_for(lambda: log.read_text().strip().isdigit(), "the holder to fork")
        child.append(int(log.read_text()))
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=60) == -signal.SIGKILL
        assert alive(child[0])  # the child still holds a descriptor of the lock file
        with ws.lock("cxraug preprocess"):
            pass


#: A child that calls `parallel.die_with` with the prctl request unavailable (as off Linux),
#: so that only the watcher thread can end it.
WATCHED_CHILD = """
    import os, sys, time
    from cxraug.core import parallel
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        sys.platform = "darwin"  # no prctl: the fallback watches the parent PID
        parallel.die_with(parent)
        time.sleep(600)
        os._exit(0)
    print(child, flush=True)
    time.sleep(600)
"""


def test_without_prctl_a_worker_still_dies_with_its_parent(tmp_path: Path) -> None:
    log = tmp_path / "log"
    parent = start(WATCHED_CHILD, log=log)
    child: list[int] = []
    with reaped(lambda: child):
        wait_for(lambda: log.read_text().strip().isdigit(), "the parent to fork")
        child.append(int(log.read_text()))
        parent.send_signal(signal.SIGKILL)
        assert parent.wait(timeout=60) == -signal.SIGKILL
        wait_for(lambda: not alive(child[0]), "the child to notice its parent died", timeout=30)


# ---- 6, 8, 9. generate: provenance after a kill, no manifest no deletion, huge -n ---------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A tiny run r1 with two checkpoints (iterations 1 and 2) and a 16 px dataset."""
    from test_generate import real_rows
    from test_train import TINY, make_workspace

    from cxraug.gan.config import recipe_config
    from cxraug.train import train

    ws = make_workspace(tmp_path_factory.mktemp("kills"))
    write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
    cfg = recipe_config("paper", **TINY).replace(iterations=2, checkpoint_interval=1,
                                                 keep_checkpoints=2)  # fmt: skip
    train(ws, cfg, name="r1", quiet=True)
    assert len(ws.run("r1").checkpoint_files()) == 2
    return ws


def copy_ws(ws: Workspace, dst: Path) -> Workspace:
    shutil.copytree(ws.root, dst)
    return Workspace.at(dst)


def synthetic_pngs(ws: Workspace) -> set[Path]:
    """Every PNG in the class folders of synthetic/ (and their rejected/)."""
    return {p.resolve() for d in ws.synthetic_dir.iterdir() if d.is_dir()
            for p in d.rglob("*.png")} if ws.synthetic_dir.is_dir() else set()  # fmt: skip


def assert_rows_match_files(ws: Workspace) -> list[Record]:
    """Every synthetic row names a file that exists, holding the bytes its sha256 says."""
    rows = [r for r in ws.load_manifest() if r.synthetic]
    for r in rows:
        p = r.resolve(ws.root)
        assert p.is_file(), f"row {r.id} names {p}, which does not exist"
        assert sha256_file(p) == r.sha256, f"row {r.id}: {p} holds other bytes than it says"
    return rows


def assert_clean(ws: Workspace) -> list[Record]:
    """assert_rows_match_files, and no PNG in synthetic/ that no row names, no journal left."""
    rows = assert_rows_match_files(ws)
    named = {r.resolve(ws.root).resolve() for r in rows}
    assert synthetic_pngs(ws) <= named, sorted(map(str, synthetic_pngs(ws) - named))
    assert not list(ws.synthetic_dir.rglob("*.pending.json"))
    return rows


#: generate(WORKSPACE, GenerateConfig(**JSON)) that SIGKILLs its own process right after its
#: K-th PNG is written.
GENERATE_KILLED = """
    import json, os, signal, sys, threading
    import cxraug.generate as g
    from cxraug.core.workspace import Workspace
    after, count, lock = int(sys.argv[2]), [0], threading.Lock()
    real = g.atomic_write_bytes
    def write(path, data):
        real(path, data)
        with lock:
            count[0] += 1
            if count[0] == after:
                os.kill(os.getpid(), signal.SIGKILL)
    g.atomic_write_bytes = write
    g.generate(Workspace.at(sys.argv[1]), g.GenerateConfig(**json.loads(sys.argv[3])))
"""


def generate_killed(ws: Workspace, after: int, log: Path, **cfg: object) -> None:
    p = start(GENERATE_KILLED, str(ws.root), str(after), json.dumps(cfg), log=log)
    assert p.wait(timeout=300) == -signal.SIGKILL, log.read_text()[-3000:]


def test_a_killed_generate_force_leaves_no_row_with_another_files_provenance(
    trained: Workspace, tmp_path: Path
) -> None:
    ws = copy_ws(trained, tmp_path / "w")
    ck1, ck2 = ws.run("r1").checkpoint_files()
    r = runner.invoke(app, ["generate", "-w", str(ws.root), "--class", "covid", "-n", "4",
                            "--checkpoint", str(ck1)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert {x.checkpoint_sha256 for x in assert_clean(ws)} == {sha256_file(ck1)}
    # --force from the other checkpoint rewrites the same four names; killed after two
    generate_killed(ws, 2, tmp_path / "log", label="covid", n=4, checkpoint=str(ck2),
                    force=True)  # fmt: skip
    assert_rows_match_files(ws)  # right after the kill, before anything cleaned up
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "covid"])
    assert r.exit_code == 3 and "no synthetic covid rows" in r.output, r.output
    assert_clean(ws)  # the next command removed what no row names: --force had replaced it all
    r = runner.invoke(app, ["generate", "-w", str(ws.root), "--class", "covid", "-n", "4",
                            "--checkpoint", str(ck2)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert {x.checkpoint_sha256 for x in assert_clean(ws)} == {sha256_file(ck2)}


def test_generate_commits_as_it_goes_and_a_kill_keeps_what_was_committed(
    trained: Workspace, tmp_path: Path
) -> None:
    ws = copy_ws(trained, tmp_path / "w")
    generate_killed(ws, 5, tmp_path / "log", label="covid", n=8, batch_size=2, seed=3,
                    commit_seconds=0)  # fmt: skip
    rows = assert_rows_match_files(ws)
    assert [x.noise_index for x in rows] == [0, 1, 2, 3]  # two batches committed, then killed
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "covid"])
    assert r.exit_code == 0, r.output
    assert len(assert_clean(ws)) == 4
    # the same images again: refused with the way forward, --force redoes the set
    r = runner.invoke(app, ["generate", "-w", str(ws.root), "--class", "covid", "-n", "8",
                            "--seed", "3"])  # fmt: skip
    assert r.exit_code == 3 and "--force" in r.output and "another --seed" in r.output
    r = runner.invoke(app, ["generate", "-w", str(ws.root), "--class", "covid", "-n", "8",
                            "--seed", "3", "--force"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "8/8" in r.stderr  # the progress bar
    assert len(assert_clean(ws)) == 8


def test_no_manifest_no_deletion(trained: Workspace, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A generate died between its PNGs and its rows; with manifest.csv moved aside, the next
    command must not delete the PNGs its journal lists: only a manifest says they are orphans."""
    ws = copy_ws(trained, tmp_path / "w")

    def die(self: Workspace, manifest: Manifest) -> None:
        raise SystemExit(137)  # the process dies here (as a kill would): no cleanup runs

    monkeypatch.setattr(Workspace, "save_manifest", die)
    r = runner.invoke(app, ["generate", "-w", str(ws.root), "--class", "covid", "-n", "3"])
    assert r.exit_code == 137
    monkeypatch.undo()
    left = synthetic_pngs(ws)
    assert len(left) == 3
    aside = ws.root / "manifest.moved"
    ws.manifest_path.rename(aside)
    for args in (["filter"], ["generate", "-n", "1", "--seed", "5"]):
        r = runner.invoke(app, [*args, "-w", str(ws.root), "--class", "covid"])
        assert r.exit_code == 3 and "no manifest" in r.output, r.output
        assert synthetic_pngs(ws) == left and all(p.is_file() for p in left)
    aside.rename(ws.manifest_path)
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "covid"])
    assert r.exit_code == 3 and "no synthetic covid rows" in r.output  # swept, then nothing
    assert synthetic_pngs(ws) == set()


def test_generate_refuses_a_count_that_cannot_fit_before_writing_anything(
    trained: Workspace, tmp_path: Path
) -> None:
    ws = copy_ws(trained, tmp_path / "w")
    before = ws.manifest_path.read_bytes()
    # a child with 6 GB of address space: the old code built 10^12 names in memory first
    code = """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        from cxraug.cli import app
        app(sys.argv[1:], prog_name="cxraug")
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), "generate", "-w",
                        str(ws.root), "--class", "covid", "-n", str(10**12)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 3, r.stderr[-3000:]
    msg = " ".join(r.stderr.split())
    assert "-n 1000000000000" in msg and "free" in msg and "smaller -n" in msg, msg
    assert ws.manifest_path.read_bytes() == before and not ws.synthetic_dir.exists()


def test_room_check_arithmetic() -> None:
    from cxraug.generate import room_problem

    # 16 px PNGs: at most 16 * 17 + 256 = 528 bytes each; rows: 512 B on disk, 6 KiB in memory
    assert room_problem(1000, 16, rows=10, disk_free=10**9, memory_free=10**9) is None
    need_disk = 1000 * 528 + 1010 * 512
    assert room_problem(1000, 16, 10, disk_free=need_disk, memory_free=10**9) is None
    msg = room_problem(1000, 16, 10, disk_free=need_disk - 1, memory_free=10**9)
    assert msg is not None and "disk" in msg
    need_mem = 1010 * 6 * 1024
    assert room_problem(1000, 16, 10, disk_free=10**9, memory_free=need_mem) is None
    msg = room_problem(1000, 16, 10, disk_free=10**9, memory_free=need_mem - 1)
    assert msg is not None and "memory" in msg
    assert room_problem(1000, 16, 10, disk_free=None, memory_free=None) is None  # unknown


# ---- 7, 14. filter: kills during --move-rejected, outputs before the manifest ------------------


def filter_ws(root: Path, n_noise: int = 4) -> Workspace:
    """12 real covid training phantoms (64 px) and n_noise synthetic noise PNGs (rejected)."""
    ws = Workspace.at(root)
    rng = np.random.default_rng(0)
    real = np.stack([make_phantom(rng, "covid", (64, 64)) for _ in range(12)])
    save_dataset(ws.dataset_path, Dataset(real.astype(np.float32) / 127.5 - 1,
                                          np.ones(12, np.int64),
                                          np.array([f"r{i}" for i in range(12)]),
                                          np.array(["train"] * 12)))  # fmt: skip
    recs = []
    for i in range(n_noise):
        p = ws.synthetic_class_dir("covid") / f"noise{i}.png"
        write_png_gray(p, rng.integers(0, 256, (64, 64), dtype=np.uint8))
        recs.append(Record(id=f"synthetic/covid/noise{i}", path=ws.relpath(p), label="covid",
                           split="train", source="synthetic", synthetic=True,
                           sha256=sha256_file(p)))  # fmt: skip
    ws.save_manifest(Manifest(recs))
    return ws


#: `cxraug filter --move-rejected` that SIGKILLs itself just before or just after it saves the
#: manifest.
FILTER_KILLED = """
    import os, signal, sys
    from cxraug.core.workspace import Workspace
    real = Workspace.save_manifest
    def save(self, manifest):
        if sys.argv[2] == "after":
            real(self, manifest)
        os.kill(os.getpid(), signal.SIGKILL)
    Workspace.save_manifest = save
    from cxraug.cli import app
    app(["filter", "-w", sys.argv[1], "--class", "covid", "--move-rejected"], prog_name="cxraug")
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_killed_move_rejected_leaves_nothing_the_next_filter_does_not_clean(
    when: str, tmp_path: Path
) -> None:
    ws = filter_ws(tmp_path / "ws")
    p = start(FILTER_KILLED, str(ws.root), when, log=tmp_path / "log")
    assert p.wait(timeout=300) == -signal.SIGKILL, (tmp_path / "log").read_text()[-3000:]
    assert_rows_match_files(ws)
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "covid"])
    assert r.exit_code == 0, r.output
    rows = assert_clean(ws)  # one name per image: the one its row gives
    assert len(rows) == 4 and all(x.status == "rejected" for x in rows)
    moved = all("/rejected/" in x.path for x in rows)
    assert moved == (when == "after")  # the move happened exactly when the manifest said so


LIMITED = """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from cxraug.cli import app
    app(sys.argv[2:], prog_name="cxraug")
"""


def run_limited(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`cxraug ARGS` where writing a file past LIMIT bytes fails (EFBIG), as on a full disk."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(LIMITED), str(limit), *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.mark.parametrize("move", [False, True])
def test_filter_writes_its_outputs_before_it_commits_the_manifest(move: bool,
                                                                   tmp_path: Path) -> None:
    probe = filter_ws(tmp_path / "probe")
    r = runner.invoke(app, ["filter", "-w", str(probe.root), "--class", "covid"])
    assert r.exit_code == 0, r.output
    manifest = probe.manifest_path.stat().st_size
    sheet = probe.filter_sheet_path("covid").stat().st_size
    assert manifest < sheet  # so a limit between them lets the manifest through, not the sheet
    ws = filter_ws(tmp_path / "ws")
    before = ws.manifest_path.read_bytes()
    names = synthetic_pngs(ws)
    r = run_limited((manifest + sheet) // 2, "filter", "-w", str(ws.root), "--class", "covid",
                    *(["--move-rejected"] if move else []))  # fmt: skip
    assert r.returncode == 6, r.stderr[-3000:]
    assert str(ws.filter_sheet_path("covid")) in " ".join(r.stderr.split())
    assert ws.manifest_path.read_bytes() == before  # not committed: nothing changed
    assert synthetic_pngs(ws) == names  # and no file was moved
    assert_clean(ws)


def test_a_lock_file_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=3)
    # no byte may be written (a limit above 0 lets a short record through: a partial write)
    r = run_limited(0, "preprocess", "-w", str(ws.root), "--size", "16", "--workers", "1")
    assert r.returncode == 6, r.stderr[-3000:]
    msg = " ".join(r.stderr.split())
    assert f"system error on {ws.lock_path}: File too large (EFBIG)" in msg, msg


# ---- 3, 4, 5. error rows read again, cut-off rows refused, fid's guarded reader ---------------


def test_preprocess_force_reads_error_rows_again(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=4)
    m = ws.load_manifest()
    # an error row collect made: no split (collect gives one only to usable files)
    m.records.append(Record("demo/refused", "data/img00.png", "covid", status="error",
                            reason="file not found"))  # fmt: skip
    ws.save_manifest(m)
    gone = ws.root / "data/img01.jpg"
    gone.rename(tmp_path / "away.jpg")  # briefly unreachable
    r = runner.invoke(app, ["preprocess", "-w", str(ws.root), "--size", "16", "--workers", "1"])
    assert r.exit_code == 1, r.output
    assert ws.load_manifest().by_id()["demo/img01"].reason == "file not found"
    (tmp_path / "away.jpg").rename(gone)  # back
    r = runner.invoke(app, ["preprocess", "-w", str(ws.root), "--size", "16", "--workers", "1"])
    assert r.exit_code == 0 and "up to date" in r.output  # without --force: not read again
    r = runner.invoke(app, ["preprocess", "-w", str(ws.root), "--size", "16", "--workers", "1",
                            "--force"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = ws.load_manifest().by_id()
    assert (rows["demo/img01"].status, rows["demo/img01"].reason) == ("ok", "")
    assert rows["demo/refused"].status == "error"  # collect's verdict: `collect --force` redoes it
    from cxraug.core.dataset import load_dataset

    assert sorted(load_dataset(ws.dataset_path).ids) == [f"demo/img{i:02d}" for i in range(4)]


def test_a_cut_off_manifest_row_is_refused_with_its_row_number(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=3)
    m = ws.load_manifest()
    m.records.append(Record("synthetic/covid/x", "data/img00.png", "covid", "train",
                            source="synthetic", synthetic=True, run="runs/r1"))  # fmt: skip
    ws.save_manifest(m)
    text = ws.manifest_path.read_text()
    cut = text[: text.rindex(",train,ok") + len(",train,ok")] + "\n"  # the last line cut off
    ws.manifest_path.write_text(cut)
    r = runner.invoke(app, ["preprocess", "-w", str(ws.root), "--size", "16", "--workers", "1"])
    assert r.exit_code == 3, r.output
    msg = " ".join(r.output.split())
    assert f"manifest.csv row 5: 6 of {len(COLUMNS)} cells (a cut-off line?)" in msg, msg
    assert not ws.dataset_path.exists()  # the generated image never reached the real set


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_fid_never_hangs_on_a_manifest_row_that_is_not_a_file(kind: str, tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    odd = tmp_path / "odd.png"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd = Path("/dev/zero")
    ok = tmp_path / "ok.png"
    write_png_gray(ok, np.zeros((16, 16), np.uint8))
    ws.save_manifest(Manifest([Record(f"s/{p.stem}", str(p), "covid", "train",
                                      source="synthetic", synthetic=True) for p in (ok, odd)]))
    code = """
        import sys
        from cxraug.core.errors import InputError
        from cxraug.metrics.inputs import manifest_set
        try:
            manifest_set("manifest:synthetic=true", sys.argv[1])
        except InputError as e:
            print(e)
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(tmp_path)], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=120)  # fmt: skip
    want = "a FIFO (named pipe)" if kind == "fifo" else "a character device"
    assert f"{odd}: {want}, not an image file" in r.stdout, r.stdout + r.stderr


def test_a_manifest_writer_removes_the_temp_files_a_killed_writer_left(tmp_path: Path) -> None:
    """An atomic write killed before its rename leaves `.NAME.XXXXXXXX.tmp` (up to a whole
    manifest, or a PNG); the next manifest writer removes those of the files it owns."""
    ws = filter_ws(tmp_path / "ws")
    left = [ws.root / ".manifest.csv.ab12cd34.tmp", ws.root / ".manifest.csv.bak.x9y8z7w6.tmp",
            ws.root / ".collect-config.json.a_b_c_d_.tmp",
            ws.synthetic_dir / ".covid-filter-sheet.png.q1w2e3r4.tmp",
            ws.synthetic_class_dir("covid") / ".r1-s0-000001.png.zzzzzzzz.tmp",
            ws.rejected_dir("covid") / ".r1-s0-000002.png.yyyyyyyy.tmp"]  # fmt: skip
    mine = [ws.root / ".report.json.ab12cd34.tmp",  # fid --out writes without the lock
            ws.root / "notes.tmp", ws.synthetic_class_dir("covid") / "mine.tmp"]
    for p in left + mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100)
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "covid"])
    assert r.exit_code == 0, r.output
    assert [p for p in left if p.exists()] == [] and all(p.is_file() for p in mine)
