"""Training: the step learns, resume equals an uninterrupted run, checkpoints are atomic and
verified, NaN stops the run (exit 5), mirrored == default, CLI exit codes and messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.errors import InputError, NumericError
from cxraug.core.fsutil import atomic_save_npz, sha256_file
from cxraug.core.tf_setup import tf
from cxraug.core.workspace import Workspace
from cxraug.gan.checkpoint import (
    find_latest,
    list_checkpoints,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from cxraug.gan.config import recipe_config
from cxraug.gan.hardware import auto_precision, precision_warning
from cxraug.gan.mlp_step import step_flops
from cxraug.gan.step import build_state, make_step, resident_dataset, xla_scope
from cxraug.train import TrainingInterrupted, resume, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(latent_dim=8, g_widths=(16, 32), d_widths=(32, 32, 32, 32), batch_size=8,
            xla=False, mixed_precision="none", sample_interval=3, samples_per_class=2,
            noise_iterations=4)  # fmt: skip
runner = CliRunner()


def toy_images(n: int = 24, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two separable classes: normal = bright top half, covid = bright bottom half."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    img = np.full((n, size, size), -0.8, np.float32)
    img[labels == 0, : size // 2] = 0.8
    img[labels == 1, size // 2 :] = 0.8
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    return np.clip(img, -1, 1), labels


def make_workspace(root: Path, n: int = 24, nan: bool = False, size: int = 16) -> Workspace:
    img, labels = toy_images(n, size)
    if nan:
        img[:] = np.nan
    ids = np.array([f"toy/{i}" for i in range(n)])
    save_dataset(root / "processed" / "dataset.npz",
                 Dataset(img, labels, ids, np.array(["train"] * n)))  # fmt: skip
    return Workspace.at(root)


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    return read_checkpoint(find_latest(run_dir)).arrays  # type: ignore[arg-type]


def test_d_steps_reduce_d_loss_with_fixed_g() -> None:
    img, labels = toy_images()
    tiny = {k: v for k, v in TINY.items() if k != "noise_iterations"}
    cfg = recipe_config("paper", image_size=16, lr=2e-3, dropout=0.0, noise_iterations=0, **tiny)
    st = build_state(cfg)
    step = make_step(st, *resident_dataset(img, labels))
    z = tf.random.stateless_normal((24, 8), seed=(1, 2))
    y = tf.constant(labels, tf.int32)
    real = tf.constant(img[..., None])

    def d_loss() -> float:  # all reals + fakes of the (fixed) G, joint BN as in training
        fake = st.gen([z, y], training=True)  # as the step makes them (batch statistics)
        lg = st.disc([tf.concat([real, fake], 0), tf.concat([y, y], 0)], training=True)
        t = tf.concat([tf.ones(24), tf.zeros(24)], 0)
        return float(tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(t, lg)))

    g0 = [v.numpy() for v in st.gen.weights]
    losses = [d_loss()]
    for _ in range(3):  # each step: one D update, then G restored (fixed G)
        step(0.0, False)
        for v, a in zip(st.gen.weights, g0, strict=True):
            v.assign(a)
        losses.append(d_loss())
    # deterministic (fixed seed): a wrong-signed or missing D update would raise the loss
    assert losses[1] < losses[0] - 0.01, losses
    assert max(losses[1:]) < losses[0], losses
    for _ in range(27):
        step(0.0, False)
        for v, a in zip(st.gen.weights, g0, strict=True):
            v.assign(a)
    # A D that can learn reaches far below chance (ln 2 = 0.693) against a fixed G. With
    # per-half BatchNorm statistics this D's batch-mean logit is the same constant for reals
    # and fakes, and it stayed at ~0.69 (the first version's bug): this catches it.
    assert d_loss() < 0.35, losses


def test_real_and_fake_batches_keep_their_mean_difference_through_d() -> None:
    """Joint-statistics BN: an all-real and an all-fake half get different mean logits."""
    cfg = recipe_config("paper", image_size=16, dropout=0.0, **{k: v for k, v in TINY.items()
                                                    if k != "noise_iterations"})  # fmt: skip
    st = build_state(cfg)
    y = tf.zeros((16,), tf.int32)
    real = tf.ones((8, 16, 16, 1)) * 0.5
    fake = tf.zeros((8, 16, 16, 1)) - 0.5
    joint = st.disc([tf.concat([real, fake], 0), y], training=True)
    halves = st.disc([tf.concat([real, fake], 0), y], training=True, groups=2)
    # per-half statistics erase the difference (last hidden layer ends in BN) ...
    assert abs(float(tf.reduce_mean(halves[:8]) - tf.reduce_mean(halves[8:]))) < 1e-4
    # ... joint statistics keep it
    assert abs(float(tf.reduce_mean(joint[:8]) - tf.reduce_mean(joint[8:]))) > 1e-3


def test_resume_after_interrupt_equals_uninterrupted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    full = train(ws, recipe_config("paper", **TINY).replace(iterations=6, checkpoint_interval=100),
                 name="full",
                 quiet=True)  # fmt: skip
    assert full.iteration == 6

    def interrupt(it: int) -> None:
        if it == 4:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal path

    with pytest.raises(TrainingInterrupted, match="resume") as e:
        train(ws, recipe_config("paper", **TINY).replace(iterations=6, checkpoint_interval=100),
              name="cut",
              quiet=True, on_iteration=interrupt)  # fmt: skip
    assert e.value.exit_code == 130
    assert read_checkpoint(find_latest(ws.runs_dir / "cut")).iteration == 4  # type: ignore[arg-type]
    resumed = resume(ws, "cut", quiet=True)
    assert resumed.iteration == 6
    a, b = weights(ws.runs_dir / "full"), weights(ws.runs_dir / "cut")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    log = (ws.runs_dir / "cut" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == [str(i) for i in range(1, 7)]
    for f in ("config.json", "loss.png", "samples/iter_000000.png", "samples/iter_000006.png"):
        assert (ws.runs_dir / "cut" / f).is_file(), f
    assert list((ws.runs_dir / "cut" / "tb").iterdir())


@pytest.mark.parametrize("mp", ["none", "bf16"])  # XLA scope "step" / "update" on a CPU
def test_xla_step_resumed_from_checkpoint_equals_uninterrupted(mp: str, tmp_path: Path) -> None:
    img, labels = toy_images()
    cfg = recipe_config("paper", image_size=16, **{**TINY, "xla": True, "mixed_precision": mp})
    data = resident_dataset(img, labels)
    a = build_state(cfg)
    step_a = make_step(a, *data)
    la = [step_a(0.05, True)["d_loss"] for _ in range(3)]
    b = build_state(cfg)
    lb = [make_step(b, *data)(0.05, True)["d_loss"]]
    b.iteration = 1
    save_checkpoint(b, tmp_path, keep=1)
    c = build_state(cfg)
    restore(c, read_checkpoint(find_latest(tmp_path)))  # type: ignore[arg-type]
    step_c = make_step(c, *data)
    lb += [step_c(0.05, True)["d_loss"] for _ in range(2)]
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    for u, v in zip(a.gen.weights + a.disc.weights, c.gen.weights + c.disc.weights, strict=True):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)



#: `cxraug train` options of a tiny run (seconds on a CPU), for subprocess and CLI tests.
TINY_ARGS = ["--recipe", "paper", "--no-xla", "--mixed-precision", "none", "--batch-size", "8",
             "--g-widths", "16,32", "--d-widths", "32,32,32,32", "--latent-dim", "8",
             "--noise-iterations", "4", "--sample-interval", "100000", "-q"]  # fmt: skip

#: A child `cxraug train` that kills itself (SIGKILL: no handler, no finally) at an exact
#: moment: POINT N = after the Nth step computed its update (before the loop records it);
#: "temp" = while the Nth checkpoint's temp file is half written; "pointer" = after the Nth
#: checkpoint's rename, before the `latest` pointer names it. "limit" BYTES = every write over
#: BYTES fails for real (RLIMIT_FSIZE with SIGXFSZ ignored: EFBIG, like a full disk's ENOSPC).
CHILD = textwrap.dedent("""
    import os, resource, signal, sys
    import numpy as np
    import cxraug.gan.checkpoint as ck
    import cxraug.gan.loop as tr  # the training loop (cxraug.train runs it)
    point, n = sys.argv[1], int(sys.argv[2])
    count = [0]
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "step":
        real_make = tr.make_step
        def make_step(state, *a):
            step = real_make(state, *a)
            def wrapped(*x):
                out = step(*x)
                count[0] += 1
                if count[0] == n:
                    die()
                return out
            return wrapped
        tr.make_step = make_step
    elif point == "temp":
        real_savez = np.savez
        def savez(f, **arrays):
            count[0] += 1
            if count[0] == n:
                f.write(b"PK\\x03\\x04" + bytes(4096))
                f.flush()
                os.fsync(f.fileno())
                die()
            return real_savez(f, **arrays)
        np.savez = savez
    elif point == "pointer":
        real_ptr = ck.write_pointer
        def write_pointer(ptr, path, *a, **k):
            if ptr.name == "latest":
                count[0] += 1
                if count[0] == n:
                    die()
            return real_ptr(ptr, path, *a, **k)
        ck.write_pointer = write_pointer
    elif point == "limit":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    from cxraug.cli import app
    app(sys.argv[3:], prog_name="cxraug")
