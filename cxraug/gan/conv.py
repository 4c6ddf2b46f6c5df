"""The convolutional conditional GAN (`--arch conv`), sized for 224 x 224 x 1 on a CPU budget.

Generator (DCGAN-style, 224 = 7 * 2^5), with c = conv_g_channels = (c0, ..., c5):
    [z (B, L) ; Embedding(C, L)(y)] -> Dense(7*7*c0) -> reshape (B, 7, 7, c0) -> LReLU -> CPN
    -> [Up(c_i) -> LReLU -> CPN] for i = 1..5                            # 14, 28, ..., 224
    -> Conv(1, 3x3) -> tanh                                               # (B, 224, 224, 1)
Up = nearest x2 then Conv(c_i, 3x3) (--conv-upsample resize, the default and the conv recipe's;
`--conv-upsample transposed`, 4x4 stride-2 transposed convolutions, left a checkerboard on
every image, bench/RESULTS.md; `--conv-upsample bilinear` resizes bilinearly instead of
repeating pixels, at the same FLOPs).
With --conv-g-noise each Up is followed by + strength_i * n_i (StyleGAN's noise inputs, Karras
et al. 2019): n_i (B, s, s, 1) a standard-normal map, strength_i (c_i,) learnt, starting at 0
(so the network starts as the one without them). The maps are drawn from a seed taken from
z's own bits (`z_noise`): an image is still a function of (z, y) alone, so generate's seeds,
the EMA copy and the checkpoint scores need no extra state, and no sample depends on its batch.
With --conv-g-output skip (StyleGAN2's output skips, Karras et al. 2020) every level writes
an image of its own, T_i = Conv(1, 1x1)(h_i), and the image is built coarse to fine:
    img_0 = T_0(h_0);  img_i = bilinear_x2(img_{i-1}) + T_i(h_i);  img_5 = ... + Conv(1, 3x3)(h_5)
so the 112 and 224 px levels (16 and 8 channels) add detail to an image the coarse levels
already drew, instead of carrying the whole image through their few channels. The T_i start
at zero and are created last: at initialisation the network is the one without them.
With --conv-g-sle each level j >= 3 is gated by level j - 3 (FastGAN's skip-layer excitation,
Liu et al. 2021; 7 -> 56, 14 -> 112, 28 -> 224 px): h_j <- h_j * sigmoid(W2 swish(W1 P(h_{j-3}))),
P the 4 x 4 area average of the small map, flattened; one gate per channel and sample. The
gates give the fine levels a short path from the coarse content (a gradient path past the
levels between, and a per-image choice of which fine channels to use).
CPN = ClassPixelNorm: h / rms_channels(h) * (1 + gamma[y]) + beta[y]. It normalises each pixel
of each sample on its own: no batch statistics, so training and sampling compute the same
function, samples do not depend on what else is in the batch, and the weight average of
cxraug.gan.ema needs no statistics of its own. gamma and beta condition every level on the class.

Discriminator (projection, Miyato & Koyama 2018), with d = conv_d_channels = (d1, ..., d5):
    x (B, 224, 224, 1) -> [Conv(d_i, 4x4, stride 2) -> LReLU] for i = 1..5   # 112, ..., 7
    -> [minibatch-stddev: + 1 channel]                                      # (B, 7, 7, d5 + 1)
    -> phi = the 7 x 7 map flattened, (B, 7*7*(d5 + 1))   [--conv-d-head sum: summed over
                                                            the positions, (B, d5 + 1)]
    -> logit = w . phi + b + Embedding(C, dim phi)(y) . phi                     # (B,)
The flatten head (the default since 2026-12-05) gives each position its own weights, so D
sees WHERE things are; summed, a G whose lungs merged across the mediastinum cost D nothing
it could see (bench/RESULTS.md "A discriminator that sees the layout").
With --conv-d-input bands, D's first conv reads x and three difference-of-Gaussians bands of
it instead of x alone (`detail_bands`: x - G_1 x, G_1 x - G_3 x, G_3 x - G_8 x, each scaled to
about the pixels' std, config.D_BAND_GAINS): the same information, but detail at the scale of
layout instead of ~1/10 of it, so D's weights on detail, and G's gradient towards it, are not
~10x smaller than those on layout.
With --conv-d-patch W, D also answers per patch (PatchGAN, Isola et al. 2017): its map after
conv D_PATCH_LEVEL (3: (B, 28, 28, d3) at 224 px, each position seeing a 22 px patch) gives
    patch_logit[b, i, j] = w_p . h[b, i, j] + b_p + E_p(y_b) . h[b, i, j]        # (B, 28, 28)
and both losses add W times the same softplus terms averaged over the patches. A patch logit
cannot see the layout, only the local texture around it: a generated set whose layout matches
and whose detail does not (every one measured so far) still loses there. The patch head's
weights are created last (a run without it builds exactly the weights it built before); R1
regularises the whole-image logit only.
With --conv-d-recon W, D also carries FastGAN's two reconstruction decoders (Liu et al. 2021,
their self-supervised D), created after everything else: from its maps after convs
D_RECON_LEVELS = (4, 3) (14 and 28 px at 224),
    whole = Dec_w(h4)                         # (B, H/2, H/2, 1): the image, half size
    part  = Dec_p(quarter q of h3)            # (B, H/2, H/2, 1): quarter q at FULL resolution
each Dec = [nearest x2 -> Conv(D_RECON_WIDTHS[k], 3x3) -> LReLU] x 3 -> Conv(1, 3x3) -> tanh.
The step (cxraug.gan.conv_step) asks for them on the real images only and adds W times their
reconstruction error to D's loss; G never sees them.
Spectral normalisation (--spectral-norm, Miyato et al. 2018) divides each D kernel by its
largest singular value, estimated by one power iteration per training call (two per iteration:
the D and the G step; the vector u is a non-trainable weight, so it is checkpointed and a
resumed run continues the same estimate).

Source conditioning (`--condition class,source`, cxraug.gan.cells): y is a cell
class * S + source and every conditional parameter is a sum of a class part and a source part:
G's input embedding E(class) + E_src(source), each CPN's gamma and beta, and D's projection
(E(class) + E_src(source)) . phi. The source parts are created after everything else, so a
class-only run builds exactly the weights (order, seeds) it built before.

Every level costs about the same where channels halve as resolution doubles: D's stride-2 4x4
convs ~51 MFLOP each (D ~0.21 GFLOP per image forward); G's resize levels ~116 MFLOP each
(G ~0.59 GFLOP; 0.27 with transposed convs). `conv_forward_flops` counts the levels; D's
heads (projection, patch head) add < 1 % and are not counted; --conv-d-recon's decoders,
which run on the real images of D's step only, are not counted either (registered
with the networks and the step, cxraug.gan.conv_step, in cxraug.gan.arch). This module knows
nothing about files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxraug.core.tf_setup import keras, tf
from cxraug.gan.config import (
    D_BAND_GAINS,
    D_BAND_SIGMAS,
    D_PATCH_LEVEL,
    D_RECON_LEVELS,
    D_RECON_WIDTHS,
    SLE_GAP,
    TrainConfig,
    band_radius,
)
from cxraug.gan.layers import SeededInit, dtype_policy, gaussian_blurs

#: --conv-upsample choices that resize x2 then convolve, and the interpolation each resizes
#: with: nearest repeats each pixel into a 2 x 2 block, which the 3x3 conv must smooth out at
#: every level (a suspect for the faint grid on generated images); bilinear hands it a smooth
#: map instead. Measured at 224 px, bilinear lost the grid and the radiograph with it (wavy
#: painted swirls, bench/RESULTS.md "Levers for fine detail"): the default stays nearest.
RESIZE_UPSAMPLES = {"resize": "nearest", "bilinear": "bilinear"}


def base_size(cfg: TrainConfig) -> int:
    """Side of G's first feature map: image_size / 2^(levels)."""
    return cfg.image_size // 2 ** (len(cfg.conv_g_channels) - 1)


