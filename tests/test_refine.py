"""The detail refiner (`train --refine N`, cxraug.gan.refine): its degraded crops are exact,
it starts as the identity and learns to undo a blur, resumed equals uninterrupted, and
`generate` applies it per image (image i independent of -n) or refuses an unfinished one."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_generate import copy_ws, gen, real_rows  # tests/ is on sys.path (rootdir conftest)
from test_train import TINY, make_workspace

from cxraug.core.errors import InputError
from cxraug.core.images import read_gray_u8
from cxraug.core.manifest import Manifest, read_manifest, write_manifest
from cxraug.core.tf_setup import tf
from cxraug.core.workspace import Workspace
from cxraug.gan import refine
from cxraug.gan.checkpoint import find_latest as find_gan_latest
from cxraug.gan.config import recipe_config
from cxraug.train import TrainingInterrupted, resume, train


def test_soft_crops_are_the_crops_of_the_blurred_image() -> None:
    """Blurring a crop with a margin equals cropping the blurred image (OpenCV on the whole
    image, reflected at its border), at the border and inside, for every sigma used."""
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, (2, 48, 40)).astype(np.float32)
    c = 16
    for s in refine.REFINE_SIGMAS:
        whole = np.stack([cv2.GaussianBlur(im, (0, 0), s) for im in img])
        for y0, x0 in [(0, 0), (32, 24), (5, 11), (0, 17), (20, 0)]:
            idx = np.array([0, 1])
            soft, real = refine.soft_crops(img, idx, np.array([s, s]), np.array([y0, y0]),
                                           np.array([x0, x0]), c)  # fmt: skip
            np.testing.assert_array_equal(real, img[:, y0 : y0 + c, x0 : x0 + c])
            np.testing.assert_allclose(soft, whole[:, y0 : y0 + c, x0 : x0 + c], atol=1e-6,
                                       err_msg=f"sigma {s} at {(y0, x0)}")  # fmt: skip


def bars(n: int, size: int, seed: int) -> np.ndarray:
    """Sharp toy images: random vertical and horizontal bars with hard edges."""
    rng = np.random.default_rng(seed)
    img = np.full((n, size, size), -0.6, np.float32)
    for k in range(n):
        for _ in range(6):
            a, w, v = rng.integers(0, size - 3), rng.integers(1, 4), rng.uniform(-0.5, 0.9)
            if rng.random() < 0.5:
                img[k, :, a : a + w] = v
            else:
                img[k, a : a + w, :] = v
    return img


def test_refiner_starts_as_the_identity_and_learns_to_undo_a_blur(tmp_path: Path) -> None:
    train_imgs, test_imgs = bars(64, 32, 0), bars(16, 32, 1)
    state = refine.build_state(0, 32)
    noise = np.random.default_rng(2).standard_normal(test_imgs.shape).astype(np.float32)
    # the last conv starts at zero: R(x) = x exactly
    np.testing.assert_array_equal(refine.apply(state.refiner, test_imgs, noise), test_imgs)
    res = refine.train_refiner(tmp_path, train_imgs, 300, 0, "toy", quiet=True)
    assert res.iteration == 300 and res.path is not None and res.path.is_file()
    r = refine.load_refiner(refine.read(res.path))
    soft = np.stack([cv2.GaussianBlur(im, (0, 0), 1.0) for im in test_imgs])
    out = refine.apply(r, soft, noise)

    def lap_var(x: np.ndarray) -> float:
        return float(np.mean([cv2.Laplacian(im, cv2.CV_32F).var() for im in x]))

    # identity would leave both unchanged: the refined images are nearer the sharp ones
    # than their blurred inputs, in pixels and in edge energy
    assert np.abs(out - test_imgs).mean() < 0.7 * np.abs(soft - test_imgs).mean()
    assert abs(np.log(lap_var(out) / lap_var(test_imgs))) < \
        0.5 * abs(np.log(lap_var(soft) / lap_var(test_imgs)))  # fmt: skip


def test_a_bf16_refiner_computes_in_bf16_and_keeps_float32_where_it_matters(
        tmp_path: Path) -> None:  # fmt: skip
    """precision "bf16" (a bf16 run's refiner): the convs compute in bfloat16, but the
    weights, the residual add, the output and the critic's logits are float32, so R starts as
    the identity exactly (x never passes through bf16, which would round it) and its file
    loads into the float32 R that `generate` applies, which then gives what the bf16 R gives
    up to bf16 rounding of the residual."""
    state = refine.build_state(0, 32, enlarge=2, precision="bf16")
    convs = [la for la in state.refiner.layers if la.__class__.__name__ == "Conv2D"]
    assert {c.compute_dtype for c in convs[:-1]} == {"bfloat16"}
    assert convs[-1].compute_dtype == "float32" and state.refiner.output.dtype == "float32"
    assert state.critic.output.dtype == "float32"
    assert {v.dtype for v in [*state.refiner.weights, *state.critic.weights]} == {"float32"}
    assert {v.dtype for v in state.ema.weights} == {"float32"}
    # fp16 (GPUs) would need loss scaling, which the refiner's step has not: it stays fp32
    fp16 = refine.build_state(0, 32, enlarge=2, precision="fp16")
    assert fp16.precision == "none"
    assert {la.compute_dtype for la in fp16.refiner.layers[2:]} == {"float32"}
    x = bars(4, 32, 3)
    x += np.random.default_rng(4).uniform(-0.01, 0.01, x.shape).astype(np.float32)
    assert not np.array_equal(tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy(), x)
    noise = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(refine.apply(state.refiner, x, noise), x)
    res = refine.train_refiner(tmp_path, bars(16, 32, 0), 20, 0, "toy", quiet=True,
                               enlarge=2, precision="bf16")  # fmt: skip
    f = refine.read(res.path)  # type: ignore[arg-type]
    assert f.meta["precision"] == "bf16" and np.isfinite(res.losses["l1"])
    trained = refine.build_state(0, 32, enlarge=2, precision="bf16")
    refine.restore(trained, f)
    soft = refine.degraded(x, 2)
    fp32, bf16 = (refine.apply(r, soft, noise) for r in (refine.load_refiner(f, average=False),
                                                          trained.refiner))  # fmt: skip
    resid = np.abs(fp32 - soft).max()
    assert resid > 0.01  # R learnt something to compare
    assert np.abs(fp32 - bf16).max() < 0.05 * resid + 0.01


def test_refiner_resumed_equals_uninterrupted(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(refine, "REFINE_CHECKPOINT", 2)
    imgs = bars(12, 16, 0)
    full = refine.train_refiner(tmp_path / "full", imgs, 6, 3, "d", quiet=True)

    def interrupt(it: int) -> None:
        if it == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal path

    with pytest.raises(TrainingInterrupted, match="refiner interrupted at its iteration 3"):
        refine.train_refiner(tmp_path / "cut", imgs, 6, 3, "d", quiet=True,
                             on_iteration=interrupt)  # fmt: skip
    cut = refine.find_latest(tmp_path / "cut")
    assert cut is not None and cut.meta["iteration"] == 3 and not cut.done
    # what a process killed while saving leaves: removed when the refiner trains again
    stale = refine.refiner_dir(tmp_path / "cut") / ".refiner-0000004.npz.abcd1234.tmp"
    stale.write_bytes(b"half a file")
    with pytest.raises(InputError, match="another dataset"):
        refine.train_refiner(tmp_path / "cut", imgs, 6, 3, "other", quiet=True)
    again = refine.train_refiner(tmp_path / "cut", imgs, 6, 3, "d", quiet=True)
    assert again.iteration == 6 and not stale.exists()
    a, b = refine.read(full.path), refine.read(again.path)  # type: ignore[arg-type]
    assert a.arrays.keys() == b.arrays.keys() and a.done and b.done
    for k in a.arrays:
        np.testing.assert_allclose(a.arrays[k], b.arrays[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert a.meta["rng"] == b.meta["rng"]
    # only the newest two files are kept, the pointer names the last
    assert sorted(p.name for p in refine.refiner_dir(tmp_path / "full").glob("*.npz")) == [
        "refiner-0000004.npz", "refiner-0000006.npz"]  # fmt: skip
    # a torn newest file is passed over for the one before it
    (tmp_path / "full" / "refiner" / "refiner-0000006.npz").write_bytes(b"PK\x03\x04torn")
    found = refine.find_latest(tmp_path / "full")
    assert found is not None and found.meta["iteration"] == 4


def test_generate_applies_the_weight_average_and_older_files_start_it_from_r(
        tmp_path: Path) -> None:  # fmt: skip
    """R_ema follows cxraug.gan.ema's warm-up, d_t = min(REFINE_EMA, (1 + t) / (10 + t)) after
    R's update t: checked against that recursion in numpy; `load_refiner` applies it; a file
    written before it existed gives R, and a resumed state's average starts from R."""
    imgs = bars(12, 16, 0)
    state = refine.build_state(3, 16)
    ema = [v.numpy().copy() for v in state.refiner.weights]  # ema_0 = w_0
    step = refine.make_step(state)
    for t in (1, 2, 3):
        step(*[tf.constant(a) for a in refine.draw_batch(state, imgs)])
        d = min(refine.REFINE_EMA, (1 + t) / (10 + t))
        ema = [d * e + (1 - d) * w.numpy() for e, w in zip(ema, state.refiner.weights,
                                                            strict=True)]  # fmt: skip
        for a, b in zip(state.ema.weights, ema, strict=True):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(state.ema.weights[-2].numpy(), state.refiner.weights[-2].numpy())
    res = refine.train_refiner(tmp_path, imgs, 4, 3, "d", quiet=True)
    f = refine.read(res.path)  # type: ignore[arg-type]

    def weights(r: object, group: str) -> None:
        for i, v in enumerate(r.weights):  # type: ignore[attr-defined]
            np.testing.assert_array_equal(v.numpy(), f.arrays[f"{group}.{i:04d}"])

    weights(refine.load_refiner(f), "r_ema")
    weights(refine.load_refiner(f, average=False), "r")
    # the same file as an older cxraug wrote it: no average
    del f.meta["names"]["r_ema"]
    f.arrays = {k: a for k, a in f.arrays.items() if not k.startswith("r_ema.")}
    weights(refine.load_refiner(f), "r")
    resumed = refine.build_state(3, 16)
    refine.restore(resumed, f)
    for a, b in zip(resumed.ema.weights, resumed.refiner.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_texture_term_is_the_wasserstein_distance_of_the_laplacian_values(
        tmp_path: Path) -> None:  # fmt: skip
    """texture_loss against numpy: per crop, sort asinh(255 lap) of the grey image (at 1x and
    shrunk 2x by the block mean), mean |difference|; 0 for the crop mirrored (the same values
    elsewhere), where L1 is not; positive for a blurred crop; a gradient reaches the output."""
    rng = np.random.default_rng(0)
    real = bars(3, 16, 0)[..., None] + rng.normal(0, 0.05, (3, 16, 16, 1)).astype(np.float32)
    out = np.stack([cv2.GaussianBlur(r[..., 0], (0, 0), 1.0) for r in real])[..., None]

    def t_values(x: np.ndarray, k: int) -> np.ndarray:
        g = (x[..., 0] + 1) / 2
        if k > 1:
            g = g.reshape(len(g), 16 // k, k, 16 // k, k).mean(axis=(2, 4))
        lap = (g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]
               - 4 * g[:, 1:-1, 1:-1])  # fmt: skip
        return np.sort(np.arcsinh(255 * lap).reshape(len(g), -1), axis=1)

    want = np.mean([np.abs(t_values(out, k) - t_values(real, k)).mean() for k in (1, 2)])
    got = float(refine.texture_loss(tf.constant(out), tf.constant(real), (1, 2)))
    assert want > 0.1 and got == pytest.approx(want, rel=1e-4)
    mirrored = real[:, :, ::-1]
    assert float(refine.texture_loss(tf.constant(mirrored), tf.constant(real), (1, 2))) < 1e-5
    assert np.abs(mirrored - real).mean() > 0.1
    x = tf.Variable(out)
    with tf.GradientTape() as tape:
        loss = refine.texture_loss(x, tf.constant(real))
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    # the step reports it; the weight is saved with the refiner and a resume keeps it
    res = refine.train_refiner(tmp_path, bars(4, 16, 1), 2, 0, "d", quiet=True, texture=0.5)
    assert res.losses["texture"] > 0
    f = refine.read(res.path)  # type: ignore[arg-type]
    assert f.meta["texture"] == 0.5 and len(f.meta["history"]) == 0
    resumed = refine.build_state(0, 16)
    assert resumed.texture == refine.REFINE_TEXTURE == 0.0
    refine.restore(resumed, f)
    assert resumed.texture == 0.5


@pytest.fixture(scope="module")
def refined(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = make_workspace(tmp_path_factory.mktemp("ref"))
    write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
    res = train(ws, recipe_config("paper", **TINY).replace(iterations=2, refine=3), name="r1",
                quiet=True)  # fmt: skip
    assert res.refiner_iteration == 3 and res.refiner is not None
    return ws


def test_generate_applies_the_refiner_per_image(refined: Workspace, tmp_path: Path) -> None:
    a, b = copy_ws(refined, tmp_path / "a"), copy_ws(refined, tmp_path / "b")
    assert gen(a, "--class", "covid", "-n", "5", "--batch-size", "4").exit_code == 0
    assert gen(b, "--class", "covid", "-n", "7", "--batch-size", "4").exit_code == 0
    for i in range(5):  # image i is the same whatever -n
        name = f"synthetic/covid/r1-s0-{i:06d}.png"
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    rows = [r for r in read_manifest(a.manifest_path).records if r.synthetic]
    assert len(rows) == 5 and all(r.note.startswith("refined: refiner-0000003.npz") for r in rows)
    cfg = json.loads(next((a.root / "synthetic" / "covid").glob("*.json")).read_text())
    assert cfg["refiner"].endswith("refiner-0000003.npz") and len(cfg["refiner_sha256"]) == 64
    # --no-refine: the generator's own images, which the refiner changed
    c = copy_ws(refined, tmp_path / "c")
    assert gen(c, "--class", "covid", "-n", "5", "--batch-size", "4", "--no-refine").exit_code == 0
    name = "synthetic/covid/r1-s0-000000.png"
    assert not np.array_equal(read_gray_u8(a.root / name), read_gray_u8(c.root / name))
    assert not [r for r in read_manifest(c.manifest_path).records if r.note]


def test_generate_refuses_an_unfinished_refiner_and_resume_finishes_it(
        refined: Workspace, tmp_path: Path) -> None:  # fmt: skip
    ws = copy_ws(refined, tmp_path / "w")
    shutil.rmtree(ws.runs_dir / "r1" / "refiner")
    r = gen(ws, "--class", "covid", "-n", "2")
    assert r.exit_code == 3, r.output
    msg = " ".join(r.output.split())
    assert "trained with --refine 3 but has no refiner file" in msg and "--no-refine" in msg
    assert not (ws.root / "synthetic").exists() or not list((ws.root / "synthetic").rglob("*.png"))
    gan_before = find_gan_latest(ws.runs_dir / "r1")
    res = resume(ws, "r1", quiet=True, refine=5)  # a finished GAN: the refiner alone trains
    assert res.iteration == 2 and res.refiner_iteration == 5
    assert find_gan_latest(ws.runs_dir / "r1") == gan_before
    assert gen(ws, "--class", "covid", "-n", "2").exit_code == 0


def test_odd_image_sides_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="image sides must be even"):
        refine.train_refiner(tmp_path, bars(8, 15, 0), 2, 0, "x", quiet=True)


def test_a_refiner_added_to_a_finished_run_is_applied(tmp_path: Path) -> None:
    """`train --resume RUN --refine N` on a run trained without one: the GAN's checkpoints
    do not mention it (they were written before), so generate reads the run's config.json."""
    ws = make_workspace(tmp_path / "w")
    write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
    train(ws, recipe_config("paper", **TINY).replace(iterations=2), name="r1", quiet=True)
    assert gen(ws, "--class", "covid", "-n", "2").exit_code == 0
    plain = read_gray_u8(ws.root / "synthetic/covid/r1-s0-000000.png")
    res = resume(ws, "r1", quiet=True, refine=3)
    assert res.refiner_iteration == 3
    r = gen(ws, "--class", "covid", "-n", "2", "--force")
    assert r.exit_code == 0, r.output
    rows = [x for x in read_manifest(ws.manifest_path).records if x.synthetic]
    assert rows and all(x.note.startswith("refined: refiner-0000003.npz") for x in rows)
    assert not np.array_equal(read_gray_u8(ws.root / "synthetic/covid/r1-s0-000000.png"), plain)