""")


def child_train(point: str, n: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", CHILD, point, str(n), "train", *args], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """An uninterrupted 6-iteration tiny run, checkpointing every iteration."""
    ws = make_workspace(tmp_path_factory.mktemp("ref"))
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--name", "ref", "--iterations", "6",
                            "--checkpoint-interval", "1", *TINY_ARGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    return weights(ws.runs_dir / "ref")


@pytest.mark.parametrize(("point", "latest_after"), [("step", 3), ("temp", 3), ("pointer", 3)])
def test_sigkill_at_each_moment_resumes_to_the_uninterrupted_weights(
    point: str, latest_after: int, reference_weights: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """SIGKILL during the 4th step, while the 4th checkpoint's temp file is half written, and
    between its rename and the `latest` pointer: the latest checkpoint is the 3rd, the
    leftover temp file is removed at resume, and the resumed run ends with the same weights as
    an uninterrupted one."""
    ws = make_workspace(tmp_path)
    run = ws.runs_dir / "k"
    r = child_train(point, 4, "-w", str(ws.root), "--name", "k", "--iterations", "6",
                    "--checkpoint-interval", "1", *TINY_ARGS)  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert read_checkpoint(find_latest(run)).iteration == latest_after  # type: ignore[arg-type]
    temps = [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    if point == "temp":  # the half-written file (what a real kill leaves: up to ~0.9 GB)
        assert [p.name[:18] for p in temps] == [".ckpt-0000004.npz."]
    if point == "pointer":  # complete, but not yet named by `latest`
        assert (run / "checkpoints" / "ckpt-0000004.npz").is_file()
    (run / "checkpoints" / ".my-notes.txt").write_text("a user's file is never removed")
    r2 = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "k", *TINY_ARGS])
    assert r2.exit_code == 0, r2.output
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert (run / "checkpoints" / ".my-notes.txt").is_file()
    b = weights(run)
    assert read_checkpoint(find_latest(run)).iteration == 6  # type: ignore[arg-type]
    assert reference_weights.keys() == b.keys()
    for key in reference_weights:
        np.testing.assert_allclose(reference_weights[key], b[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)  # fmt: skip
    log = (run / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == [str(i) for i in range(1, 7)]


def test_sigterm_during_train_exits_130_with_a_checkpoint(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-m", "cxraug", "train", "-w", str(ws.root), "--name",
                          "t", "--iterations", "100000", "--checkpoint-interval", "100000",
                          *TINY_ARGS], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    log = ws.runs_dir / "t" / "log.csv"
    try:
        deadline = time.monotonic() + 240
        while not log.is_file() or len(log.read_text().splitlines()) < 3:  # 2 iterations done
            assert p.poll() is None, p.stderr.read()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "training never logged 2 iterations"
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        _, errout = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, errout[-2000:]
    ck = read_checkpoint(find_latest(ws.runs_dir / "t"))  # type: ignore[arg-type]
    assert ck.iteration >= 2
    assert f"training interrupted at iteration {ck.iteration}; checkpoint saved" in " ".join(
        errout.split())  # fmt: skip
    assert "Traceback" not in errout


def test_disk_full_during_checkpoint_exits_6_and_keeps_earlier_files(tmp_path: Path) -> None:
    """Writes over 100 KB fail for real (EFBIG, the OSError a full disk gives as ENOSPC): the
    tiny run's checkpoints (~300 KB) cannot be written, its log and config (< 30 KB) can."""
    ws = make_workspace(tmp_path)
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--name", "d", "--iterations", "2",
                            *TINY_ARGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    run = ws.runs_dir / "d"
    ck2 = run / "checkpoints" / "ckpt-0000002.npz"
    before = {p: p.read_bytes() for p in (ws.dataset_path, ck2, run / "checkpoints" / "latest")}
    assert ck2.stat().st_size > 100_000
    res = child_train("limit", 100_000, "-w", str(ws.root), "--resume", "d", "--iterations", "4",
                      "--checkpoint-interval", "1", "-q")  # fmt: skip
    assert res.returncode == 6, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: system error on {run / 'checkpoints' / 'ckpt-0000003.npz'}: File too large "
        "(EFBIG)"), res.stderr  # fmt: skip
    assert {p: p.read_bytes() for p in before} == before  # dataset, checkpoint, pointer intact
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "d", "--iterations", "4",
                            "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output  # room again: the run goes on from iteration 2