class _ClassAffine(keras.layers.Layer):
    """A per-label (1 + gamma[y]) * h + beta[y] on normalised features (gamma, beta start at 0).
    With `num_sources` S > 0 the label is a cell y = class * S + source (cxraug.gan.cells) and
    gamma[y] = gamma[class] + gamma_src[source] (likewise beta): additive factors."""

    def __init__(self, num_classes: int, num_sources: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.num_sources = num_classes, num_sources

    def build(self, input_shape: Any) -> None:
        c = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(self.num_classes, c), initializer="zeros",
                                     name="gamma")  # fmt: skip
        self.beta = self.add_weight(shape=(self.num_classes, c), initializer="zeros",
                                    name="beta")  # fmt: skip
        if self.num_sources:
            self.gamma_src = self.add_weight(shape=(self.num_sources, c), initializer="zeros",
                                             name="gamma_src")  # fmt: skip
            self.beta_src = self.add_weight(shape=(self.num_sources, c), initializer="zeros",
                                            name="beta_src")  # fmt: skip

    def _params(self, y: Any) -> tuple[Any, Any]:
        """(gamma, beta) of each label of y: (B, C) each."""
        if not self.num_sources:
            return tf.gather(self.gamma, y), tf.gather(self.beta, y)
        k, s = split_cell(y, self.num_sources)
        return (tf.gather(self.gamma, k) + tf.gather(self.gamma_src, s),
                tf.gather(self.beta, k) + tf.gather(self.beta_src, s))  # fmt: skip

    def affine(self, h32: Any, y: Any, dtype: Any) -> Any:
        """h32 (B, H, W, C) float32 normalised -> the label-conditional affine, in dtype."""
        gamma, beta = self._params(y)
        g = tf.cast(gamma, tf.float32)[:, None, None, :]
        b = tf.cast(beta, tf.float32)[:, None, None, :]
        return tf.cast(h32 * (1.0 + g) + b, dtype)


