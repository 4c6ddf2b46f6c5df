"""`--strategy multiworker`: two worker processes on localhost train the same iterations as
one process (within float rounding), only the chief writes the run folder, the workers agree
on a refusal and on a stop signal, and a resumed cluster run continues from the chief's
checkpoint. The conv
recipe and DiffAugment are refused under multiworker (they run on one device).

What is EQUAL and what only CLOSE: the MLP step (cxraug.gan.step) draws every random number
(batch indices, z, instance noise, dropout masks) for the GLOBAL batch from the run's seeded
generator, in cross-replica context, on every worker alike; each worker takes its slice of
the batch. So both workers see exactly the single-process batch, and the RNG state after N
steps is bit-equal. What differs is only the order of float32 sums: gradients and the
BatchNorm sums are all-reduced over two half batches instead of summed over one batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.errors import InputError
from cxraug.core.tf_setup import tf
from cxraug.gan.checkpoint import read_checkpoint
from cxraug.gan.cluster import describe, is_chief, num_workers
from cxraug.gan.config import recipe_config
from cxraug.train import train

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_workspace  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT_S = 400  # per phase; 20-60 s measured on the shared 2-core machine (load 2-10)
# The tiny paper-recipe model of tests/test_train.py (TINY), dropout on (its masks are drawn
# for the global batch too), instance noise on for the first 3 iterations.
TINY_ARGS = ["--recipe", "paper", "--latent-dim", "8", "--g-widths", "16,32",
             "--d-widths", "32,32,32,32", "--batch-size", "8", "--no-xla",
             "--mixed-precision", "none", "--sample-interval", "3", "--samples-per-class", "2",
             "--noise-iterations", "4", "--checkpoint-interval", "2"]  # fmt: skip
TINY_CFG = dict(latent_dim=8, g_widths=(16, 32), d_widths=(32, 32, 32, 32), batch_size=8,
                xla=False, mixed_precision="none", sample_interval=3, samples_per_class=2,
                noise_iterations=4, checkpoint_interval=2)  # fmt: skip
# Tolerance. fp32 sums in another order differ by ~1e-7 relative, and a GAN amplifies such
# differences a little with every step. Adam normalises each gradient, so a weight can move
# differently by more than that only if a gradient component is ~0 and its rounding flips
# the sign of the update; each step moves a weight by at most ~lr = 2e-4. So: weights within
# 1e-4 (half of one Adam step: another batch would move many weights by ~lr), and Adam's
# slots, which hold gradients of magnitude up to ~3, also within 1e-4 RELATIVE. Measured
# after 6 iterations: weights <= 5e-6, slots <= 2.6e-5 on values ~3 (9e-6 relative); after
# 4 (what the test compares, whatever iteration the stop came at): ~5e-7.
WEIGHT_ATOL = 1e-4
SLOT_RTOL = 1e-4
LOSS_RTOL = 1e-4  # log.csv keeps 6 significant digits (5e-6 relative) plus the rounding above


def _free_ports(n: int) -> list[int]:
    """Ports the OS says are free (bound to port 0, then released just before use)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_workers(workspaces: list[Path], args: list[str],
                 then: Callable[[list[subprocess.Popen]], None] | None = None,
                 ) -> list[subprocess.CompletedProcess]:  # fmt: skip
    """`cxraug train ARGS` as worker i of a 2-worker TF_CONFIG cluster on 127.0.0.1, worker i
    with workspace i (worker 0, the chief, first); `then(processes)` runs once both started.
    Kills both on a timeout."""
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(len(workspaces))]
    procs = []
    for i, ws in enumerate(workspaces):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CONFIG": json.dumps(tf_config),
               "CUDA_VISIBLE_DEVICES": "", "NO_PROXY": "127.0.0.1,localhost",
               "no_proxy": "127.0.0.1,localhost"}  # gRPC would honour an http_proxy  # fmt: skip
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy"):
            env.pop(k, None)
        cmd = [sys.executable, "-m", "cxraug", "train", "-w", str(ws), *args, "-q", "--json"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    results = []
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    try:
        if then is not None:
            then(procs)
        for i, p in enumerate(procs):
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                tails = "\n".join(f"--- worker {j} stderr:\n{(q.communicate()[1] or '')[-2000:]}"
                                  for j, q in enumerate(procs))  # fmt: skip
                pytest.fail(f"worker {i} still running after {WORKER_TIMEOUT_S} s (a worker "
                            f"waiting for a peer that left?)\n{tails}")
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def _ok(results: list[subprocess.CompletedProcess]) -> list[dict]:
    for i, r in enumerate(results):
        assert r.returncode == 0, f"worker {i} exit {r.returncode}:\n{r.stderr[-3000:]}"
    return [json.loads(r.stdout) for r in results]


def _snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` ({} if it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _losses(run: Path) -> np.ndarray:
    rows = (run / "log.csv").read_text().splitlines()[1:]
    return np.array([[float(x) for x in r.split(",")[1:5]] for r in rows])  # d, g, accs


def _assert_same_run(got: Path, ref: Path, iteration: int) -> None:
    a = read_checkpoint(got / "checkpoints" / f"ckpt-{iteration:07d}.npz").arrays
    b = read_checkpoint(ref / "checkpoints" / f"ckpt-{iteration:07d}.npz").arrays
    assert sorted(a) == sorted(b)
    # the same random numbers were drawn, in the same number: bit-equal generator state
    np.testing.assert_array_equal(a["rng_state"], b["rng_state"])
    for k in a:
        if k != "rng_state":
            np.testing.assert_allclose(a[k], b[k], atol=WEIGHT_ATOL, err_msg=k,
                                       rtol=SLOT_RTOL if "opt" in k else 0.0)  # fmt: skip
    np.testing.assert_allclose(_losses(got)[:iteration], _losses(ref), rtol=LOSS_RTOL,
                               atol=1e-6)  # fmt: skip


@pytest.mark.slow
def test_two_workers_equal_one_process_and_only_the_chief_writes(tmp_path: Path) -> None:
    chief_ws, other_ws = tmp_path / "chief", tmp_path / "other"
    make_workspace(chief_ws)
    # The second worker gets its own copy of the workspace (as if it did not share the
    # filesystem): anything it wrote would show up there.
    shutil.copytree(chief_ws, other_ws)
    (chief_ws / "runs" / "mw").mkdir(parents=True)
    (chief_ws / "runs" / "mw" / "stale.txt").write_text("an old run")
    two = [chief_ws, other_ws]
    base = [*TINY_ARGS, "--strategy", "multiworker", "--name", "mw"]

    # 1. A refusal on one worker (the chief's run folder exists, no --force) stops both,
    #    each with a message, instead of leaving the other waiting in a collective.
    r = _run_workers(two, [*base, "--iterations", "2"])
    assert [x.returncode for x in r] == [3, 3], [x.stderr[-2000:] for x in r]
    assert "already exists" in r[0].stderr and "another worker" in r[1].stderr
    assert (chief_ws / "runs" / "mw" / "stale.txt").exists()

    # 2. --force: the chief replaces its run folder; the other worker writes nothing at all.
    out = _ok(_run_workers(two, [*base, "--iterations", "2", "--force"]))
    assert [o["iteration"] for o in out] == [2, 2]
    assert not (chief_ws / "runs" / "mw" / "stale.txt").exists()
    assert not (other_ws / "runs").exists(), _snapshot(other_ws / "runs")
    run = chief_ws / "runs" / "mw"
    assert {"config.json", "log.csv", "checkpoints", "samples"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "config.json").read_text())["strategy"] == "multiworker"

    # 3. Resume (each worker reads the checkpoint in its view of the run folder: a byte copy
    #    for the second worker) towards 10^6 iterations, and SIGINT the second worker once the
    #    chief has logged iteration 4: BOTH must stop at the same iteration K (the stop flag
    #    is agreed), the chief having saved ckpt-K; the second worker's copy stays untouched.
    shutil.copytree(run, other_ws / "runs" / "mw")
    before = _snapshot(other_ws / "runs")

    def interrupt_worker_1(procs: list[subprocess.Popen]) -> None:
        end = time.monotonic() + WORKER_TIMEOUT_S
        while time.monotonic() < end and all(p.poll() is None for p in procs):
            rows = len((run / "log.csv").read_text().splitlines()) - 1  # the chief's log
            if rows >= 4:
                procs[1].send_signal(signal.SIGINT)
                return
            time.sleep(0.2)

    # every checkpoint kept, so that ckpt-4 can be compared whatever K is: rounding
    # differences grow with the iterations, and K depends on timing
    r = _run_workers(two, ["--resume", "mw", "--iterations", "1000000", "--keep-checkpoints",
                           "1000000"], then=interrupt_worker_1)  # fmt: skip
    assert [x.returncode for x in r] == [130, 130], [x.stderr[-2000:] for x in r]
    stops = [int(re.search(r"interrupted at iteration (\d+)", x.stderr)[1]) for x in r]  # type: ignore[index]
    k = stops[0]
    assert stops == [k, k] and k >= 4
    assert _snapshot(other_ws / "runs") == before

    assert len(_losses(run)) == k and (run / "checkpoints" / f"ckpt-{k:07d}.npz").is_file()

    # 4. The first 4 iterations (2 + 2 resumed) equal 4 uninterrupted ones in one process
    #    (resume == uninterrupted in one process is tests/test_train.py's business).
    ref_ws = make_workspace(tmp_path / "ref")
    train(ref_ws, recipe_config("paper", **TINY_CFG, iterations=4), name="ref", quiet=True)
    _assert_same_run(run, ref_ws.runs_dir / "ref", 4)


def test_multiworker_refuses_the_conv_recipe_and_augment(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    with pytest.raises(InputError, match="MLP networks only"):
        train(ws, recipe_config("conv", strategy="multiworker"), name="x")
    with pytest.raises(InputError, match="--augment"):
        train(ws, recipe_config("paper", augment="color", strategy="multiworker"), name="x")
    with pytest.raises(InputError, match="needs --name"):  # a timestamp differs per host
        train(ws, recipe_config("paper", strategy="multiworker"))
    recipe_config("paper", arch="conv", augment="color").check_strategy()  # one device: fine
    # the default recipe is conv: refused before any cluster is formed or file written
    r = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--strategy", "multiworker",
                                 "--name", "x"])  # fmt: skip
    assert r.exit_code == 3 and "--recipe paper" in r.output
    assert not ws.runs_dir.exists()


class _Resolver:
    def __init__(self, spec: dict[str, list[str]], task_type: str, task_id: int) -> None:
        self.spec, self.task_type, self.task_id = spec, task_type, task_id

    def cluster_spec(self) -> tf.train.ClusterSpec:
        return tf.train.ClusterSpec(self.spec)


class _Strategy:
    def __init__(self, resolver: _Resolver | None) -> None:
        self.cluster_resolver = resolver


@pytest.mark.parametrize(("spec", "task", "chief"), [
    ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),  # no chief task: worker 0 writes
    ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("chief", 0), True),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("worker", 0), False),  # the chief writes
])  # fmt: skip
def test_the_chief_is_the_chief_task_or_worker_0(spec: dict, task: tuple, chief: bool) -> None:
    st = _Strategy(_Resolver(spec, *task))
    assert is_chief(st) is chief
    assert num_workers(st) == sum(len(v) for v in spec.values())
    assert ("writes nothing" in describe(st)) is not chief
    one = _Strategy(None)  # the default strategy: one process, it writes, no collectives
    assert is_chief(one) and num_workers(one) == 1 and describe(one) == ""
    # the run lock is taken before a cluster forms, from TF_CONFIG alone: the same answer
    import json

    from cxraug.gan.cluster import chief_by_environment

    conf = {"cluster": spec, "task": {"type": task[0], "index": task[1]}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TF_CONFIG", json.dumps(conf))
        assert chief_by_environment() is chief
        mp.delenv("TF_CONFIG")
        assert chief_by_environment()