def test_resume_refuses_a_changed_dataset_and_warns_for_old_runs(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--name", "c", "--iterations", "2",
                            *TINY_ARGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    ck = read_checkpoint(find_latest(ws.runs_dir / "c"))  # type: ignore[arg-type]
    assert ck.meta["dataset_sha256"] == sha256_file(ws.dataset_path)
    img, labels = toy_images(seed=1)  # same shape and size, other pixels
    save_dataset(ws.dataset_path, Dataset(img, labels, np.array([f"toy/{i}" for i in range(24)]),
                                          np.array(["train"] * 24)))  # fmt: skip
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "c", "--iterations", "3"])
    assert r.exit_code == 3
    msg = " ".join(r.output.split())
    assert f"{ws.dataset_path} changed since run c started" in msg and "--force" in msg
    assert read_checkpoint(find_latest(ws.runs_dir / "c")).iteration == 2  # type: ignore[arg-type]
    # a checkpoint from before the hash was recorded: resumed, with a warning
    latest = find_latest(ws.runs_dir / "c")
    assert latest is not None
    with np.load(latest) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["dataset_sha256"]
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_save_npz(latest, **arrays)
    (ws.runs_dir / "c" / "checkpoints" / "latest").unlink()  # its hash no longer matches
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "c", "--iterations", "3",
                            "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "does not record which dataset" in " ".join(r.output.split())