def split_cell(y: Any, num_sources: int) -> tuple[Any, Any]:
    """Cells y (B,) int -> (class (B,), source (B,)): y = class * S + source."""
    return tf.math.floordiv(y, num_sources), tf.math.floormod(y, num_sources)


class ClassPixelNorm(_ClassAffine):
    """(B, H, W, C), y (B,) -> per-pixel RMS normalisation with a class-conditional affine."""

    def call(self, h: Any, y: Any) -> Any:
        h32 = tf.cast(h, tf.float32)  # statistics in fp32 under mixed precision
        h32 = h32 * tf.math.rsqrt(tf.reduce_mean(tf.square(h32), -1, keepdims=True) + 1e-8)
        return self.affine(h32, y, h.dtype)


class ClassBatchNorm(_ClassAffine):
    """BatchNorm with a class-conditional affine (BigGAN's conditional BN): batch statistics
    in training, moving statistics (momentum cfg.conv_bn_momentum) when sampling."""

    def __init__(self, num_classes: int, momentum: float, num_sources: int = 0,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(num_classes, num_sources, **kwargs)
        self.momentum = momentum

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        c = int(input_shape[-1])
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False,
                                           name="moving_mean")  # fmt: skip
        self.moving_variance = self.add_weight(shape=(c,), initializer="ones",
                                               trainable=False, name="moving_variance")

    def call(self, h: Any, y: Any, training: bool = False) -> Any:
        h32 = tf.cast(h, tf.float32)
        if training:
            mean, var = tf.nn.moments(h32, axes=[0, 1, 2])
            m = self.momentum
            f32 = tf.float32  # the variables read as the compute dtype under mixed precision
            self.moving_mean.assign(m * tf.cast(self.moving_mean, f32) + (1 - m) * mean)
            self.moving_variance.assign(m * tf.cast(self.moving_variance, f32) + (1 - m) * var)
        else:
            mean = tf.cast(self.moving_mean, tf.float32)
            var = tf.cast(self.moving_variance, tf.float32)
        return self.affine((h32 - mean) * tf.math.rsqrt(var + 1e-5), y, h.dtype)


class NoiseInput(keras.layers.Layer):
    """(B, H, W, C), noise (B, H, W, 1) -> h + strength * noise; strength (C,) starts at 0."""

    def build(self, input_shape: Any) -> None:
        self.strength = self.add_weight(shape=(int(input_shape[-1]),), initializer="zeros",
                                        name="strength")  # fmt: skip

    def call(self, h: Any, noise: Any) -> Any:
        # fp32 product: under mixed precision Keras hands the noise over already in bf16
        n32 = tf.cast(noise, tf.float32) * tf.cast(self.strength, tf.float32)
        return h + tf.cast(n32, h.dtype)


def z_noise(z: Any, sides: list[int]) -> list[Any]:
    """z (B, L) -> one standard-normal map (B, s, s, 1) per side, each sample's maps drawn
    from a stateless seed made of the bits of its z[0] and z[-1]: the same z always gives the
    same maps, whatever else is in the batch (two z that share those two floats share maps)."""
    z32 = tf.cast(z, tf.float32)
    seeds = tf.bitcast(tf.stack([z32[:, 0], z32[:, -1]], -1), tf.int32)  # (B, 2)
    total = sum(s * s for s in sides)
    flat = tf.map_fn(lambda sd: tf.random.stateless_normal((total,), sd), seeds,
                     fn_output_signature=tf.float32)  # (B, total)
    maps, at = [], 0
    for s in sides:
        maps.append(tf.reshape(flat[:, at:at + s * s], (-1, s, s, 1)))
        at += s * s
    return maps


