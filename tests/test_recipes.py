"""Issue 9's machinery: DiffAugment, EMA, the conv architecture, checkpoint scoring, recipes.

Expectations come from maths or an independent numpy implementation, on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _fakes import tiny_extractor
from test_generate import real_rows
from test_train import TINY, make_workspace, toy_images

from cxraug.core.errors import InputError
from cxraug.core.manifest import Manifest, write_manifest
from cxraug.core.tf_setup import keras, tf
from cxraug.gan import cells, scoring
from cxraug.gan.arch import build_models, forward_flops
from cxraug.gan.augment import diff_augment
from cxraug.gan.checkpoint import find_best, find_latest, list_checkpoints, read_checkpoint
from cxraug.gan.config import (
    D_PATCH_LEVEL,
    DEFAULT_RECIPE,
    RECIPES,
    UPSAMPLES,
    TrainConfig,
    parse_policy,
    recipe_config,
)
from cxraug.gan.conv import (
    RESIZE_UPSAMPLES,
    ConvGenerator,
    ProjectionDiscriminator,
    SkipExcitation,
    area_matrix,
    bilinear_x2,
    minibatch_stddev,
    z_noise,
)
from cxraug.gan.conv_step import r1_penalty
from cxraug.gan.ema import ema_decay_at, update_ema
from cxraug.gan.layers import SeededInit
from cxraug.gan.step import build_state, make_step, resident_dataset
from cxraug.generate import GenerateConfig, generate
from cxraug.train import resume, train

DATA = Path(__file__).parent / "data"
CONV_TINY = dict(arch="conv", image_size=16, latent_dim=8, conv_g_channels=(16, 8, 4),
                 conv_d_channels=(8, 16), batch_size=8, mixed_precision="none",
                 noise_iterations=0, noise_start=0.0, sample_interval=3,
                 samples_per_class=2)  # fmt: skip


# ---------------------------------------------------------------- the paper recipe is kept


@pytest.mark.parametrize("xla", [False, True])
def test_paper_recipe_reproduces_the_recorded_trajectory(xla: bool) -> None:
    """tests/data/paper_trajectory.json was recorded with the code before issue 9 (c1edb93):
    the paper recipe must follow it exactly (same losses, same weights)."""
    rec = json.loads((DATA / "paper_trajectory.json").read_text())[f"xla={xla}"]
    cfg = recipe_config("paper", image_size=16, latent_dim=8, g_widths=(16, 32),
                        d_widths=(32, 32, 32, 32), batch_size=8, xla=xla,
                        mixed_precision="none", noise_iterations=4, seed=3)  # fmt: skip
    assert cfg.arch == "mlp" and cfg.ema_decay == 0 and cfg.augment == ""
    st = build_state(cfg)
    step = make_step(st, *resident_dataset(*toy_images()))
    for it, want in enumerate(rec["metrics"]):
        s = cfg.noise_sigma(it)
        got = step(s, s > 0)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (it, k)
    for net, key in ((st.gen, "g_weight_sums"), (st.disc, "d_weight_sums")):
        sums = [float(np.sum(v.numpy(), dtype=np.float64)) for v in net.weights]
        assert len(sums) == len(rec[key]), key  # every recorded variable, in order
        np.testing.assert_allclose(sums, rec[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_the_default_config_is_the_default_recipe_and_paper_is_table_2() -> None:
    """One default for the library and the CLI (issue 21): the dataclass defaults are the
    default recipe; the paper's recipe is Table 2's values, asked for by name."""
    assert DEFAULT_RECIPE == "conv" and RECIPES[DEFAULT_RECIPE] == {}
    assert TrainConfig() == recipe_config(DEFAULT_RECIPE) and TrainConfig().recipe == "conv"
    assert TrainConfig().arch == "conv" and TrainConfig().conv_upsample == "resize"
    assert TrainConfig().sampling == "balanced"  # since 2026-12-05 (bench/RESULTS.md)
    p = recipe_config("paper")
    table2 = dict(arch="mlp", latent_dim=128, lr=2e-4, beta_1=0.6, leaky_slope=0.2,
                  bn_momentum=0.8, batch_size=128, iterations=10_000, sample_interval=200,
                  ema_decay=0.0, augment="", score_samples=0, recipe="paper",
                  sampling="uniform")  # fmt: skip  (Keras-GAN's batches: uniform over images)
    assert {k: getattr(p, k) for k in table2} == table2


def test_an_old_config_dict_missing_keys_reads_back_as_before() -> None:
    """Keys missing from an older run's config.json read as the values the dataclass had
    then (the paper's), whatever the defaults are now and whatever recipe the dict names."""
    paper = recipe_config("paper", include_marked=True)  # old runs trained on every image
    old = paper.to_dict()
    for k in ("recipe", "arch", "augment", "ema_decay", "score_samples", "diversity",
              "batch_size", "iterations", "noise_start", "include_marked", "cues"):
        del old[k]  # written before these options existed (or by hand)
    assert TrainConfig.from_dict(old) == paper
    conv = TrainConfig().to_dict()
    del conv["conv_upsample"]  # a conv run from before --conv-upsample: transposed convs
    assert TrainConfig.from_dict(conv) == TrainConfig(conv_upsample="transposed")
    del conv["conv_d_head"]  # from before --conv-d-head: D summed over positions
    assert TrainConfig.from_dict(conv).conv_d_head == "sum"
    del conv["conv_g_noise"]  # from before --conv-g-noise: no noise inputs
    assert TrainConfig.from_dict(conv).conv_g_noise is False
    del conv["conv_g_output"]  # from before --conv-g-output: the last level's image alone
    assert TrainConfig.from_dict(conv).conv_g_output == "last"
    assert TrainConfig.from_json(TrainConfig().to_json()) == TrainConfig()


def test_cli_train_with_no_options_builds_the_library_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cxraug train` and `train(ws)` train the same model: the config the CLI's own option
    machinery builds with no options equals TrainConfig()."""
    from typer.testing import CliRunner

    from cxraug import train as train_mod
    from cxraug.cli import app

    seen: dict[str, object] = {}

    def fake_train(ws: object, cfg: TrainConfig, **kw: object) -> object:
        seen["cfg"] = cfg
        raise InputError("stop here")  # nothing to train: the config is what we check

    monkeypatch.setattr(train_mod, "train", fake_train)
    r = CliRunner().invoke(app, ["train", "-w", str(tmp_path)])
    assert r.exit_code == 3 and "stop here" in r.output, r.output
    assert seen["cfg"] == TrainConfig()


def test_recipes_and_policy_parsing() -> None:
    conv = recipe_config("conv", seed=4)
    assert conv.arch == "conv" and conv.seed == 4 and conv.recipe == "conv"
    assert set(RECIPES) >= {"paper", "conv"}
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("") == () == parse_policy("none")
    with pytest.raises(InputError, match="unknown augmentation flip"):
        recipe_config("paper", augment="color,flip")
    with pytest.raises(InputError, match="unknown recipe"):
        recipe_config("stylegan")
    with pytest.raises(InputError, match="conv only"):
        recipe_config("paper", spectral_norm=True)
    with pytest.raises(InputError, match="multiple of"):
        recipe_config("paper", **{**CONV_TINY, "image_size": 18})
    with pytest.raises(InputError, match="conv_d_head='max'; use one of sum, flatten"):
        recipe_config("paper", **{**CONV_TINY, "conv_d_head": "max"})


# ---------------------------------------------------------------- DiffAugment


def _rng(seed: int = 0) -> tf.random.Generator:
    return tf.random.Generator.from_seed(seed, alg="philox")


def test_augment_identity_at_strength_0_and_seeded() -> None:
    x = tf.random.stateless_uniform((4, 16, 16, 1), (1, 2), -1, 1)
    pol = ("color", "translation", "cutout")
    np.testing.assert_array_equal(diff_augment(x, _rng(), pol, strength=0.0).numpy(), x.numpy())
    a = diff_augment(x, _rng(5), pol).numpy()
    b = diff_augment(x, _rng(5), pol).numpy()
    c = diff_augment(x, _rng(6), pol).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    # independent transforms per image: identical inputs come out different
    same = tf.repeat(x[:1], 4, 0)
    out = diff_augment(same, _rng(1), pol).numpy()
    assert np.abs(out[0] - out[1]).max() > 0.1


def test_augment_probability_leaves_the_expected_share_of_images_as_they_are() -> None:
    """p = 1 is the unmasked transform on the same stream; with p, each image is left as G
    made it with probability 1 - p (cutout alone: an applied cutout always changes an image
    with no zero pixels, so unchanged = not applied), and the share is binomial."""
    x = tf.random.stateless_uniform((400, 16, 16, 1), (1, 2), 0.1, 1)
    np.testing.assert_array_equal(diff_augment(x, _rng(3), ("cutout",), p=1.0).numpy(),
                                  diff_augment(x, _rng(3), ("cutout",)).numpy())  # fmt: skip
    for p in (0.25, 0.5):
        out = diff_augment(x, _rng(4), ("cutout",), p=p).numpy()
        same = np.all(out == x.numpy(), axis=(1, 2, 3))
        sd = np.sqrt(p * (1 - p) / 400)
        assert abs(same.mean() - (1 - p)) < 4 * sd, (p, same.mean())
    with pytest.raises(InputError, match=r"--augment-p 0.0 must be in \(0, 1\]"):
        recipe_config("paper", augment_p=0.0)


def test_translation_matches_a_numpy_shift_with_zero_fill() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (6, 16, 16, 1)).astype(np.float32)
    rng = _rng(3)
    state = rng.state.numpy().copy()
    out = diff_augment(tf.constant(x), rng, ("translation",)).numpy()
    rng.reset(state)  # replay the same draw to learn the shifts
    t = rng.uniform([6, 2], -2, 3, dtype=tf.int32).numpy()  # 16 * 1/8 = 2 px
    for i, (dy, dx) in enumerate(t):
        want = np.zeros_like(x[i])
        src = x[i][max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)]
        want[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
        np.testing.assert_array_equal(out[i], want)


def test_cutout_zeroes_one_square_of_half_the_side_and_color_is_affine() -> None:
    x = tf.ones((8, 16, 16, 1))
    out = diff_augment(x, _rng(2), ("cutout",)).numpy()[..., 0]
    for im in out:
        zeros = np.argwhere(im == 0)
        h = zeros[:, 0].max() - zeros[:, 0].min() + 1
        w = zeros[:, 1].max() - zeros[:, 1].min() + 1
        assert len(zeros) == h * w and h <= 8 and w <= 8  # one (possibly clipped) square
    assert (out == 0).any(axis=(1, 2)).all()
    # colour: out = a x + c per image (an affine map of each image's pixels)
    xs = tf.random.stateless_uniform((3, 16, 16, 1), (4, 4), -1, 1)
    y = diff_augment(xs, _rng(9), ("color",)).numpy()
    for xi, yi in zip(xs.numpy().reshape(3, -1), y.reshape(3, -1), strict=True):
        a, c = np.polyfit(xi, yi, 1)
        np.testing.assert_allclose(yi, a * xi + c, atol=1e-5)
        assert 0.5 <= a <= 1.5


def test_gradients_reach_the_generator_through_the_augmentation() -> None:
    cfg = recipe_config("paper", **CONV_TINY)
    g, d = build_models(cfg)
    z = tf.random.stateless_normal((4, 8), (0, 1))
    y = tf.constant([0, 1, 0, 1])
    with tf.GradientTape() as tape:
        xa = diff_augment(g([z, y], training=True), _rng(), ("color", "translation", "cutout"))
        loss = tf.reduce_mean(d([xa, y], training=True))
    grads = tape.gradient(loss, g.trainable_variables)
    assert all(gr is not None for gr in grads)
    assert sum(float(tf.reduce_sum(tf.abs(gr))) for gr in grads) > 0


# ---------------------------------------------------------------- EMA


def test_ema_equals_the_closed_form_on_a_toy_parameter_sequence() -> None:
    """ema_T = prod(d) w_0 + sum_t (1 - d_t) prod_{s > t} d_s w_t, with d_t from the warm-up."""

    class One(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.w = self.add_weight(shape=(3,), initializer="zeros")

    gen, ema = One(), One()
    ws = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    gen.w.assign(ws[0])
    ema.w.assign(ws[0])
    decay = 0.9
    for t in range(1, 40):
        gen.w.assign(ws[t])
        update_ema(ema, gen, t, decay)
    d = np.array([min(decay, (1 + t) / (10 + t)) for t in range(1, 40)])
    want = np.prod(d) * ws[0].astype(np.float64)
    for t in range(1, 40):
        want += (1 - d[t - 1]) * np.prod(d[t:]) * ws[t]
    np.testing.assert_allclose(ema.w.numpy(), want, rtol=1e-5, atol=1e-6)
    assert float(ema_decay_at(1.0, 0.999)) == pytest.approx(2 / 11)
    assert float(ema_decay_at(1e6, 0.999)) == pytest.approx(0.999)


@pytest.mark.parametrize("recipe", ["paper+ema+augment", "conv"])
def test_resume_equals_uninterrupted_for_every_recipe(recipe: str, tmp_path: Path) -> None:
    """EMA weights, its step count, LeCam anchors and the augmentation RNG survive resume."""
    if recipe == "conv":
        over = {**CONV_TINY, "ema_decay": 0.9, "augment": "color,translation,cutout",
                "spectral_norm": True, "lecam": 0.1, "r1": 1.0, "conv_g_noise": True,
                "conv_g_output": "skip", "conv_g_sle": True, "sampling": "balanced",
                "conv_g_channels": (16, 8, 8, 4),  # 4 levels: one SLE gate
                "conv_d_channels": (8, 16, 16, 16), "conv_d_patch": 1.0,
                "conv_d_recon": 1.0}  # fmt: skip
    else:
        over = {**TINY, "ema_decay": 0.9, "augment": "color,translation,cutout",
                "sampling": "balanced"}  # fmt: skip
    over = {**over, "iterations": 8, "checkpoint_interval": 4}
    ws_a = make_workspace(tmp_path / "a")
    ws_b = make_workspace(tmp_path / "b")
    train(ws_a, recipe_config("paper", **over), name="r", quiet=True)
    train(ws_b, recipe_config("paper", **{**over, "iterations": 4}), name="r", quiet=True)
    resume(ws_b, "r", iterations=8, quiet=True)
    a = read_checkpoint(find_latest(ws_a.runs_dir / "r")).arrays  # type: ignore[arg-type]
    b = read_checkpoint(find_latest(ws_b.runs_dir / "r")).arrays  # type: ignore[arg-type]
    assert any(k.startswith("ema.") for k in a) and any(k.startswith("aux.") for k in a)
    if recipe == "conv":  # the noise inputs' strengths and the skips' 1x1 convs are saved too
        plain, plain_d = build_models(recipe_config("paper", **{
            **over, "conv_g_noise": False, "conv_g_output": "last", "conv_g_sle": False,
            "conv_d_patch": 0.0, "conv_d_recon": 0.0}))  # fmt: skip
        n_g = sum(k.startswith("g.") for k in a)
        levels = len(over["conv_g_channels"]) - 1
        # a strength per level; a skip's kernel and bias per level; one gate's two Dense
        assert n_g == len(plain.weights) + levels + 2 * levels + 4
        # the patch head's kernel, bias and class table; 2 decoders x 4 convs x kernel, bias
        assert sum(k.startswith("d.") for k in a) == len(plain_d.weights) + 3 + 16
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------- conv models


def test_conv_shapes_at_224_and_tiny() -> None:
    cfg = TrainConfig(mixed_precision="none")  # the default recipe's networks
    g = ConvGenerator(cfg)
    d = ProjectionDiscriminator(cfg)
    x = g([tf.zeros((2, 128)), tf.constant([0, 1])])
    assert x.shape == (2, 224, 224, 1) and float(tf.reduce_max(tf.abs(x))) <= 1.0
    assert d([x, tf.constant([0, 1])]).shape == (2,)
    tiny = recipe_config("paper", **CONV_TINY)
    gt, dt = build_models(tiny)
    xt = gt([tf.zeros((3, 8)), tf.constant([0, 1, 1])])
    assert xt.shape == (3, 16, 16, 1)


@pytest.mark.parametrize("upsample,output,sle", [
    ("resize", "last", False), ("bilinear", "last", False), ("transposed", "last", False),
    ("resize", "skip", True)])  # fmt: skip
def test_conv_flop_count_equals_the_sum_over_the_built_layers(upsample: str, output: str,
                                                              sle: bool) -> None:  # fmt: skip
    """The registry's FLOP count of the default conv networks (and its variants),
    derived independently: run each layer of the BUILT networks on one 224 px sample, read
    its kernel and output side, and add 2 * (MACs) per layer: a Dense (n, m) does n*m; a
    k x k conv to (H, W, cout) does H*W*k*k*cin*cout; a stride-2 transposed conv from
    (s, s, cin) does s*s*k*k*cin*cout (every input pixel scatters a k x k x cout block)."""
    cfg = TrainConfig(mixed_precision="none", conv_upsample=upsample, conv_g_output=output,
                      conv_g_sle=sle)  # fmt: skip
    g, d = build_models(cfg)
    want_g = 2 * int(np.prod(g.fc.kernel.shape))  # [z; E(y)] (2L) -> 7 * 7 * c0
    for gate in g.sle.values():  # Dense (16 a -> c) and (c -> c)
        want_g += 2 * int(np.prod(gate.w1.kernel.shape) + np.prod(gate.w2.kernel.shape))
    h = tf.zeros((1, int(g.s0), int(g.s0), cfg.conv_g_channels[0]))
    for i, up in enumerate(g.ups):
        if g.to_image:  # the skip's 1x1 conv to one channel at this level's side
            k, _, cin, cout = g.to_image[i].kernel.shape
            want_g += 2 * int(h.shape[1]) ** 2 * k * k * cin * cout
        side_in, h = int(h.shape[1]), up(h)
        if upsample != "transposed":  # x2 resize, then a k x k conv at the output side
            k, _, cin, cout = up.layers[-1].kernel.shape
            want_g += 2 * int(h.shape[1]) ** 2 * k * k * cin * cout
        else:  # Keras keeps a transposed kernel as (k, k, cout, cin)
            k, _, cout, cin = up.kernel.shape
            want_g += 2 * side_in**2 * k * k * cin * cout
    k, _, cin, cout = g.out.kernel.shape
    want_g += 2 * int(h.shape[1]) ** 2 * k * k * cin * cout
    want_d, x = 0, tf.zeros((1, 224, 224, 1))
    for conv in d.convs:
        x = conv(x)
        k, _, cin, cout = conv.kernel.shape
        want_d += 2 * int(x.shape[1]) ** 2 * k * k * cin * cout
    assert forward_flops(cfg) == (want_g, want_d)
    assert len(g.to_image) == (5 if output == "skip" else 0)
    assert sorted(g.sle) == ([3, 4, 5] if sle else [])  # 56, 112, 224 px
    if upsample != "transposed":  # the figures conv.py's docstring gives (G ~0.59, D ~0.21)
        assert round(want_g / 1e9, 2) == 0.59 and round(want_d / 1e9, 2) == 0.21


@pytest.mark.parametrize("head", ["sum", "flatten"])
def test_d_head_sum_ignores_where_a_blob_sits_and_flatten_sees_it(head: str) -> None:
    """A blob on a zero background, moved by a multiple of D's total stride (4 at 32 px with
    two stride-2 convs) and kept clear of the borders, shifts every feature map by whole
    positions while the background positions keep one constant feature vector: the sum over
    positions is unchanged (up to float rounding), so the sum head cannot see the move. The
    flatten head weighs each position on its own and must see it."""
    cfg = recipe_config("paper", **{**CONV_TINY, "image_size": 32, "conv_d_channels": (8, 16),
                                    "conv_d_head": head})  # fmt: skip
    d = ProjectionDiscriminator(cfg)
    x = np.zeros((4, 32, 32, 1), np.float32)  # B = 4: one minibatch-stddev group
    x[:, 8:14, 9:13] = 1.0
    moved = np.roll(x, (8, 4), axis=(1, 2))  # stays 4+ px off every border
    y = tf.constant([0, 0, 0, 0])
    a, b = d([tf.constant(x), y]).numpy(), d([tf.constant(moved), y]).numpy()
    if head == "sum":
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    else:
        assert np.abs(a - b).min() > 1e-3
        assert d.embed.embeddings.shape == (2, 8 * 8 * (16 + 1))  # s * s * (d5 + mbstd)
        # a side the strides do not divide: "same" convs round up, 28 -> 14 -> 7 -> 4
        odd = recipe_config("paper", **{**CONV_TINY, "image_size": 28,
                                        "conv_d_channels": (8, 16, 32), "conv_d_head": head})
        assert ProjectionDiscriminator(odd)([tf.zeros((4, 28, 28, 1)), y]).shape == (4,)


def _patch_cfg(**over: object) -> TrainConfig:
    """A tiny conv config whose D has the D_PATCH_LEVEL convs the patch head needs."""
    return recipe_config("paper", **{**CONV_TINY, "conv_d_channels": (8, 16, 16),
                                     "conv_d_patch": 1.0, **over})  # fmt: skip


def _numpy_patches(d: ProjectionDiscriminator, x: tf.Tensor, k: np.ndarray,
                   s: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The patch logits w . h + b + (E(k) [+ E_src(s)]) . h in numpy, h = D's map after conv
    D_PATCH_LEVEL computed from its own layers."""
    h = x
    for conv in d.convs[:D_PATCH_LEVEL]:
        h = tf.nn.leaky_relu(conv(h), d.cfg.leaky_slope)
    h = h.numpy()
    e = d.patch[1].embeddings.numpy()[k]
    if s is not None:
        e = e + d.patch[2].embeddings.numpy()[s]
    dense = d.patch[0]
    return (h @ dense.kernel.numpy())[..., 0] + dense.bias.numpy()[0] + np.einsum(
        "bijc,bc->bij", h, e)


def test_patch_head_starts_as_the_plain_d_and_equals_its_formula() -> None:
    """--conv-d-patch adds weights after all others (the plain D's weights and logits are
    unchanged) and its logit per position is w . h + b + E(y) . h on D's map after conv 3,
    recomputed in numpy from the layers' own weights; with cells E(y) is the class part plus
    the source part."""
    cfg = _patch_cfg()
    d, plain = ProjectionDiscriminator(cfg), ProjectionDiscriminator(cfg.replace(conv_d_patch=0.0))
    x = tf.random.stateless_normal((4, 16, 16, 1), (3, 4))
    k = np.array([0, 1, 1, 0])
    y = tf.constant(k, tf.int32)
    logits, patches = d([x, y], with_patches=True)
    np.testing.assert_array_equal(plain([x, y]).numpy(), logits.numpy())
    np.testing.assert_array_equal(d([x, y]).numpy(), logits.numpy())
    assert len(d.weights) == len(plain.weights) + 3  # Dense kernel, bias; the class table
    for a, b in zip(plain.weights, d.weights, strict=False):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert patches.shape == (4, 2, 2)  # 16 -> 8 -> 4 -> 2
    np.testing.assert_allclose(patches.numpy(), _numpy_patches(d, x, k), rtol=1e-5, atol=1e-6)
    src = np.array([1, 0, 1, 1])
    dc = ProjectionDiscriminator(cfg.replace(condition="class,source", sources=("a", "b")))
    _, pc = dc([x, tf.constant(cells.encode(k, src, 2))], with_patches=True)
    assert len(dc.patch) == 3  # + the source table
    np.testing.assert_allclose(pc.numpy(), _numpy_patches(dc, x, k, src), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="conv-d-patch"):
        plain([x, y], with_patches=True)
    with pytest.raises(InputError, match="conv-d-patch reads D's map after its conv number 3"):
        recipe_config("paper", **{**CONV_TINY, "conv_d_patch": 1.0})  # D has 2 convs
    with pytest.raises(InputError, match="conv_d_patch, conv_d_recon and conv_d_input bands "
                       "apply to --arch conv"):
        recipe_config("paper", conv_d_patch=1.0)


def test_patch_head_judges_each_patch_where_it_is() -> None:
    """A blob moved by D's stride at the patch map (8 px: three stride-2 convs) moves the patch
    logits by one position, unchanged, wherever neither receptive field (22 px) meets the
    border; the whole-image (flatten) logit changes: the patch head sees local content, not
    where it sits."""
    cfg = _patch_cfg(image_size=64, conv_d_channels=(8, 16, 16, 16))
    d = ProjectionDiscriminator(cfg)
    x = np.zeros((4, 64, 64, 1), np.float32)
    x[:, 24:30, 25:29] = 1.0
    moved = np.roll(x, (8, 8), axis=(1, 2))
    y = tf.constant([0, 0, 1, 1])
    la, pa = d([tf.constant(x), y], with_patches=True)
    lb, pb = d([tf.constant(moved), y], with_patches=True)
    assert pa.shape == (4, 8, 8)
    np.testing.assert_allclose(pb.numpy()[:, 3:6, 3:6], pa.numpy()[:, 2:5, 2:5], rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    assert np.abs(pb.numpy() - pa.numpy()).max() > 1e-3  # and the map did change
    assert np.abs(lb.numpy() - la.numpy()).min() > 1e-4


def test_patch_term_enters_both_updates_and_vanishes_with_its_weight() -> None:
    """One step from the same seed: a vanishing patch weight gives the plain step's G and D
    (the patch head draws its seeds last and no random number of the step); weight 1 changes
    D's update (D steps first: only D's loss can do that) and, with D's learning rate at 0 so
    that G meets the same D either way, G's update: the term is in both losses."""
    img, labels = toy_images()

    def one_step(weight: float, d_lr: float = 2e-4) -> tuple[list[np.ndarray], ...]:
        st = build_state(_patch_cfg(conv_d_patch=weight))
        st.d_opt.learning_rate.assign(d_lr)
        make_step(st, *resident_dataset(img, labels))(0.0, False)
        convs = [w.numpy() for c in st.disc.convs for w in c.weights]  # created first
        return [v.numpy() for v in st.gen.weights], convs

    def differ(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        return max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))

    (g0, d0), (g_tiny, d_tiny), (_, d1) = one_step(0.0), one_step(1e-9), one_step(1.0)
    for a, b in zip(g0 + d0, g_tiny + d_tiny, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert differ(d0, d1) > 1e-5
    (g0, d0), (g1, d1) = one_step(0.0, d_lr=0.0), one_step(1.0, d_lr=0.0)
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in d0]),
                                  np.concatenate([a.ravel() for a in d1]))  # fmt: skip
    assert differ(g0, g1) > 1e-5


@pytest.mark.parametrize("upsample", ["resize", "bilinear"])
def test_resize_upsampling_repeats_pixels_or_interpolates(upsample: str) -> None:
    """With its 3x3 conv made the identity (centre tap 1 on the diagonal, bias 0), an Up
    layer shows its x2 resize alone. Of a ramp 0, 1, 2, ... along x: nearest gives 2 x 2
    blocks (0, 0, 1, 1, ...: steps of 0 and 1 alternating), bilinear a ramp of slope 1/2
    away from the border (half-pixel centres: 0, 0.25, 0.75, 1.25, ...)."""
    assert set(UPSAMPLES) == {"transposed", *RESIZE_UPSAMPLES}  # config's list, conv's map
    cfg = recipe_config("paper", **{**CONV_TINY, "conv_upsample": upsample})
    up = ConvGenerator(cfg).ups[0]
    x = tf.tile(tf.range(4, dtype=tf.float32)[None, None, :, None], (1, 4, 1, 16))
    up(x)  # build
    conv = up.layers[-1]
    k = np.zeros(conv.kernel.shape, np.float32)
    k[1, 1] = np.eye(16, conv.kernel.shape[-1])
    conv.kernel.assign(k)
    conv.bias.assign(np.zeros(conv.bias.shape, np.float32))
    row = up(x).numpy()[0, 4, :, 0]
    steps = np.diff(row)[1:-1]  # not the ends: bilinear clamps to the edge pixel there (0.25)
    if upsample == "resize":
        np.testing.assert_allclose(np.diff(row), [0, 1, 0, 1, 0, 1, 0], atol=1e-6)
    else:
        np.testing.assert_allclose(steps, 0.5, atol=1e-6)


def test_noise_inputs_start_as_the_plain_generator_and_keep_an_image_a_function_of_z() -> None:
    """--conv-g-noise: strengths start at 0 and the layers are created last, so at
    initialisation G computes exactly what G without them computes (same seeds, same weights).
    With strengths set, the images change, yet each stays a function of its own (z, y): the
    same z gives the same image in another batch, and the maps are standard normal."""
    cfg = recipe_config("paper", **CONV_TINY)
    plain, noisy = ConvGenerator(cfg), ConvGenerator(cfg.replace(conv_g_noise=True))
    z = tf.random.stateless_normal((4, 8), (5, 6))
    y = tf.constant([0, 1, 1, 0])
    a = noisy([z, y]).numpy()
    np.testing.assert_array_equal(a, plain([z, y]).numpy())
    assert len(noisy.noise_inputs) == len(cfg.conv_g_channels) - 1
    for layer in noisy.noise_inputs:
        layer.strength.assign(tf.ones_like(layer.strength))
    b = noisy([z, y]).numpy()
    assert np.abs(b - a).max() > 1e-2
    np.testing.assert_array_equal(b, noisy([z, y]).numpy())  # no hidden random state
    other = noisy([tf.concat([z[2:3], z[:1]], 0), tf.constant([1, 0])]).numpy()
    np.testing.assert_allclose(other[1], b[0], atol=1e-5)  # not the batch: its own z
    np.testing.assert_allclose(other[0], b[2], atol=1e-5)
    (m,) = z_noise(tf.random.stateless_normal((2, 8), (7, 8)), [256])  # 2 x 65,536 draws
    m = m.numpy()
    assert m.shape == (2, 256, 256, 1)
    for s in m:  # mean 0 (sd 1/256 per map: 5 sd = 0.02), variance 1 (sd ~ sqrt(2/n))
        assert abs(float(s.mean())) < 0.02 and abs(float(s.var()) - 1.0) < 0.03
    assert abs(float(np.corrcoef(m[0].ravel(), m[1].ravel())[0, 1])) < 0.02
    bf16 = ConvGenerator(cfg.replace(conv_g_noise=True, mixed_precision="bf16"))
    assert bf16([z, y]).shape == (4, 16, 16, 1)  # Keras hands the maps over in bf16 there


def test_output_skips_start_as_the_plain_generator_and_upsample_bilinearly() -> None:
    """--conv-g-output skip: the 1x1 convs start at zero and are created last, so at
    initialisation G computes exactly what G without them computes; their gradients are not
    zero, so training can use them. The coarse image is carried up by a bilinear x2 that
    equals OpenCV's INTER_LINEAR (an independent implementation: half-pixel centres, edges
    replicated), and a constant image written at the coarsest level reaches the output as
    that constant added before the tanh."""
    cfg = recipe_config("paper", **CONV_TINY)
    plain, skip = ConvGenerator(cfg), ConvGenerator(cfg.replace(conv_g_output="skip"))
    z = tf.random.stateless_normal((4, 8), (5, 6))
    y = tf.constant([0, 1, 1, 0])
    a = plain([z, y]).numpy()
    np.testing.assert_array_equal(skip([z, y]).numpy(), a)
    assert len(skip.to_image) == len(cfg.conv_g_channels) - 1
    w = tf.random.stateless_normal((4, 16, 16, 1), (1, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(skip([z, y]) * w)
    for grad in tape.gradient(loss, [t.kernel for t in skip.to_image]):
        assert float(tf.reduce_max(tf.abs(grad))) > 1e-4
    skip.to_image[0].bias.assign([0.3])  # a constant 4 x 4 image, carried up to 16 x 16
    np.testing.assert_allclose(np.arctanh(skip([z, y]).numpy()), np.arctanh(a) + 0.3,
                               atol=1e-4)  # fmt: skip
    x = np.random.default_rng(0).standard_normal((7, 7)).astype(np.float32)
    want = cv2.resize(x, (14, 14), interpolation=cv2.INTER_LINEAR)
    got = bilinear_x2(tf.constant(x[None, :, :, None])).numpy()[0, :, :, 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    bf16 = ConvGenerator(cfg.replace(conv_g_output="skip", mixed_precision="bf16"))
    assert bf16([z, y]).shape == (4, 16, 16, 1)


def test_skip_excitation_gates_each_channel_by_the_small_map_alone() -> None:
    """--conv-g-sle's gate, against numpy: the 4 x 4 area average of an 8 x 8 map is the
    mean of each 2 x 2 block; flattened row, column, channel; Dense, swish, Dense, sigmoid;
    one factor per sample and channel, the same at every position of the big map, in (0, 1),
    and a sample's gate does not depend on the rest of the batch."""
    cfg = recipe_config("paper", **CONV_TINY)
    gate = SkipExcitation(6, SeededInit(cfg.seed, 9))
    rng = np.random.default_rng(1)
    small = rng.standard_normal((3, 8, 8, 5)).astype(np.float32)
    big = rng.uniform(0.5, 1.5, (3, 32, 32, 6)).astype(np.float32)
    out = gate(tf.constant(small), tf.constant(big)).numpy()
    p = small.reshape(3, 4, 2, 4, 2, 5).mean(axis=(2, 4)).reshape(3, 80)
    w1, b1 = gate.w1.kernel.numpy(), gate.w1.bias.numpy()
    w2, b2 = gate.w2.kernel.numpy(), gate.w2.bias.numpy()
    hid = p @ w1 + b1
    want = 1 / (1 + np.exp(-((hid / (1 + np.exp(-hid))) @ w2 + b2)))  # (3, 6)
    np.testing.assert_allclose(out / big, np.broadcast_to(want[:, None, None, :], big.shape),
                               rtol=1e-5)  # fmt: skip
    assert 0 < want.min() and want.max() < 1
    for side in (7, 14, 28, 5):  # the area average at G's sides, against OpenCV's
        x = rng.standard_normal((side, side)).astype(np.float32)
        a = area_matrix(side, 4)
        np.testing.assert_allclose(a @ x @ a.T, cv2.resize(x, (4, 4), interpolation=cv2.INTER_AREA),
                                   atol=1e-5)  # fmt: skip
    alone = gate(tf.constant(small[1:2]), tf.constant(big[1:2])).numpy()
    np.testing.assert_allclose(alone[0], out[1], rtol=1e-6)
    g = ConvGenerator(recipe_config("paper", **{**CONV_TINY, "conv_g_channels": (16, 8, 8, 4),
                                                "conv_g_sle": True}))  # fmt: skip
    z = tf.random.stateless_normal((2, 8), (5, 6))
    assert g([z, tf.constant([0, 1])]).shape == (2, 16, 16, 1) and sorted(g.sle) == [3]
    with pytest.raises(InputError, match="conv-g-sle"):  # 3 levels: no gate to make
        recipe_config("paper", **{**CONV_TINY, "conv_g_sle": True})


def test_class_conditioning_changes_the_output() -> None:
    cfg = recipe_config("paper", **CONV_TINY)
    g, d = build_models(cfg)
    for layer in g.norms:  # trained gamma/beta differ per class; give them distinct values
        layer.beta.assign(tf.random.stateless_normal(layer.beta.shape, (1, 1)))
    z = tf.random.stateless_normal((2, 8), (3, 3))
    a = g([z, tf.constant([0, 0])]).numpy()
    b = g([z, tf.constant([1, 1])]).numpy()
    assert np.abs(a - b).max() > 1e-3
    d.embed.embeddings.assign(tf.random.stateless_normal(d.embed.embeddings.shape, (2, 2)))
    x = tf.constant(a)
    d0, d1 = d([x, tf.constant([0, 0])]).numpy(), d([x, tf.constant([1, 1])]).numpy()
    assert np.abs(d0 - d1).max() > 0


def test_r1_penalty_equals_the_squared_weight_norm_of_a_linear_discriminator() -> None:
    """D(x) = sum(w * x) has grad_x D = w for every x, so E|grad|^2 = sum(w^2) exactly; and
    D(x) = sum(x^2) has grad 2x, so the penalty is 4 * mean_i sum(x_i^2)."""
    w = tf.random.stateless_normal((1, 5, 5, 1), (4, 4))
    x = tf.random.stateless_normal((3, 5, 5, 1), (5, 5))
    y = tf.constant([0, 1, 1])

    def linear(inputs: list, training: bool = False) -> tf.Tensor:
        return tf.reduce_sum(inputs[0] * w, axis=[1, 2, 3])

    def square(inputs: list, training: bool = False) -> tf.Tensor:
        return tf.reduce_sum(tf.square(inputs[0]), axis=[1, 2, 3])

    assert float(r1_penalty(linear, x, y)) == pytest.approx(float(tf.reduce_sum(w**2)), 1e-5)
    want = 4 * np.mean(np.sum(x.numpy() ** 2, axis=(1, 2, 3)))
    assert float(r1_penalty(square, x, y)) == pytest.approx(want, rel=1e-5)


def test_minibatch_stddev_is_per_group_and_zero_for_copies() -> None:
    h = tf.concat([tf.ones((4, 2, 2, 3)), tf.random.stateless_normal((4, 2, 2, 3), (0, 0))], 0)
    out = minibatch_stddev(h, 4).numpy()
    assert out.shape == (8, 2, 2, 4)
    assert np.allclose(out[:4, ..., 3], 1e-4, atol=1e-3)  # sqrt(eps): identical samples
    want = np.sqrt(np.var(h.numpy()[4:], axis=0) + 1e-8).mean()
    np.testing.assert_allclose(out[4:, ..., 3], want, rtol=1e-5)


def test_one_conv_step_sequence_reduces_d_loss_on_a_separable_toy_set() -> None:
    img, labels = toy_images()
    cfg = recipe_config("paper", **{**CONV_TINY, "lr": 2e-3})
    st = build_state(cfg)
    step = make_step(st, *resident_dataset(img, labels))
    g_before = [v.numpy().copy() for v in st.gen.weights]
    first = step(0.0, False)["d_loss"]
    for v, w in zip(st.gen.weights, g_before, strict=True):  # hold G fixed: D's problem only
        v.assign(w)
    losses = []
    for _ in range(15):
        losses.append(step(0.0, False)["d_loss"])
        for v, w in zip(st.gen.weights, g_before, strict=True):
            v.assign(w)
    assert np.mean(losses[-5:]) < first


# ---------------------------------------------------------------- checkpoint scoring


def test_score_criterion_prefers_eligible_then_low_kid() -> None:
    """Runs scored before the C2ST column (NaN): eligibility, then KID, as before."""
    s = scoring.Score
    a = s(1, "a", kid=0.01, kid_std=0, kept=0.5, memorised=0.0, near_duplicate=0)  # not eligible
    b = s(2, "b", kid=0.05, kid_std=0, kept=0.9, memorised=0.0, near_duplicate=0)
    c = s(3, "c", kid=0.03, kid_std=0, kept=0.8, memorised=0.0, near_duplicate=0)
    d = s(4, "d", kid=0.00, kid_std=0, kept=0.9, memorised=0.05, near_duplicate=0)  # memorises
    assert scoring.best_of([a, b, c, d]) == c
    assert scoring.best_of([a, d]) == d  # none eligible: lowest KID


def test_score_criterion_ranks_eligible_checkpoints_by_c2st_then_kid() -> None:
    s = scoring.Score
    ok = dict(kid_std=0, kept=0.9, memorised=0.0, near_duplicate=0)
    a = s(1, "a", kid=0.00, **ok, c2st=0.95)  # best KID, but a probe tells it from real
    b = s(2, "b", kid=0.05, **ok, c2st=0.61)
    c = s(3, "c", kid=0.03, **ok, c2st=0.605)  # same 0.02 step as b: KID decides
    e = s(5, "e", kid=0.01, **ok, c2st=1.0)
    f = s(6, "f", kid=0.02, **ok, c2st=0.99998)  # rounds to e's step: KID decides
    d = s(4, "d", kid=0.00, kid_std=0, kept=0.5, memorised=0.0, near_duplicate=0, c2st=0.5)
    assert scoring.best_of([a, b, c, d]) == c  # d is not eligible, whatever its AUC
    assert scoring.best_of([a, b]) == b
    assert scoring.best_of([e, f]) == e
    assert scoring.Score.from_row(c.row()).c2st == pytest.approx(0.605)


def _phantoms(n: int, seed: int, size: int = 64) -> np.ndarray:
    """n procedural chest phantoms (cxraug.prep.phantom) as uint8 (n, size, size)."""
    import cv2

    from cxraug.prep.phantom import make_phantom

    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(make_phantom(rng, "covid", (128, 128)), (size, size),
                                interpolation=cv2.INTER_AREA) for _ in range(n)])  # fmt: skip


def test_checkpoint_criterion_avoids_a_blurred_and_a_one_template_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three checkpoints of a toy run whose sampled images are swapped for known sets: fresh
    phantoms (like the real ones), the same blurred (Gaussian sigma 2 px at 64), and one
    phantom repeated with small shifts and noise. `best` must be the fresh one. KID runs on
    4x4 block means, which a blur leaves as they are (as random-feature KID missed blur on the
    real data): on the blurred set KID is as good as on the fresh one, so the C2ST decides."""
    import cv2

    from cxraug.gan import loop
    from cxraug.metrics import features as feats

    def means(x: np.ndarray) -> np.ndarray:  # (B, 299, 299, 3) -> (B, 16) block means
        return x[:, :296, :296, 0].reshape(len(x), 4, 74, 4, 74).mean((2, 4)).reshape(len(x), -1)

    blind = feats.FeatureExtractor("block-means", True, None, 16, means)

    real = _phantoms(64, 0)
    fresh = _phantoms(64, 1)
    blurred = np.stack([cv2.GaussianBlur(x, (0, 0), 2.0) for x in fresh])
    rng = np.random.default_rng(2)
    one = np.stack([np.clip(np.roll(fresh[0], rng.integers(-2, 3, 2), (0, 1)).astype(float)
                            + rng.normal(0, 3, fresh[0].shape), 0, 255).astype(np.uint8)
                    for _ in range(64)])  # fmt: skip
    sets = {4: blurred, 8: fresh, 12: one}
    monkeypatch.setattr(loop, "_make_scorer", lambda cfg, ds, extractor: scoring.Scorer(
        real.astype(np.float32) / 127.5 - 1, [f"r{i}" for i in range(64)], 1, 64,
        cfg.latent_dim, 0, extractor=blind))  # fmt: skip
    monkeypatch.setattr(scoring.Scorer, "__call__",
                        lambda self, gen, it, ck: self.score_images(sets[it], it, ck))
    ws = make_workspace(tmp_path)
    over = {**CONV_TINY, "iterations": 12, "checkpoint_interval": 4, "keep_checkpoints": 1,
            "score_samples": 64}  # fmt: skip
    train(ws, recipe_config("paper", **over), name="c", quiet=True)
    run = ws.runs_dir / "c"
    got = {s.iteration: s for s in scoring.ScoreLog(ws.run("c"), 99).scores}
    assert got[8].c2st < 0.7 and got[4].c2st > 0.85 and got[12].c2st > 0.85, got
    assert got[4].kid <= got[8].kid + 0.002, got  # KID alone would not avoid the blur
    best = find_best(run)
    assert best is not None and best.name == "ckpt-0000008.npz"


def test_score_precision_recall_copies_vs_blank_and_old_logs_read_as_nan() -> None:
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (12, 16, 16)).astype(np.float32)
    sc = scoring.Scorer(real, [f"r{i}" for i in range(12)], 1, 12, 8, 0,
                        extractor=tiny_extractor())  # fmt: skip
    # the real images themselves: every sample is a real point, inside its own k-NN ball
    # (precision 1), and every real ball holds a sample (recall 1)
    same = sc.score_images(sc.real_u8.copy(), 1, "a")
    assert same.precision == 1.0 and same.recall == 1.0
    # one constant image: its features (means 0, stds 0) lie outside every real ball
    blank = sc.score_images(np.full((12, 16, 16), 128, np.uint8), 2, "b")
    assert blank.precision == 0.0 and blank.recall == 0.0
    # fewer samples than PR_K + 1: not computable, logged as NaN rather than a made-up value
    few = sc.score_images(sc.real_u8[: scoring.PR_K], 3, "c")
    assert np.isnan(few.precision) and np.isnan(few.recall)
    # a scores.csv written before precision was logged still reads (resume of an older run)
    old = {"iteration": "5", "checkpoint": "x", "kid": "0.1", "kid_std": "0", "kept": "1",
           "memorised": "0", "near_duplicate": "0", "eligible": "1"}  # fmt: skip
    assert np.isnan(scoring.Score.from_row(old).precision)
    back = scoring.Score.from_row(same.row())  # the CSV keeps 6 significant digits
    assert (back.precision, back.recall) == (1.0, 1.0)


def test_best_pointer_avoids_a_deliberately_worse_checkpoint_and_generate_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(tmp_path, n=48)
    write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
    real_call = scoring.Scorer.__call__
    worse_at = 4

    def sabotaged(self: scoring.Scorer, gen: object, iteration: int, ckpt: str) -> scoring.Score:
        if iteration == worse_at:  # this checkpoint's images are made deliberately bad
            return self.score_images(np.zeros((self.n, 16, 16), np.uint8), iteration, ckpt)
        return real_call(self, gen, iteration, ckpt)

    monkeypatch.setattr(scoring.Scorer, "__call__", sabotaged)
    over = {**CONV_TINY, "iterations": 12, "checkpoint_interval": 4, "keep_checkpoints": 1,
            "score_samples": 16, "ema_decay": 0.9}  # fmt: skip
    train(ws, recipe_config("paper", **over), name="s", quiet=True, extractor=tiny_extractor())
    run = ws.runs_dir / "s"
    rows = (run / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,checkpoint,kid") and len(rows) == 4
    assert "precision,recall" in rows[0]
    best = find_best(run)
    assert best is not None and best.name != "ckpt-0000004.npz"
    assert (run / "scores.png").is_file()
    # the best file survives pruning (keep 1) next to the latest
    names = {p.name for p in list_checkpoints(run)}
    assert best.name in names and "ckpt-0000012.npz" in names
    res = generate(ws, GenerateConfig(label="covid", n=2, run="s"))
    assert res.checkpoint == best
    latest = generate(ws, GenerateConfig(label="covid", n=2, run="s", checkpoint="latest",
                                         seed=1))  # fmt: skip
    assert latest.checkpoint.name == "ckpt-0000012.npz"


def test_generate_without_scores_uses_latest_and_best_is_an_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
    train(ws, recipe_config("paper", **{**CONV_TINY, "iterations": 2, "checkpoint_interval": 2}),
          name="n", quiet=True)  # fmt: skip
    assert generate(ws, GenerateConfig(n=1, run="n")).checkpoint.name == "ckpt-0000002.npz"
    with pytest.raises(InputError, match="no scored best"):
        generate(ws, GenerateConfig(n=1, run="n", checkpoint="best", seed=2))


def test_cli_recipe_default_is_conv_and_paper_gives_the_papers_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxraug.cli import app

    runner = CliRunner()
    h = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert h.exit_code == 0 and "--recipe" in h.output and "ITERATIONS" in h.output
    # which recipe is the default, how to get the paper's setup, and where the measurements
    # are (issue 21: the ablation table lives in bench/RESULTS.md only)
    flat = " ".join(h.output.split())  # rich wraps at 80 columns
    assert "conv (the default" in flat and "exact setup: --recipe paper" in flat
    assert 'bench/RESULTS.md, "Ablation"' in flat and "413x" not in flat
    assert "scores.csv" in flat and "best" in flat  # what a run writes
    ws = make_workspace(tmp_path)
    small = ["--iterations", "1", "--checkpoint-interval", "1", "--mixed-precision", "none",
             "--score-samples", "0", "-q", "-w", str(ws.root)]  # fmt: skip
    conv = runner.invoke(app, ["train", "--name", "c", "--batch-size", "8", "--dropout", "0.3",
                               "--conv-g-channels", "8,4,4", "--conv-d-channels", "4,8", *small])
    assert conv.exit_code == 0, conv.output
    assert "--dropout only apply to --arch mlp" in conv.output
    cfg = json.loads((ws.runs_dir / "c" / "config.json").read_text())
    assert cfg["recipe"] == "conv" and cfg["arch"] == "conv" and cfg["batch_size"] == 8
    assert cfg["augment"] == TrainConfig().augment  # not given: the recipe's value
    paper = runner.invoke(app, ["train", "--name", "p", "--recipe", "paper", "--g-widths", "8",
                                "--d-widths", "8,8,8,8", "--batch-size", "8", *small])
    assert paper.exit_code == 0, paper.output
    cfg = json.loads((ws.runs_dir / "p" / "config.json").read_text())
    want = {**recipe_config("paper").to_dict(), "g_widths": [8], "d_widths": [8, 8, 8, 8],
            "batch_size": 8, "iterations": 1, "checkpoint_interval": 1,
            "mixed_precision": "none", "image_size": 16}  # fmt: skip
    assert cfg == want  # every other field is the paper's (Table 2)
    bad = runner.invoke(app, ["train", "--recipe", "gan9000", *small])
    assert bad.exit_code == 3 and "unknown recipe" in bad.output
    # 16 px data and the default 6-level generator: say how to fix it
    big = runner.invoke(app, ["train", "--name", "b", *small])
    assert big.exit_code == 3 and "fewer --conv-g-channels" in big.output


def test_checkpoint_scores_use_only_training_images_of_the_scarcest_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Final scores on the test split stay honest only if training never looked at it."""
    from cxraug.core.dataset import Dataset, save_dataset
    from cxraug.core.workspace import Workspace

    img, _ = toy_images(48)
    labels = np.where(np.arange(48) < 32, 0, 1)  # covid (1) is the scarce class
    splits = np.array(["test" if i % 4 == 0 else "train" for i in range(48)])
    ids = np.array([f"{s}/{i}" for i, s in enumerate(splits)])
    save_dataset(tmp_path / "processed" / "dataset.npz", Dataset(img, labels, ids, splits))
    ws = Workspace.at(tmp_path)
    seen: dict[str, object] = {}
    real_init = scoring.Scorer.__init__

    def spy(self: scoring.Scorer, real_images: np.ndarray, real_ids: list[str], label: int,
            *args: object, **kw: object) -> None:  # fmt: skip
        seen.update(ids=list(real_ids), label=label)
        real_init(self, real_images, real_ids, label, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring.Scorer, "__init__", spy)
    train(ws, recipe_config("paper", **{**CONV_TINY, "iterations": 2, "checkpoint_interval": 2,
                                        "score_samples": 8}),
          name="h", quiet=True, extractor=tiny_extractor())  # fmt: skip
    want = [i for i, s, y in zip(ids, splits, labels, strict=True) if s == "train" and y == 1]
    assert seen["label"] == 1 and sorted(seen["ids"]) == sorted(want)  # type: ignore[arg-type]
