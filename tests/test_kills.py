"""A command killed at any moment, and what the next command finds (issue 19, docs/safety.md).

Every kill here is real: a child process runs the command (with a test seam patched in before
it starts, e.g. a worker that stalls or a write that kills its own process), the test waits for
a condition (never a fixed sleep), sends the signal, and then checks what is left and what the
next command does with it."""

from __future__ import annotations

import contextlib
import os
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
from cxraug.core.images import encode_image
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
    import os, sys, time
    from pathlib import Path
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