def area_matrix(side: int, out: int) -> np.ndarray:
    """(out, side) float32: row i averages the input pixels under output pixel i, each
    weighted by the length of its overlap with [i side / out, (i + 1) side / out) (the exact
    area average, OpenCV's INTER_AREA when shrinking)."""
    edges = np.arange(out + 1) * side / out
    lo, hi = np.arange(side), np.arange(side) + 1
    overlap = np.clip(np.minimum(hi, edges[1:, None]) - np.maximum(lo, edges[:-1, None]), 0, None)
    return (overlap / (side / out)).astype(np.float32)


class SkipExcitation(keras.layers.Layer):
    """FastGAN's skip-layer excitation: (small (B, s, s, a), big (B, S, S, c)) -> big * gate,
    gate (B, 1, 1, c) = sigmoid(W2 swish(W1 flatten(area_4x4(small)))): a function of the
    small map alone (FastGAN's 4x4 valid conv on the 4 x 4 pool is this Dense W1)."""

    def __init__(self, channels: int, ini: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pol = kwargs.get("dtype")
        self.w1 = keras.layers.Dense(channels, dtype=pol, kernel_initializer=ini.glorot())
        self.w2 = keras.layers.Dense(channels, dtype=pol, kernel_initializer=ini.glorot())

    def call(self, small: Any, big: Any) -> Any:
        a = tf.constant(area_matrix(int(small.shape[1]), 4))  # (4, s)
        # the 4 x 4 area average as A h A^T: tf's ResizeArea has no gradient
        p = tf.einsum("ik,bklc,jl->bijc", a, tf.cast(small, tf.float32), a)
        p = tf.reshape(p, (-1, 16 * int(small.shape[-1])))
        gate = tf.sigmoid(tf.cast(self.w2(tf.nn.swish(self.w1(tf.cast(p, self.compute_dtype)))),
                                  tf.float32))  # fmt: skip
        return big * tf.cast(gate[:, None, None, :], big.dtype)


class ConvGenerator(keras.Model):
    """([z (B, L), y (B,) int]) -> images (B, H, W, 1) float32 in [-1, 1]."""

    def __init__(self, cfg: TrainConfig, **kwargs: Any) -> None:
        super().__init__(name="generator", **kwargs)
        pol, ini = dtype_policy(cfg), SeededInit(cfg.seed, 1)
        self.cfg, ch = cfg, cfg.conv_g_channels
        self.s0 = base_size(cfg)
        self.embed = keras.layers.Embedding(
            cfg.num_classes, cfg.latent_dim, dtype=pol,
            embeddings_initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=ini._next()),
        )  # fmt: skip
        self.fc = keras.layers.Dense(self.s0 * self.s0 * ch[0], dtype=pol,
                                     kernel_initializer=ini.glorot())  # fmt: skip
        ns = self.num_sources = len(cfg.sources)  # 0: conditioned on the class only
        if cfg.conv_g_norm == "batch":
            self.norms: list[Any] = [ClassBatchNorm(cfg.num_classes, cfg.conv_bn_momentum, ns,
                                                    dtype=pol) for _ in ch]  # fmt: skip
        else:
            self.norms = [ClassPixelNorm(cfg.num_classes, ns, dtype=pol) for _ in ch]
        if cfg.conv_upsample in RESIZE_UPSAMPLES:  # x2 then a 3x3 conv: no checkerboard
            how = RESIZE_UPSAMPLES[cfg.conv_upsample]
            self.ups: list[Any] = [keras.Sequential([
                keras.layers.UpSampling2D(2, interpolation=how, dtype=pol),
                keras.layers.Conv2D(c, 3, padding="same", dtype=pol,
                                    kernel_initializer=ini.glorot())]) for c in ch[1:]]  # fmt: skip
        else:
            self.ups = [keras.layers.Conv2DTranspose(c, 4, strides=2, padding="same", dtype=pol,
                                                     kernel_initializer=ini.glorot())
                        for c in ch[1:]]  # fmt: skip
        self.out = keras.layers.Conv2D(1, 3, padding="same", dtype=pol,
                                       kernel_initializer=ini.glorot())  # fmt: skip
        if ns:  # created last: the class-only weights keep their seeds and their order
            self.embed_src = keras.layers.Embedding(ns, cfg.latent_dim, dtype=pol,
                embeddings_initializer=keras.initializers.RandomNormal(0.0, 1.0,
                                                                       seed=ini._next()))
        # after everything else (zero-initialised, no seeds drawn): without --conv-g-noise the
        # network is exactly the one before the option existed
        self.noise_inputs = [NoiseInput(dtype=pol) for _ in ch[1:]] if cfg.conv_g_noise else []
        # --conv-g-output skip: zero-initialised, so the same holds. Zero rather than random:
        # six random 1x1 images added up would start the sum deep in tanh's flat tails
        skip = cfg.conv_g_output == "skip"
        self.to_image = [keras.layers.Conv2D(1, 1, dtype=pol, kernel_initializer="zeros")
                         for _ in ch[:-1]] if skip else []  # fmt: skip
        # --conv-g-sle: level j's gate (from level j - SLE_GAP), after all of the above
        self.sle = {j: SkipExcitation(ch[j], ini, dtype=pol)
                    for j in range(SLE_GAP, len(ch))} if cfg.conv_g_sle else {}  # fmt: skip

    def call(self, inputs: Any, training: bool = False) -> Any:
        z, y = inputs
        a = self.cfg.leaky_slope
        if self.num_sources:  # cell -> class embedding + source embedding
            k, s = split_cell(y, self.num_sources)
            e = self.embed(k) + self.embed_src(s)
        else:
            e = self.embed(y)
        h = tf.concat([tf.cast(z, self.embed.compute_dtype), e], -1)  # (B, 2L)
        h = tf.reshape(self.fc(h), (-1, self.s0, self.s0, self.cfg.conv_g_channels[0]))
        bn = self.cfg.conv_g_norm == "batch"
        kw = {"training": training} if bn else {}
        h = self.norms[0](h if bn else tf.nn.leaky_relu(h, a), y, **kw)
        h = tf.nn.leaky_relu(h, a) if bn else h
        sides = [self.s0 * 2 ** (i + 1) for i in range(len(self.ups))]
        noise = z_noise(z, sides) if self.noise_inputs else []
        img = tf.cast(self.to_image[0](h), tf.float32) if self.to_image else None
        levels = [h]  # each level's features, for the gates of --conv-g-sle
        for i, (up, norm) in enumerate(zip(self.ups, self.norms[1:], strict=True)):
            u = up(h)
            if noise:  # StyleGAN's place for it: after the conv, before the activation
                u = self.noise_inputs[i](u, noise[i])
            if bn:  # DCGAN order: conv -> BN -> activation
                h = tf.nn.leaky_relu(norm(u, y, **kw), a)
            else:  # ProGAN order: conv -> activation -> pixel norm
                h = norm(tf.nn.leaky_relu(u, a), y)  # (B, 2s, 2s, c_i)
            if i + 1 in self.sle:
                h = self.sle[i + 1](levels[i + 1 - SLE_GAP], h)
            levels.append(h)
            if img is not None:  # the coarse image so far, x2, plus this level's own
                img = bilinear_x2(img)
                if i + 1 < len(self.to_image):
                    img = img + tf.cast(self.to_image[i + 1](h), tf.float32)
        out = tf.cast(self.out(h), tf.float32)
        return tf.tanh(out if img is None else img + out)