def test_corrupt_dataset_exits_3_with_the_fix(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.dataset_path.write_bytes(ws.dataset_path.read_bytes()[:1000])  # truncated
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--iterations", "1", *TINY_ARGS])
    assert r.exit_code == 3, r.output
    assert "cxraug preprocess --force" in " ".join(r.output.split())
    assert "Traceback" not in r.output


def test_checkpoint_round_trip_and_truncated_file_never_latest(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    res = train(ws, recipe_config("paper", **TINY).replace(iterations=4, checkpoint_interval=2),
                name="r", quiet=True)
    run = res.run_dir
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-0000002.npz", "ckpt-0000004.npz"]
    ck = read_checkpoint(find_latest(run))  # type: ignore[arg-type]
    st = build_state(ck.config)
    restore(st, ck)
    assert st.iteration == 4
    np.testing.assert_array_equal(st.rng.state.numpy(), ck.arrays["rng_state"])
    for i, v in enumerate(st.disc.weights):
        np.testing.assert_array_equal(v.numpy(), ck.arrays[f"d.{i:04d}"])
    # a crash mid-write: the newest file torn, plus a stray temp file
    newest = list_checkpoints(run)[-1]
    newest.write_bytes(newest.read_bytes()[:300])
    (run / "checkpoints" / ".ckpt-0000006.npz.abc.tmp").write_bytes(b"junk")
    assert find_latest(run) == list_checkpoints(run)[0]
    (run / "checkpoints" / "latest").unlink()
    assert find_latest(run) == list_checkpoints(run)[0]
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_checkpoint(newest)


def test_nan_loss_exits_5_and_keeps_last_good_checkpoint(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Two good iterations (checkpointed), then a NaN weight makes the 3rd step's loss NaN:
    exit 5, the message names the checkpoint, which exists, is iteration 2 and is finite."""
    import cxraug.gan.loop as tr  # the training loop (cxraug.train runs it)

    real_make = tr.make_step

    def make_step(state, *a):  # type: ignore[no-untyped-def]
        step = real_make(state, *a)

        def poisoned(*x):  # type: ignore[no-untyped-def]
            if state.iteration == 2:  # a real NaN through the real step, not a faked loss
                w = state.disc.weights[0]
                w.assign(np.full(tuple(w.shape), np.nan, np.float32))
            return step(*x)

        return poisoned

    monkeypatch.setattr(tr, "make_step", make_step)
    ws = make_workspace(tmp_path)
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--name", "boom", "--iterations", "30",
                            "--checkpoint-interval", "1", *TINY_ARGS])  # fmt: skip
    assert r.exit_code == 5, r.output
    msg = " ".join(r.output.split())
    assert "non-finite loss at iteration 3" in msg and "lower --lr" in msg.lower()
    latest = find_latest(ws.runs_dir / "boom")
    assert latest is not None and f"Last good checkpoint: {latest}" in msg
    ck = read_checkpoint(latest)
    assert ck.iteration == 2
    assert all(np.isfinite(a).all() for k, a in ck.arrays.items() if a.dtype.kind == "f")


def test_nan_image_exits_5(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, nan=True)
    with pytest.raises(NumericError, match="non-finite loss at iteration 1") as e:
        train(ws, recipe_config("paper", **TINY).replace(iterations=3), name="nan", quiet=True)
    assert e.value.exit_code == 5
    assert find_latest(ws.runs_dir / "nan") is None


def test_cli_help_says_epochs_are_iterations() -> None:
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "--epochs" in r.output and "ARE iterations" in r.output
    assert "[default: 0.0002]" in r.output and "[default: 128,256,512,1024]" in r.output


def test_cli_errors(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "-w", str(tmp_path)])
    assert r.exit_code == 3 and "cxraug preprocess" in r.output
    ws = make_workspace(tmp_path)
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--strategy", "tpu"])
    assert r.exit_code == 3 and "strategy='tpu'" in r.output
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--g-widths", "a,b"])
    assert r.exit_code == 2
    (ws.runs_dir / "old").mkdir(parents=True)
    (ws.runs_dir / "old" / "config.json").write_text("{}")
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--name", "old"])
    assert r.exit_code == 3 and "--resume old" in r.output and "--force" in r.output
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "nope"])
    assert r.exit_code == 3 and "no training run 'nope'" in r.output
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "old"])
    assert r.exit_code == 3 and "no usable checkpoint" in r.output


def test_cli_checks_the_recipe_it_will_train(tmp_path: Path) -> None:
    """The rules between options judge --recipe's values plus the options given: the cascade
    carries --refine, so --enlarge 2 with it is valid (refused until 2026-12-06, when the
    options were checked against the default recipe first); the default recipe has no
    refiner, so there --enlarge 2 is still refused, naming the fix."""
    r = runner.invoke(app, ["train", "-w", str(tmp_path), "--enlarge", "2"])
    assert r.exit_code == 3 and "give --refine N" in r.output, r.output
    # valid: the command gets as far as the workspace, which holds no dataset
    r = runner.invoke(app, ["train", "-w", str(tmp_path), "--recipe", "cascade", "--enlarge", "2",
                            "--conv-g-channels", "256,128,64,32,16"])  # fmt: skip
    assert r.exit_code == 3 and "cxraug preprocess" in r.output and "--refine" not in r.output
    r = runner.invoke(app, ["train", "-w", str(tmp_path), "--recipe", "cascade", "--enlarge", "2",
                            "--refine", "0"])  # fmt: skip
    assert r.exit_code == 3 and "give --refine N" in r.output
    r = runner.invoke(app, ["train", "-w", str(tmp_path), "--recipe", "nope"])
    assert r.exit_code == 3 and "unknown recipe 'nope'" in r.output


def test_cli_train_json_and_resume_refuses_model_change(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    base = ["train", "-w", str(ws.root), "--recipe", "paper", "--no-xla", "--batch-size", "8",
            "--g-widths", "16",
            "--d-widths", "32,32,32,32", "--latent-dim", "8", "-q"]  # fmt: skip
    r = runner.invoke(app, [*base, "--name", "j", "--iterations", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["iteration"] == 2 and out["checkpoint"].endswith("ckpt-0000002.npz")
    cfg = json.loads((ws.runs_dir / "j" / "config.json").read_text())
    assert cfg["image_size"] == 16 and cfg["g_widths"] == [16]
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "j", "--lr", "0.1"])
    assert r.exit_code == 3 and "cannot change lr" in r.output
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--resume", "j", "--iterations", "3",
                            "-q", "--json"])  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["iteration"] == 3


MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    from cxraug.core.tf_setup import tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cxraug.gan.config import recipe_config
    from cxraug.gan.step import build_state, make_step, resident_dataset
    sys.path.insert(0, sys.argv[1])
    from test_train import TINY, toy_images
    img, labels = toy_images()
    out = {}
    for name in ("default", "mirrored"):
        cfg = recipe_config("paper", image_size=16, strategy=name, dropout=0.0, **TINY)
        st = build_state(cfg)
        step = make_step(st, *resident_dataset(img, labels))
        losses = [step(0.05, True)["d_loss"] for _ in range(3)]
        out[name] = dict(replicas=st.strategy.num_replicas_in_sync, losses=losses,
                         w=[v.numpy().tolist() for v in st.gen.weights + st.disc.weights])
    d, m = out["default"], out["mirrored"]
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(d["w"], m["w"]))
    print(json.dumps(dict(replicas=m["replicas"], diff=diff, ld=d["losses"],
                          lm=m["losses"])))
""")


def test_mirrored_on_two_logical_cpus_equals_default() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", MIRRORED, str(REPO / "tests")], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["replicas"] == 2
    np.testing.assert_allclose(res["lm"], res["ld"], rtol=1e-4)
    assert res["diff"] < 1e-4


@pytest.mark.parametrize("mp", ["bf16", "fp16"])
def test_mixed_precision_step_close_to_fp32_and_checkpoints(mp: str, tmp_path: Path) -> None:
    img, labels = toy_images()
    data = resident_dataset(img, labels)
    ref = make_step(build_state(recipe_config("paper", image_size=16, **TINY)), *data)(0.05, True)
    st = build_state(recipe_config("paper", image_size=16, **{**TINY, "mixed_precision": mp}))
    got = make_step(st, *data)(0.05, True)
    # d_loss is computed before any update: 16-bit rounding only; g_loss after one Adam step
    # of D, whose first step (~lr per weight, sign of the gradient) amplifies rounding
    assert abs(got["d_loss"] - ref["d_loss"]) < 0.01 and abs(got["g_loss"] - ref["g_loss"]) < 0.1
    assert st.gen.hidden[0].compute_dtype == {"bf16": "bfloat16", "fp16": "float16"}[mp]
    st.iteration = 1
    save_checkpoint(st, tmp_path, keep=1)
    again = build_state(st.cfg)
    restore(again, read_checkpoint(find_latest(tmp_path)))  # type: ignore[arg-type]
    for u, v in zip(st.g_opt.variables, again.g_opt.variables, strict=True):
        np.testing.assert_array_equal(u.numpy(), v.numpy())


def test_xla_scope_follows_precision_device_and_strategy() -> None:
    one = tf.distribute.get_strategy()
    fp32 = recipe_config("paper", mixed_precision="none")
    assert xla_scope(fp32, one) == "step"  # the whole step in XLA
    assert xla_scope(fp32.replace(xla=False), one) == "none"
    assert xla_scope(fp32.replace(strategy="mirrored"), one) == "none"
    on_cpu = not tf.config.list_physical_devices("GPU")
    # XLA's CPU matmul has no fast bf16 kernel: keep matmuls in oneDNN, fuse only Adam
    bf16 = recipe_config("paper", mixed_precision="bf16")
    assert xla_scope(bf16, one) == ("update" if on_cpu else "step")


@pytest.mark.parametrize("mp", ["none", "bf16"])
def test_xla_fused_updates_equal_the_plain_step(mp: str) -> None:
    """scope "update" (Adam compiled by XLA inside the plain step) computes the same iterations
    as the plain step: same random draws, same losses, same weights up to float rounding."""
    img, labels = toy_images()
    data = resident_dataset(img, labels)
    cfg = recipe_config("paper", image_size=16, **{**TINY, "mixed_precision": mp})
    runs = {}
    for scope in ("none", "update"):
        st = build_state(cfg)
        step = make_step(st, *data, scope=scope)
        losses = [step(0.05, True)["g_loss"] for _ in range(3)]
        runs[scope] = (losses, [v.numpy() for v in st.gen.weights + st.disc.weights],
                       int(st.g_opt.iterations.numpy()))  # fmt: skip
    (la, wa, ia), (lb, wb, ib) = runs["none"], runs["update"]
    assert ia == ib == 3  # the compiled update really ran, once per step
    tol = 1e-5 if mp == "none" else 2e-2  # bf16: oneDNN may block the sums differently
    np.testing.assert_allclose(la, lb, rtol=tol, atol=tol)
    for u, v in zip(wa, wb, strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)
    assert not np.array_equal(wa[0], build_state(cfg).gen.weights[0].numpy())  # it trained


def test_precision_warning_names_the_missing_cpu_feature() -> None:
    cpu: list[tuple[int, int]] = []  # no GPU
    assert precision_warning("none", set(), cpu) is None
    assert precision_warning("bf16", {"avx512_bf16"}, cpu) is None
    assert precision_warning("bf16", {"amx_bf16"}, cpu) is None
    slow = precision_warning("bf16", {"avx2", "fma"}, cpu)
    assert slow is not None and "AVX512-BF16" in slow and "slower than fp32" in slow
    fp16 = precision_warning("fp16", {"avx512_bf16"}, cpu)
    assert fp16 is not None and "fp16" in fp16
    assert precision_warning("fp16", set(), [(9, 0)]) is None  # GPUs have fp16 tensor cores


def test_auto_precision_picks_bf16_only_where_it_is_native() -> None:
    assert auto_precision({"avx2", "avx512f", "avx512_bf16"}, []) == "bf16"  # Zen 4 / Xeon
    assert auto_precision({"avx2", "amx_bf16"}, []) == "bf16"
    assert auto_precision({"avx2", "fma", "avx512f"}, []) == "none"  # emulated bf16: slower
    assert auto_precision(set(), [(9, 0)]) == "bf16"  # H100
    assert auto_precision({"avx512_bf16"}, [(7, 5)]) == "none"  # T4: no bf16 tensor cores
    assert auto_precision(set(), [(8, 0), (7, 0)]) == "none"  # the slowest GPU decides


def test_train_records_the_resolved_precision(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    res = train(ws, recipe_config("paper", **TINY).replace(mixed_precision="auto", iterations=1),
                name="a", quiet=True)
    saved = json.loads((res.run_dir / "config.json").read_text())["mixed_precision"]
    assert saved == auto_precision() and saved != "auto"
    ck = read_checkpoint(find_latest(res.run_dir))  # type: ignore[arg-type]
    assert ck.config.mixed_precision == saved  # resume and generate rebuild the same policy
    assert build_state(recipe_config("paper", image_size=16, **{**TINY, "mixed_precision": "auto"})
                       ).cfg.mixed_precision == saved  # fmt: skip


def test_compiled_step_executes_exactly_the_counted_matmul_work() -> None:
    """The optimized XLA program's dots add up to `step_flops`: one G forward pass (reused in
    the G step), one D pass per step over [real; fake]. A repeated G forward or a second D
    pass would show up here (the bench's FLOP/s and % roofline rest on this count)."""
    img, labels = toy_images()
    cfg = recipe_config("paper", image_size=16, **{**TINY, "xla": True, "dropout": 0.0})
    step = make_step(build_state(cfg), *resident_dataset(img, labels), scope="step")
    step(0.0, False)
    got, want = step.hlo_matmul_flops(noisy=False), step_flops(cfg)
    # XLA turns a few dots with a size-1 dimension (D's 1-unit output layer) into reductions:
    # 0.1 % here; one extra G forward pass would add 6 %, a second D pass far more
    assert abs(got - want) <= 0.005 * want, (got, want)
