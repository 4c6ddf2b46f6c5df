"""The real ImageNet-weights path of `cxraug fid`, offline: a legacy Keras HDF5 weights file with
the official name (Keras-2 layout, as keras.applications downloads it) is written from an
in-memory InceptionV3 with seeded non-default weights, then found through $KERAS_HOME/models
or passed with --weights, loaded by Keras' own `.h5` loader, hashed and labelled "unpinned"."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.images import read_gray_u8, write_png_gray
from cxraug.fid import FidReport, report_table
from cxraug.metrics import distances as metrics
from cxraug.metrics import features as feats

N_PER_SIDE = 6
RESIZE = "bilinear-aa"  # the CLI default


def _seeded_inception(seed: int) -> Any:
    """InceptionV3 notop (avg pool) with every weight drawn from default_rng(seed): He-normal
    kernels and non-trivial BN betas/moving statistics, so a layer loaded in the wrong place or
    a BN vector swapped would change the features."""
    keras = feats.keras_module()
    model = keras.applications.InceptionV3(
        include_top=False, weights=None, pooling="avg", input_shape=(299, 299, 3)
    )
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape, name = tuple(int(d) for d in v.shape), str(v.path)
        if name.endswith("kernel"):
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean (Keras' InceptionV3 BN has no gamma: scale=False)
            value = rng.normal(0.0, 0.1, shape)
        v.assign(value.astype(np.float32))
    return model


def _write_legacy_h5(model: Any, path: Path) -> None:
    """What Keras 2's `save_weights(..h5)` wrote, the layout of the official notop file: root
    attrs layer_names/backend/keras_version, one group per layer (weightless layers included)
    with a weight_names attr, datasets at "<layer>/<weight>:0", trainable then non-trainable
    weights (the order keras.src.legacy.saving.legacy_h5_format loads by position)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([ly.name.encode() for ly in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for layer in model.layers:
            g = f.create_group(layer.name)
            weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            names = [f"{layer.name}/{w.name}:0" for w in weights]
            g.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for n, w in zip(names, weights, strict=True):
                g.create_dataset(n, data=np.asarray(w))


def _images(seed: int, bright: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:40]
    out = []
    for i in range(N_PER_SIDE):
        img = 40 + bright + 2.0 * xx + (60 + 10 * i) * np.sin(yy / (3 + i))
        out.append(np.clip(img + rng.normal(0, 20, xx.shape), 0, 255).astype(np.uint8))
    return out


def _folder(path: Path, imgs: list[np.ndarray]) -> list[np.ndarray]:
    for i, im in enumerate(imgs):
        write_png_gray(path / f"img{i}.png", im)
    back = [read_gray_u8(path / f"img{i}.png") for i in range(len(imgs))]
    for a, b in zip(imgs, back, strict=True):
        np.testing.assert_array_equal(a, b)  # what the CLI scores is what we embed
    return back


def _fid_json(*args: str) -> dict[str, Any]:
    r = CliRunner().invoke(
        app,
        ["fid", *args, "--json", "--no-cache", "--pr-k", "2", "--kid-subsets", "3"],
    )
    assert r.exit_code == 0, r.output
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def _assert_unpinned(data: dict[str, Any], weights: Path) -> None:
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    assert md5 != feats.WEIGHTS_MD5
    assert data["weights_sha256"] == sha
    assert data["extractor"] == f"keras-inception_v3-imagenet(unpinned weights md5={md5})"
    assert data["standard"] is False  # never a standard FID with a file Keras does not pin
    assert any("NOT a standard FID" in w for w in data["warnings"]), data["warnings"]
    assert data["resize_filter"].startswith(RESIZE)
    assert (data["n_real"], data["n_fake"], data["cache"]) == (
        N_PER_SIDE,
        N_PER_SIDE,
        {"real": "off", "fake": "off"},
    )
    # the human table says it too, in its title and on every metric row
    buf = io.StringIO()
    Console(width=400, file=buf).print(report_table(FidReport(**data)))
    text = buf.getvalue()
    assert "NOT a standard FID: unpinned weights file" in text.splitlines()[0]  # the title
    # title + FID, baseline, KID, P, R, P and R at equal N, P/R baseline rows
    assert text.count("NOT a standard FID") == 9


@pytest.mark.slow
def test_fid_loads_an_unpinned_legacy_h5_weights_file_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    keras_home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))  # features.py reads it at call time
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # never the user's ~/.keras
    real = _folder(tmp_path / "real", _images(1, 0.0))
    fake = _folder(tmp_path / "fake", _images(2, 50.0))

    model = _seeded_inception(0)
    cached = keras_home / "models" / feats.WEIGHTS_FILE
    _write_legacy_h5(model, cached)

    x_real, x_fake = feats.prepare_batch(real, RESIZE), feats.prepare_batch(fake, RESIZE)
    ref_real = np.asarray(model(x_real, training=False), np.float64)
    ref_fake = np.asarray(model(x_fake, training=False), np.float64)
    assert ref_real.shape == (N_PER_SIDE, 2048) and np.isfinite(ref_real).all()
    assert ref_real.std(axis=0).mean() > 1e-3  # different images, different features

    # the same network, one early kernel nudged: a different file with the same name
    conv = next(v for v in model.weights if str(v.path).endswith("kernel"))
    conv.assign(np.asarray(conv) * np.float32(1.2))
    other = tmp_path / "other" / feats.WEIGHTS_FILE
    _write_legacy_h5(model, other)
    alt_real = np.asarray(model(x_real, training=False), np.float64)
    alt_fake = np.asarray(model(x_fake, training=False), np.float64)
    assert np.abs(alt_real - ref_real).max() > 1e-2

    # 1. the Keras cache lookup
    data = _fid_json(str(tmp_path / "real"), str(tmp_path / "fake"))
    _assert_unpinned(data, cached)
    expected = metrics.fid_from_features(ref_real, ref_fake).value
    assert data["fid"] == pytest.approx(expected, rel=1e-4)
    assert (data["precision"], data["recall"]) == pytest.approx(
        (
            metrics.precision_recall(ref_real, ref_fake, k=2).precision,
            metrics.precision_recall(ref_real, ref_fake, k=2).recall,
        )
    )

    # 2. --weights wins over the cache (which still holds the first file)
    data2 = _fid_json(str(tmp_path / "real"), str(tmp_path / "fake"), "--weights", str(other))
    _assert_unpinned(data2, other)
    expected2 = metrics.fid_from_features(alt_real, alt_fake).value
    assert data2["fid"] == pytest.approx(expected2, rel=1e-4)
    assert abs(expected2 - expected) > 1e-3 * expected
    assert data2["fid"] != pytest.approx(data["fid"], rel=1e-4)

    # 3. the features themselves: file-loaded network == in-memory network
    ex = feats.inception_extractor()
    assert ex.weights_sha256 == data["weights_sha256"]
    got = feats.extract_features(lambda i: real[i], N_PER_SIDE, ex, show_progress=False)
    np.testing.assert_allclose(got, ref_real, atol=1e-4, rtol=0)
    assert np.abs(got - alt_real).max() > 1e-2  # ... and not the other file's
