"""Intensity matching (cxraug.gan.intensity, `generate --match-intensity`): the mapping against
its definition and the classic sort-based histogram specification, the nearest reference
against a direct 2-Wasserstein computation, and `generate` writing images whose grey levels
are their named reference's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_generate import copy_ws, gen, trained  # noqa: F401  (the module-scoped tiny run)

from cxraug.core.dataset import load_dataset
from cxraug.core.errors import InputError
from cxraug.core.images import read_gray_u8
from cxraug.core.manifest import read_manifest, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.gan import intensity


def smooth_image(seed: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A continuous (tie-free) image in (-1, 1): a smooth random field through tanh."""
    rng = np.random.default_rng(seed)
    f = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape))
                     / (1 + np.add.outer(np.arange(shape[0]), np.arange(shape[1])))).real
    return np.tanh(f / f.std()).astype(np.float32)


def test_the_matched_image_has_the_reference_quantiles_and_keeps_the_pixel_order() -> None:
    x = smooth_image(0, (25, 41))  # n - 1 = 1024 pixels: p_j (n - 1) falls on a rank
    ref = np.clip(np.random.default_rng(1).gamma(2.0, 0.2, (80, 80)) - 1, -1, 1)  # skewed
    r = intensity.quantiles(ref[None])
    out = intensity.match(x[None], r)[0]
    # no ties: the pixel of rank k maps to R(k / (n - 1)); quantile p_j of out is the pixel
    # of rank p_j (n - 1) = 4 j, so it is exactly r_j
    got = np.quantile(out.astype(np.float64), intensity.probabilities())
    np.testing.assert_allclose(got, r[0], atol=1e-6)  # float32 output
    order = np.argsort(x.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order]) >= 0).all()  # monotone: the order of the pixels kept


def test_it_agrees_with_the_sort_based_specification() -> None:
    """The textbook match of two equal-size images: the k-th darkest pixel of x takes the
    k-th darkest value of the reference. Ours reads the reference at 257 quantiles only, so
    the two differ by at most the largest gap between neighbouring reference quantiles."""
    x, ref = smooth_image(2), smooth_image(3) ** 3  # another shape of histogram
    exact = np.empty(x.size)
    exact[np.argsort(x.ravel())] = np.sort(ref.ravel())
    r = intensity.quantiles(ref[None])
    out = intensity.match(x[None], r)[0].ravel()
    bound = np.diff(r[0]).max()
    assert np.abs(out - exact).max() <= bound + 1e-6
    assert np.abs(out - exact).mean() < bound / 4  # and far below it on average


def test_ties_stay_tied_at_their_mid_rank_and_a_self_match_changes_little() -> None:
    x = smooth_image(4)
    x[:16] = -1.0  # a saturated band: a quarter of the pixels tied at -1
    ref = smooth_image(5)
    r = intensity.quantiles(ref[None])
    out = intensity.match(x[None], r)[0]
    band = out[:16]
    assert np.ptp(band) == 0  # equal pixels stay equal
    mid = (band.size - 1) / 2 / (x.size - 1)  # the mid-rank of the tied run
    assert band[0, 0] == pytest.approx(np.interp(mid, intensity.probabilities(), r[0]), abs=1e-6)
    # an image matched onto its own quantiles comes back: exactly at the 257 quantiles, and
    # between them within the gap of the two quantiles around it (most in the thin tails)
    y = smooth_image(6)
    q = intensity.quantiles(y[None])
    back = intensity.match(y[None], q)[0]
    assert np.abs(back - y).max() <= np.diff(q[0]).max()
    assert np.median(np.abs(back - y)) < 0.5 / 255


def test_the_nearest_reference_is_the_least_2_wasserstein_distance() -> None:
    """Against a direct computation: for 1-D distributions the 2-Wasserstein distance is the
    L2 distance between quantile functions, here sampled at the 257 levels."""
    rng = np.random.default_rng(7)
    refs = np.stack([smooth_image(10 + k) * rng.uniform(0.3, 1) + rng.uniform(-0.3, 0.3)
                     for k in range(12)])  # fmt: skip
    imgs = np.stack([smooth_image(40 + k) * rng.uniform(0.3, 1) for k in range(5)])
    qr, qi = intensity.quantiles(refs), intensity.quantiles(imgs)
    want = [int(np.argmin([np.mean((a - b) ** 2) for b in qr])) for a in qi]
    assert list(intensity.nearest(qi, qr)) == want
    # an image that is a reference (up to a grey level of noise) finds that reference
    assert list(intensity.nearest(intensity.quantiles(refs[[3, 8]] + 0.002), qr)) == [3, 8]
    with pytest.raises(InputError):
        intensity.nearest(qi, qr[:0])


