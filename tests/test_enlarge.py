"""The resolution cascade (`train --enlarge K --refine N`): G and D train on the dataset
shrunk K times, the enlargement learns to undo exactly that shrinking, and `generate` writes
the dataset's size. Expectations from the maths of area averaging and from the toy data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_generate import copy_ws, gen, real_rows  # tests/ is on sys.path (rootdir conftest)
from test_refine import bars
from test_train import TINY, make_workspace

from cxraug.core.errors import InputError
from cxraug.core.images import read_gray_u8
from cxraug.core.manifest import Manifest, read_manifest, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.gan import refine
from cxraug.gan.checkpoint import find_latest, read_checkpoint
from cxraug.gan.config import recipe_config
from cxraug.gan.trainset import model_side, shrink
from cxraug.train import resume, train


def test_shrink_is_the_block_mean_and_the_degradation_keeps_what_it_cannot_see() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 32, 32)).astype(np.float32)
    # area averaging by an integer factor K is the mean of each K x K block
    blocks = x.reshape(3, 8, 4, 8, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(shrink(x, 8), blocks, atol=1e-6)
    # an image that is already constant on 4 x 4 blocks loses nothing by shrinking
    coarse = np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2)
    np.testing.assert_allclose(shrink(coarse, 8), blocks, atol=1e-6)
    # the enlargement's input: a constant stays constant; a fine checkerboard (invisible at
    # 1/4 the side) becomes its mean, so the enlargement must draw it from nothing
    np.testing.assert_allclose(refine.degraded(np.full((1, 32, 32), 0.3, np.float32), 4), 0.3,
                               atol=1e-6)  # fmt: skip
    checker = np.where(np.indices((32, 32)).sum(0) % 2, 0.5, -0.5)[None].astype(np.float32)
    np.testing.assert_allclose(refine.degraded(checker, 4), 0.0, atol=1e-6)
    assert refine.degraded(x, 2).shape == x.shape


def test_the_side_must_divide() -> None:
    assert model_side(224, 4) == 56 and model_side(224, 7) == 32 and model_side(32, 1) == 32
    with pytest.raises(InputError, match="--enlarge 3 does not divide the dataset's 32 px"):
        model_side(32, 3)


def test_an_enlargement_has_two_levels_and_learns_to_undo_the_shrinking(tmp_path: Path) -> None:
    state = refine.build_state(0, 32, enlarge=4)
    convs = [la for la in state.refiner.layers if la.__class__.__name__ == "Conv2D"]
    assert (state.levels, state.batch, state.crop) == (2, refine.ENLARGE_BATCH, 32)
    assert len(convs) == 12 and max(c.filters for c in convs) == 4 * refine.REFINE_WIDTH
    assert len(refine.build_state(0, 32).refiner.layers) < len(state.refiner.layers)
    sharp, test = bars(24, 32, 0), bars(6, 32, 1)
    res = refine.train_refiner(tmp_path, sharp, 300, 0, "toy", quiet=True, enlarge=2)
    f = refine.read(res.path)  # type: ignore[arg-type]
    assert (f.meta["enlarge"], f.meta["levels"], f.meta["batch"]) == (2, 2, refine.ENLARGE_BATCH)
    soft = refine.degraded(test, 2)
    noise = np.random.default_rng(5).standard_normal(test.shape).astype(np.float32)
    out = refine.apply(refine.load_refiner(f), soft, noise)

    def lap_var(x: np.ndarray) -> float:
        return float(np.mean([cv2.Laplacian(im, cv2.CV_32F).var() for im in x]))

    # the identity would leave both gaps as they are: the enlarged images are nearer the
    # sharp ones than their bilinear inputs in pixels, and far nearer in edge energy (the
    # critic asks for edges; where a thin bar falls inside a 2 x 2 block is a guess)
    assert np.abs(out - test).mean() < 0.93 * np.abs(soft - test).mean()
    assert abs(np.log(lap_var(out) / lap_var(test))) < \
        0.3 * abs(np.log(lap_var(soft) / lap_var(test)))  # fmt: skip
    # a refiner trained for another factor is not continued
    with pytest.raises(InputError, match="trained for --enlarge 2, this run has --enlarge 4"):
        refine.train_refiner(tmp_path, sharp, 400, 0, "toy", quiet=True, enlarge=4)


def test_an_enlarge_run_needs_its_enlargement() -> None:
    with pytest.raises(InputError, match="--enlarge 2 trains G at 1/2 .* give --refine N"):
        recipe_config("paper", **TINY).replace(enlarge=2)
    # G's levels must fit the shrunk side, and the message names --enlarge as the cause
    with pytest.raises(InputError, match=r"16 px \(the dataset's side / --enlarge 4: G's "
                                         r"size\)\. Pass fewer --conv-g-channels, a smaller "
                                         r"--enlarge"):  # fmt: skip
        recipe_config("conv", enlarge=4, refine=10).replace(image_size=16)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = make_workspace(tmp_path_factory.mktemp("cas"), size=32)
    write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
    res = train(ws, recipe_config("paper", **TINY).replace(iterations=2, refine=3, enlarge=2),
                name="c1", quiet=True)  # fmt: skip
    assert res.refiner_iteration == 3
    return ws


def test_the_gan_trains_small_and_generate_writes_the_dataset_size(cascade: Workspace,
                                                                   tmp_path: Path) -> None:
    run = cascade.runs_dir / "c1"
    ckpt = read_checkpoint(find_latest(run))  # type: ignore[arg-type]
    assert (ckpt.config.image_size, ckpt.config.enlarge) == (16, 2)
    assert json.loads((run / "config.json").read_text())["enlarge"] == 2
    assert read_gray_u8(next((run / "samples").glob("*.png"))).shape[1] < 32 * 4
    ws = copy_ws(cascade, tmp_path / "a")
    r = gen(ws, "--class", "covid", "-n", "3", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    rows = [x for x in read_manifest(ws.manifest_path).records if x.synthetic]
    assert len(rows) == 3 and all((x.width, x.height) == (32, 32) for x in rows)
    assert all(x.note.startswith("enlarged 2x the learnt enlargement; refined: refiner-")
               for x in rows)  # fmt: skip
    first = read_gray_u8(ws.root / "synthetic/covid/c1-s0-000000.png")
    assert first.shape == (32, 32)
    # --no-refine: G's images enlarged bilinearly, said so, and not the refined ones
    b = copy_ws(cascade, tmp_path / "b")
    assert gen(b, "--class", "covid", "-n", "3", "--no-refine").exit_code == 0
    rows = [x for x in read_manifest(b.manifest_path).records if x.synthetic]
    assert all(x.note == "enlarged 2x bilinearly (--no-refine)" for x in rows)
    plain = read_gray_u8(b.root / "synthetic/covid/c1-s0-000000.png")
    assert plain.shape == (32, 32) and not np.array_equal(plain, first)


def test_resume_checks_the_full_size_and_continues_the_enlargement(cascade: Workspace,
                                                                   tmp_path: Path) -> None:
    ws = copy_ws(cascade, tmp_path / "w")
    res = resume(ws, "c1", quiet=True, refine=5)  # a finished GAN: the enlargement alone
    assert res.iteration == 2 and res.refiner_iteration == 5
    f = refine.find_latest(ws.runs_dir / "c1")
    assert f is not None and f.meta["enlarge"] == 2
    # a refiner of another factor in the run folder: generate refuses it and says what to do
    shutil.rmtree(ws.runs_dir / "c1" / "refiner")
    refine.train_refiner(ws.runs_dir / "c1", bars(8, 32, 0), 2, 0, "x", quiet=True)
    r = gen(ws, "--class", "covid", "-n", "2")
    assert r.exit_code == 3 and "trained for --enlarge 1" in " ".join(r.output.split())
    # a dataset of another size cannot continue the run
    other = make_workspace(tmp_path / "o", size=16)
    shutil.copytree(ws.runs_dir, other.runs_dir)
    with pytest.raises(InputError, match="trained on 32 px images, the dataset now holds 16"):
        resume(other, "c1", quiet=True, iterations=3)


def test_the_enlargement_trains_at_the_runs_precision(tmp_path: Path) -> None:
    """A bf16 run's enlargement computes in bf16 (its step ~1.8x faster on this CPU,
    bench/refine_step.py), an fp32 run's in fp32; each file says which."""
    for precision in ("bf16", "none"):
        ws = make_workspace(tmp_path / precision, size=32)
        write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
        cfg = recipe_config("paper", **{**TINY, "mixed_precision": precision})
        train(ws, cfg.replace(iterations=1, refine=1, enlarge=2), name="p", quiet=True)
        f = refine.find_latest(ws.runs_dir / "p")
        assert f is not None and f.meta["precision"] == precision


def test_the_cascade_recipe_fits_a_224_px_dataset() -> None:
    """--recipe cascade: four G levels and three D levels at 56 px, with its enlargement."""
    c = recipe_config("cascade")
    assert (c.enlarge, c.refine > 0, c.recipe) == (4, True, "cascade")
    small = c.replace(image_size=model_side(224, c.enlarge))  # what `train` sets: checks pass
    assert small.image_size == 56 and 56 // 2 ** (len(small.conv_g_channels) - 1) == 7