def bilinear_x2(img: Any) -> Any:
    """(B, s, s, 1) float32 -> (B, 2s, 2s, 1), bilinear with half-pixel centres."""
    side = 2 * int(img.shape[1])
    return tf.image.resize(img, (side, side), method="bilinear")


class SNConv2D(keras.layers.Layer):
    """4x4 stride-2 'same' convolution, optionally spectrally normalised."""

    def __init__(self, filters: int, spectral: bool, init: Any, u_init: Any,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.filters, self.spectral, self.init, self.u_init = filters, spectral, init, u_init

    def build(self, input_shape: Any) -> None:
        cin = int(input_shape[-1])
        self.kernel = self.add_weight(shape=(4, 4, cin, self.filters), initializer=self.init,
                                      name="kernel")  # fmt: skip
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        if self.spectral:
            self.u = self.add_weight(shape=(1, self.filters), trainable=False, name="sn_u",
                                     initializer=self.u_init)  # fmt: skip

    def normalised_kernel(self, training: bool) -> Any:
        w = tf.cast(self.kernel, tf.float32)
        if not self.spectral:
            return w
        wm = tf.reshape(w, (-1, self.filters))  # (16 cin, cout)
        u = tf.cast(self.u, tf.float32)
        if training:  # one power iteration; u is a constant for the gradient
            v = tf.math.l2_normalize(tf.matmul(u, wm, transpose_b=True))
            u = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(v, wm)))
            self.u.assign(u)
        v = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(u, wm, transpose_b=True)))
        sigma = tf.reduce_sum(tf.matmul(v, wm) * u)  # ~ largest singular value of wm
        return w / sigma

    def call(self, x: Any, training: bool = False) -> Any:
        k = tf.cast(self.normalised_kernel(training), x.dtype)
        return tf.nn.conv2d(x, k, 2, "SAME") + tf.cast(self.bias, x.dtype)


