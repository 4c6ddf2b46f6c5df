"""Preprocessing, weights lookup and the feature extractors (the real network only in the slow
tests, on a few tiny images)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from _fakes import tiny_extractor

from cxraug.core.errors import EXIT_MISSING_RESOURCE, InputError, MissingResourceError
from cxraug.metrics import features as feats


@pytest.mark.parametrize("resize", list(feats.RESIZE_FILTERS))
def test_resize_keeps_constant_images_and_range(resize: str) -> None:
    out = feats.resize_to_inception(np.full((40, 70), 100, np.uint8), resize)
    assert out.shape == (299, 299) and out.dtype == np.float32
    np.testing.assert_allclose(out, 100.0, atol=1e-3)
    rng = np.random.default_rng(0)
    noisy = feats.resize_to_inception(rng.integers(0, 256, (500, 300), dtype=np.uint8), resize)
    assert noisy.min() >= 0.0 and noisy.max() <= 255.0


def test_filters_differ_and_unknown_filter_is_refused() -> None:
    img = np.random.default_rng(1).integers(0, 256, (600, 600), dtype=np.uint8)
    a = feats.resize_to_inception(img, "bilinear-aa")
    b = feats.resize_to_inception(img, "cubic")
    # shrinking noise: the antialiased filter averages it away, plain cubic aliases it
    assert a.std() < 0.5 * b.std()
    with pytest.raises(InputError, match="unknown resize filter 'lanczos'"):
        feats.resize_to_inception(img, "lanczos")
    with pytest.raises(InputError, match="uint8"):
        feats.resize_to_inception(img.astype(np.float32), "cubic")


def test_prepare_batch_copies_gray_to_three_channels_in_minus_one_one() -> None:
    imgs = [np.zeros((30, 30), np.uint8), np.full((50, 20), 255, np.uint8)]
    x = feats.prepare_batch(imgs, "bilinear-aa")
    assert x.shape == (2, 299, 299, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    np.testing.assert_allclose(x[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(x[1], 1.0, atol=1e-6)


def test_extract_features_is_batch_size_independent_and_ordered() -> None:
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (20 + i, 30), dtype=np.uint8) for i in range(10)]
    ex = tiny_extractor()
    res = {
        b: feats.extract_features(lambda i: imgs[i], 10, ex, batch_size=b, show_progress=False)
        for b in (1, 7, 32)
    }
    for b in (7, 32):
        np.testing.assert_allclose(res[b], res[1], atol=1e-5)
    single = ex.embed(feats.prepare_batch([imgs[9]], "bilinear-aa"))[0]
    np.testing.assert_allclose(res[7][9], single, atol=1e-5)  # row i is image i
    assert res[1].dtype == np.float64
    with pytest.raises(InputError, match="--batch-size"):
        feats.extract_features(lambda i: imgs[i], 10, ex, batch_size=0, show_progress=False)


@pytest.fixture
def no_keras_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_missing_weights_message_names_file_url_place_and_flag(no_keras_cache: Path) -> None:
    with pytest.raises(MissingResourceError) as e:
        feats.find_weights()
    msg = str(e.value)
    assert e.value.exit_code == EXIT_MISSING_RESOURCE
    for part in (
        feats.WEIGHTS_FILE,
        feats.WEIGHTS_URL,
        "--weights",
        str(no_keras_cache / "kh" / "models"),
    ):
        assert part in msg
    with pytest.raises(MissingResourceError, match="--weights .*nope.h5: no such file"):
        feats.find_weights(no_keras_cache / "nope.h5")
    with pytest.raises(MissingResourceError):
        feats.load_extractor("inception")


def test_weights_found_in_keras_cache_and_hashed(no_keras_cache: Path) -> None:
    f = no_keras_cache / "kh" / "models" / feats.WEIGHTS_FILE
    f.parent.mkdir(parents=True)
    f.write_bytes(b"not really weights")
    assert feats.find_weights() == f
    sha, md5 = feats.hash_weights(f)
    assert sha == hashlib.sha256(b"not really weights").hexdigest()
    assert md5 == hashlib.md5(b"not really weights").hexdigest()
    ex = feats.inception_extractor()  # lazy: nothing is built until the first batch
    assert ex.weights_sha256 == sha
    assert ex.standard is False and "unpinned" in ex.name  # md5 differs from Keras' pin


def test_load_extractor_rejects_bad_kinds() -> None:
    with pytest.raises(InputError, match="unknown --features 'vgg'"):
        feats.load_extractor("vgg")
    with pytest.raises(InputError, match="cannot be combined"):
        feats.load_extractor("random", Path("w.h5"))


def test_reinitialise_is_deterministic_and_local() -> None:
    import keras

    from cxraug.core.tf_setup import tf  # noqa: F401

    def model() -> keras.Model:
        return keras.Sequential(
            [keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3), keras.layers.BatchNormalization()]
        )

    global_state = np.random.get_state()[1].copy()  # noqa: NPY002
    a, b, c = model(), model(), model()
    feats.reinitialise(a, 5)
    feats.reinitialise(b, 5)
    feats.reinitialise(c, 6)
    for va, vb, vc in zip(a.weights, b.weights, c.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))
        if str(va.path).endswith("kernel"):
            assert not np.array_equal(np.asarray(va), np.asarray(vc))
            assert float(np.std(np.asarray(va))) == pytest.approx(np.sqrt(2 / 27), rel=0.15)
        if str(va.path).endswith("moving_variance"):
            np.testing.assert_array_equal(np.asarray(va), 1.0)
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # noqa: NPY002


@pytest.mark.slow
def test_random_inception_is_deterministic_and_batch_independent() -> None:
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (24 + 3 * i, 32), dtype=np.uint8) for i in range(9)]
    ex = feats.random_extractor()
    assert ex.name == "inception_v3-random-init(seed=0)" and ex.standard is False
    res = {
        b: feats.extract_features(lambda i: imgs[i], 9, ex, batch_size=b, show_progress=False)
        for b in (1, 7, 32)
    }
    assert res[1].shape == (9, 2048) and np.isfinite(res[1]).all()
    assert res[1].std(axis=0).mean() > 1e-3  # different images -> different features
    for b in (7, 32):
        np.testing.assert_allclose(res[b], res[1], atol=1e-5)
    again = feats.random_extractor()  # a fresh network from the same seed
    f2 = feats.extract_features(lambda i: imgs[i], 9, again, batch_size=7, show_progress=False)
    np.testing.assert_allclose(f2, res[7], atol=1e-6)


@pytest.mark.slow
def test_corrupt_weights_file_fails_with_missing_resource(no_keras_cache: Path) -> None:
    bad = no_keras_cache / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    ex = feats.inception_extractor(bad)
    with pytest.raises(MissingResourceError, match="could not load Inception-v3 weights"):
        ex.embed(np.zeros((1, 299, 299, 3), np.float32))