def test_generate_matches_each_image_to_the_reference_its_row_names(
        trained: Workspace, tmp_path: Path) -> None:  # noqa: F811  # fmt: skip
    from cxraug.core.dataset import save_dataset

    ws = copy_ws(trained, tmp_path / "w")
    ds = load_dataset(ws.dataset_path)  # the toy images' classes all share one histogram:
    covid_rows = np.flatnonzero(ds.labels == 1)  # spread their contrasts so that the
    for k, i in enumerate(covid_rows):  # nearest reference is well defined
        ds.images[i] *= 0.15 + 0.85 * k / (len(covid_rows) - 1)
    save_dataset(ws.dataset_path, ds)
    r = gen(ws, "--class", "covid", "-n", "6", "--seed", "2", "--batch-size", "4",
            "--match-intensity")  # fmt: skip
    assert r.exit_code == 0, r.output
    by_id = {str(i): im for i, im in zip(ds.ids, ds.images, strict=True)}
    covid = {str(i) for i, lab in zip(ds.ids, ds.labels, strict=True) if lab == 1}
    rows = [row for row in read_manifest(ws.manifest_path) if row.synthetic]
    assert len(rows) == 6
    refs = []
    for row in rows:
        ref_id = row.note.split("grey levels matched to ")[1]
        assert ref_id in covid  # a training image of the class generated
        refs.append(ref_id)
        got = read_gray_u8(ws.root / row.path).astype(np.float64) / 127.5 - 1  # to_uint8^-1
        want = np.quantile(by_id[ref_id].astype(np.float64), intensity.probabilities())
        # the written PNG holds the reference's grey levels, to 8-bit rounding (half a step:
        # 1/255 here); G's tiny images (16 px: 256 pixels) can tie, which moves single
        # quantiles, not the median
        have = np.quantile(got, intensity.probabilities())
        assert np.median(np.abs(have - want)) <= 1 / 255 + 1e-9
        assert abs(np.median(got) - np.median(by_id[ref_id])) <= 1 / 255 + 1e-9
    # each image's reference is its nearest: recomputed from the images G and the refiner made
    # (the run written without the flag, below, is the same images before matching)
    plain = copy_ws(trained, tmp_path / "p")
    assert gen(plain, "--class", "covid", "-n", "6", "--seed", "2", "--batch-size", "4"
               ).exit_code == 0  # fmt: skip
    before = np.stack([read_gray_u8(plain.root / row.path) for row in rows]) / 127.5 - 1
    qr = intensity.quantiles(ds.images[covid_rows])
    near = intensity.nearest(intensity.quantiles(before), qr)
    assert refs == [str(ds.ids[covid_rows][k]) for k in near]
    cfg = json.loads((ws.root / "synthetic/covid/generate-r1-s2.json").read_text())
    assert cfg["match_intensity"] is True and cfg["intensity_references"] == len(covid)
    # image i does not depend on -n or the batch size
    other = copy_ws(ws, tmp_path / "o")  # the same references
    shutil.rmtree(other.root / "synthetic")
    save_dataset(other.dataset_path, ds)
    write_manifest(other.manifest_path, read_manifest(trained.manifest_path))
    assert gen(other, "--class", "covid", "-n", "2", "--seed", "2", "--batch-size", "1",
               "--match-intensity").exit_code == 0  # fmt: skip
    for i in range(2):
        name = f"synthetic/covid/r1-s2-{i:06d}.png"
        d = read_gray_u8(ws.root / name).astype(int) - read_gray_u8(other.root / name).astype(int)
        assert np.abs(d).max() <= 1
    # without the flag: G's own grey levels, and no reference in the note
    row = [row for row in read_manifest(plain.manifest_path) if row.synthetic][0]
    assert "grey levels" not in row.note
    assert read_gray_u8(plain.root / row.path).tobytes() != read_gray_u8(
        ws.root / row.path).tobytes()  # fmt: skip


def test_a_class_without_training_images_is_refused(trained: Workspace,  # noqa: F811
                                                    tmp_path: Path) -> None:  # fmt: skip
    from cxraug.core.dataset import save_dataset

    ws = copy_ws(trained, tmp_path / "w")
    ds = load_dataset(ws.dataset_path)
    ds.labels[:] = 0  # every training image normal now
    save_dataset(ws.dataset_path, ds)
    r = gen(ws, "--class", "covid", "-n", "1", "--match-intensity")
    assert r.exit_code == 3 and "--match-intensity needs real training images of covid" in r.output
    assert not list((ws.root / "synthetic").rglob("*.png"))  # refused before anything is written