class ProjectionDiscriminator(keras.Model):
    """([x (B, H, W, 1), y (B,) int]) -> logits (B,) float32."""

    def __init__(self, cfg: TrainConfig, **kwargs: Any) -> None:
        super().__init__(name="discriminator", **kwargs)
        pol, ini = dtype_policy(cfg), SeededInit(cfg.seed, 2)
        self.cfg = cfg
        self.convs = [SNConv2D(c, cfg.spectral_norm, ini.glorot(),
                               keras.initializers.RandomNormal(0.0, 1.0, seed=ini._next()),
                               dtype=pol) for c in cfg.conv_d_channels]  # fmt: skip
        self.lin = keras.layers.Dense(1, kernel_initializer=ini.glorot())  # fp32 head
        phi_dim = cfg.conv_d_channels[-1] + (cfg.mbstd_group > 1)
        if cfg.conv_d_head == "flatten":  # one feature vector per position of the last map
            side = cfg.image_size
            for _ in cfg.conv_d_channels:  # a "same" stride-2 conv: ceil(side / 2)
                side = -(-side // 2)
            phi_dim *= side * side
        self.embed = self._embedding(cfg.num_classes, phi_dim, ini)
        self.num_sources = len(cfg.sources)  # 0: conditioned on the class only
        if self.num_sources:  # the projection's source part (created last, as in G)
            self.embed_src = self._embedding(self.num_sources, phi_dim, ini)
        # --conv-d-patch: [Dense(1), E_p(class)[, E_p(source)]] (a list: Keras tracks lists)
        self.patch: list[Any] = []
        if cfg.conv_d_patch > 0:  # after everything else: the weights above keep their seeds
            c = cfg.conv_d_channels[D_PATCH_LEVEL - 1]
            self.patch = [keras.layers.Dense(1, kernel_initializer=ini.glorot()),
                          self._embedding(cfg.num_classes, c, ini),
                          *([self._embedding(self.num_sources, c, ini)] if self.num_sources
                            else [])]  # fmt: skip
        # --conv-d-recon: [whole-image decoder, quarter decoder], created after the patch head
        self.decoders: list[Any] = []
        if cfg.conv_d_recon > 0:
            self.decoders = [_Decoder(D_RECON_WIDTHS, cfg.leaky_slope, ini, dtype=pol,
                                      name=f"recon_{k}") for k in ("whole", "quarter")]  # fmt: skip

    @staticmethod
    def _embedding(n: int, dim: int, ini: SeededInit) -> Any:
        """A projection table (n, dim), N(0, 0.05^2) (float32: the heads run in fp32)."""
        return keras.layers.Embedding(
            n, dim, embeddings_initializer=keras.initializers.RandomNormal(0.0, 0.05,
                                                                            seed=ini._next()))

    def projection(self, y: Any, tables: list[Any] | None = None) -> Any:
        """The label's projection vector from `tables` (class table[, source table]; default
        the whole-image head's): class part (+ source part for cells), (B, dim)."""
        tables = tables or ([self.embed, self.embed_src] if self.num_sources else [self.embed])
        if not self.num_sources:
            return tables[0](y)
        k, s = split_cell(y, self.num_sources)
        return tables[0](k) + tables[1](s)

    def call(self, inputs: Any, training: bool = False, with_patches: bool = False,
             with_maps: bool = False, **unused: Any) -> Any:  # fmt: skip
        """Logits (B,); with `with_patches` (needs --conv-d-patch) also the patch logits
        (B, s, s), s the side of the map after conv D_PATCH_LEVEL; with `with_maps` also the
        maps `reconstruct` reads, {level: (B, s, s, c)}: (logits[, patches][, maps])."""
        if with_patches and not self.patch:
            raise ValueError("with_patches needs a discriminator built with --conv-d-patch > 0")
        x, y = inputs
        if self.cfg.conv_d_input == "bands":  # in fp32: the bands are small differences
            x = detail_bands(tf.cast(x, tf.float32))
        h = tf.cast(x, self.compute_dtype)
        patches, maps = None, {}
        for i, conv in enumerate(self.convs):
            h = tf.nn.leaky_relu(conv(h, training=training), self.cfg.leaky_slope)
            if self.patch and i + 1 == D_PATCH_LEVEL:  # every call: the first one builds it
                patches = self._patch_logits(tf.cast(h, tf.float32), y)
            if i + 1 in D_RECON_LEVELS:
                maps[i + 1] = h
        if self.decoders and not self.decoders[0].built:  # the first call builds them
            self.reconstruct(maps, tf.constant(0))
        h = tf.cast(h, tf.float32)
        if self.cfg.mbstd_group > 1:
            h = minibatch_stddev(h, self.cfg.mbstd_group)
        if self.cfg.conv_d_head == "flatten":  # (B, s * s * (d5 [+1])): where, too
            phi = tf.reshape(h, (tf.shape(h)[0], -1))
        else:
            phi = tf.reduce_sum(h, axis=[1, 2])  # (B, d5 [+1])
        logits = tf.squeeze(self.lin(phi), -1) + tf.reduce_sum(self.projection(y) * phi, -1)
        if not (with_patches or with_maps):
            return logits
        return (logits, *([patches] if with_patches else []), *([maps] if with_maps else []))

    def reconstruct(self, maps: dict[int, Any], quarter: Any) -> tuple[Any, Any]:
        """--conv-d-recon's decoders on D's `maps` (call's with_maps) -> (the whole image at
        half size, quarter `quarter` (0 top left, 1 top right, 2 bottom left, 3 bottom right;
        a scalar int tensor) at full size), each (B, H/2, H/2, 1) float32 in [-1, 1]."""
        if not self.decoders:
            raise ValueError("reconstruct needs a discriminator built with --conv-d-recon > 0")
        whole = self.decoders[0](maps[D_RECON_LEVELS[0]])
        h = maps[D_RECON_LEVELS[1]]
        part = self.decoders[1](quarter_of(h, quarter))
        return tf.cast(whole, tf.float32), tf.cast(part, tf.float32)

    def _patch_logits(self, h: Any, y: Any) -> Any:
        """(B, s, s, c) float32 features, y (B,) -> (B, s, s): w_p . h + b_p + E_p(y) . h."""
        e = self.projection(y, self.patch[1:])[:, None, None, :]  # (B, 1, 1, c)
        return tf.squeeze(self.patch[0](h), -1) + tf.reduce_sum(e * h, -1)


class _Decoder(keras.layers.Layer):
    """(B, s, s, c) -> (B, 8s, 8s, 1) in [-1, 1] (with three widths): per width,
    nearest x2 -> Conv 3x3 -> LReLU; then Conv(1, 3x3) -> tanh (FastGAN's decoder, without its
    GLU and batch norm: D has no batch statistics anywhere else either)."""

    def __init__(self, widths: tuple[int, ...], slope: float, ini: SeededInit,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.slope = slope
        self.convs = [keras.layers.Conv2D(c, 3, padding="same", kernel_initializer=ini.glorot(),
                                          dtype=kwargs.get("dtype")) for c in widths]  # fmt: skip
        self.out = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer=ini.glorot(),
                                       dtype=kwargs.get("dtype"))  # fmt: skip

    def call(self, h: Any) -> Any:
        for conv in self.convs:
            h = tf.repeat(tf.repeat(h, 2, axis=1), 2, axis=2)  # nearest x2
            h = tf.nn.leaky_relu(conv(h), self.slope)
        return tf.tanh(self.out(h))


def quarter_of(x: Any, quarter: Any) -> Any:
    """Quarter `quarter` (0 top left, 1 top right, 2 bottom left, 3 bottom right; a scalar int
    tensor) of x (B, S, S, C), S even: (B, S/2, S/2, C)."""
    s = int(x.shape[1]) // 2
    return tf.slice(x, tf.stack([0, quarter // 2 * s, quarter % 2 * s, 0]), [-1, s, s, -1])


def detail_bands(x: Any) -> Any:
    """--conv-d-input bands: x (B, H, W, 1) float32 -> (B, H, W, 1 + len(D_BAND_SIGMAS)): x,
    then its difference-of-Gaussians bands from the finest, x - G_s1 x, G_s1 x - G_s2 x, ...,
    each times its gain (D_BAND_GAINS). Linear and fixed: G's gradient flows through it, and
    x = sum(band_k / gain_k) + G_sK x, so nothing of the image is lost.
    Each blur G_s x = M_s X M_s^T is two dense matrix products (gaussian_blurs): 224 multiply-adds
    per pixel and pass instead of a 49-tap convolution's 49, yet faster here, because a
    1-channel convolution runs far below the CPU's matrix-multiply speed (bench/d_bands.py)."""
    img = x[..., 0]  # (B, H, W)
    blurred = gaussian_blurs(img, [(s, band_radius(s)) for s in D_BAND_SIGMAS])  # (B, K, H, W)
    levels = tf.concat([img[:, None], blurred], 1)  # (B, K + 1, H, W): x, G_s1 x, G_s2 x, ...
    gains = tf.constant(D_BAND_GAINS, tf.float32)[None, :, None, None]
    bands = gains * (levels[:, :-1] - levels[:, 1:])  # (B, K, H, W)
    return tf.concat([x, tf.transpose(bands, (0, 2, 3, 1))], -1)


def minibatch_stddev(h: Any, group: int) -> Any:
    """(B, H, W, C) -> (B, H, W, C + 1): the extra channel is the standard deviation of the
    features over each group of `group` CONSECUTIVE samples, averaged over H, W, C (ProGAN's
    minibatch-stddev). A collapsed generator makes it ~0 on fakes, which D can see: it is the
    remedy for G ignoring z (seen here: every z gave one image by iteration 500 without it).
    Consecutive groups never mix the real and fake halves of a [real; fake] batch as long as
    B is a multiple of `group` (checked by TrainConfig)."""
    shape = tf.shape(h)
    g = tf.minimum(group, shape[0])
    hg = tf.reshape(h, (-1, g, shape[1], shape[2], shape[3]))  # (B/g, g, H, W, C)
    sd = tf.sqrt(tf.math.reduce_variance(hg, axis=1) + 1e-8)  # (B/g, H, W, C)
    sd = tf.reduce_mean(sd, axis=[1, 2, 3])  # (B/g,)
    sd = tf.repeat(sd, g)[:, None, None, None] * tf.ones_like(h[..., :1])  # (B, H, W, 1)
    return tf.concat([h, sd], -1)


def conv_forward_flops(cfg: TrainConfig) -> tuple[int, int]:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of G and of D for ONE sample.

    A stride-2 4x4 transposed conv from (s, s, a) to (2s, 2s, c) does s*s*a*c*16 MACs; a
    stride-2 4x4 conv to (s, s, c) from (2s, 2s, a) does the same; G's last 3x3 conv does
    H*W*c5*9; with --conv-g-output skip each level i < 5 adds s_i*s_i*c_i (its 1x1 conv to
    one channel); with --conv-g-sle each gate's Dense layers add 16 a c + c^2. Activations,
    norms and the projection are not counted (< 1 %); nor are the Gaussian blurs of
    --conv-d-input bands (~0.015 GFLOP per image), whose bands widen D's first conv's input.
    """
    ch, s = cfg.conv_g_channels, base_size(cfg)
    g = cfg.latent_dim * 2 * s * s * ch[0]
    for a, c in zip(ch[:-1], ch[1:], strict=True):
        # transposed 4x4 stride 2: 16 MACs per input pixel; resize: a 3x3 conv at 2s x 2s
        g += s * s * a * c * 16 if cfg.conv_upsample == "transposed" else 4 * s * s * a * c * 9
        s *= 2
    g += s * s * ch[-1] * 9
    if cfg.conv_g_output == "skip":  # a 1x1 conv to one channel at each level but the last
        g += sum((base_size(cfg) * 2**i) ** 2 * c for i, c in enumerate(ch[:-1]))
    if cfg.conv_g_sle:  # each gate's two Dense layers: 16 a -> c -> c
        g += sum(16 * ch[j - SLE_GAP] * ch[j] + ch[j] * ch[j] for j in range(SLE_GAP, len(ch)))
    d, side, cin = 0, cfg.image_size, 1 + len(D_BAND_SIGMAS) * (cfg.conv_d_input == "bands")
    for c in cfg.conv_d_channels:
        side //= 2
        d += side * side * cin * c * 16
        cin = c
    return 2 * g, 2 * d
