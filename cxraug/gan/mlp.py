"""The paper's conditional GAN (Mohammed & Ali 2022, §3.c and Table 2): two MLPs.

Generator (paper Fig. 6):
    z ~ N(0, I) (B, L) * Embedding(C, L)(y) (B, L)                     # L = latent_dim = 128
    -> [Dense(w) -> LeakyReLU(0.2) -> BatchNorm(momentum 0.8)] for w in 128, 256, 512, 1024
    -> Dense(H*W) -> tanh -> reshape (B, H, W, 1)                       # 52.1 M params at 224 px

Discriminator (paper Fig. 7: "five Dense layers ... four LeakyReLU, three batch normalization,
two dropout"); our layout, with i = 0..3 over the four hidden Dense(512) layers:
    flatten(x) (B, H*W) * Embedding(C, H*W)(y)
    -> Dense -> LeakyReLU                                   (i = 0: no BN, as in Keras-GAN)
    -> Dense -> LeakyReLU -> BN -> Dropout(0.4)             (i = 1, 2)
    -> Dense -> LeakyReLU -> BN                             (i = 3)
    -> Dense(1): a LOGIT. sigmoid(logit) is the paper's probability; the losses use
       `sigmoid_cross_entropy_with_logits`, the same maths without log(0) overflow.

Two deliberate differences from stock Keras layers, both so that training is exactly
reproducible:
- `GroupBatchNorm` is batch norm (synchronised over replicas when several run) that can also
  normalise `groups` equal slices of the batch with their own statistics. Training calls D
  with groups=1: JOINT statistics over the concatenated [real; fake] batch. Per-half
  statistics (groups=2, what two separate Keras-GAN `train_on_batch` calls compute) were the
  first version's bug: they make D blind (cxraug.gan.mlp_step explains why); groups=2 is kept so
  tests can show the one concatenated pass equals two separate passes;
- dropout takes its uniform noise as an argument, drawn from the run's tf.random.Generator.
The config's mixed_precision must be resolved (bf16 | fp16 | none, not auto): that happens
once, in `cxraug.gan.step.build_state`. `forward_flops` counts the matmuls of one forward pass
(cxraug.gan.arch registers both with the MLP step, cxraug.gan.mlp_step). This module knows
nothing about files.
"""

from __future__ import annotations

from typing import Any

from cxraug.core.tf_setup import keras, tf
from cxraug.gan.config import TrainConfig
from cxraug.gan.layers import SeededInit, dtype_policy

BN_EPSILON = 1e-3  # Keras' BatchNormalization default

def _num_replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    return int(ctx.num_replicas_in_sync) if ctx is not None else 1


class GroupBatchNorm(keras.layers.Layer):
    """Batch norm over `groups` equal slices of the batch, each with its own statistics
    (training uses groups=1: one set of statistics over the whole batch).

    Training: (B, F) -> (G, B/G, F), per-group mean/variance (synchronised across replicas when
    several replicas run), normalise, scale by gamma, shift by beta. The moving statistics (used
    at inference) move towards the mean of the group statistics with `momentum`.
    """

    def __init__(self, momentum: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.momentum = momentum

    def build(self, input_shape: Any) -> None:
        f = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(f,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(f,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=(f,), initializer="zeros", name="moving_mean", trainable=False
        )
        self.moving_variance = self.add_weight(
            shape=(f,), initializer="ones", name="moving_variance", trainable=False
        )

    def call(self, x: Any, training: bool = False, groups: int = 1) -> Any:
        x32 = tf.cast(x, tf.float32)  # statistics in fp32 even under mixed precision
        if not training:
            y = (x32 - self.moving_mean) * tf.math.rsqrt(self.moving_variance + BN_EPSILON)
            return tf.cast(y * self.gamma + self.beta, x.dtype)
        f = x32.shape[-1]
        xg = tf.reshape(x32, (groups, -1, f))  # (G, B/G, F)
        replicas = _num_replicas()
        if replicas == 1:
            mean, var = tf.nn.moments(xg, axes=[1], keepdims=True)  # (G, 1, F) each
        else:  # global batch statistics: all-reduce sums over replicas
            ctx = tf.distribute.get_replica_context()
            n = tf.cast(tf.shape(xg)[1] * replicas, tf.float32)
            s1 = ctx.all_reduce("sum", tf.reduce_sum(xg, axis=1, keepdims=True))
            s2 = ctx.all_reduce("sum", tf.reduce_sum(tf.square(xg), axis=1, keepdims=True))
            mean = s1 / n
            var = tf.maximum(s2 / n - tf.square(mean), 0.0)
        y = (xg - mean) * tf.math.rsqrt(var + BN_EPSILON) * self.gamma + self.beta
        m = self.momentum
        self.moving_mean.assign(m * self.moving_mean + (1 - m) * tf.reduce_mean(mean, [0, 1]))
        self.moving_variance.assign(
            m * self.moving_variance + (1 - m) * tf.reduce_mean(var, [0, 1])
        )
        return tf.cast(tf.reshape(y, tf.shape(x)), x.dtype)


class Generator(keras.Model):
    """([z (B, L) float, y (B,) int]) -> images (B, H, W, 1) float32 in [-1, 1]."""

    def __init__(self, cfg: TrainConfig, **kwargs: Any) -> None:
        super().__init__(name="generator", **kwargs)
        pol, ini = dtype_policy(cfg), SeededInit(cfg.seed, 1)
        self.cfg = cfg
        self.embed = keras.layers.Embedding(cfg.num_classes, cfg.latent_dim, dtype=pol,
                                            embeddings_initializer=ini.embed())  # fmt: skip
        self.hidden = [keras.layers.Dense(w, dtype=pol, kernel_initializer=ini.glorot())
                       for w in cfg.g_widths]  # fmt: skip
        self.norms = [GroupBatchNorm(cfg.bn_momentum) for _ in cfg.g_widths]
        self.out = keras.layers.Dense(cfg.image_size * cfg.image_size, dtype=pol,
                                      kernel_initializer=ini.glorot())  # fmt: skip

    def call(self, inputs: Any, training: bool = False) -> Any:
        z, y = inputs
        h = tf.cast(z, self.embed.compute_dtype) * self.embed(y)  # (B, L)
        for dense, bn in zip(self.hidden, self.norms, strict=True):
            h = bn(tf.nn.leaky_relu(dense(h), self.cfg.leaky_slope), training=training)
        x = tf.tanh(tf.cast(self.out(h), tf.float32))  # (B, H*W)
        s = self.cfg.image_size
        return tf.reshape(x, (-1, s, s, 1))


def dropout_layers(cfg: TrainConfig) -> list[int]:
    """Indices of the hidden D layers followed by dropout (1 .. n-2: two of four)."""
    return list(range(1, len(cfg.d_widths) - 1)) if cfg.dropout > 0 else []


class Discriminator(keras.Model):
    """([x (B, H, W, 1), y (B,) int]) -> logits (B,) float32.

    `groups`: batch-norm groups (training uses 1: joint statistics over the concatenated
    [real; fake] batch; 2 gives each half its own, as two separate passes would). `dropout_u`: one
    uniform [0, 1) tensor (B, width) per dropout layer; None in training draws its own (only the
    Keras-style benchmark loop relies on that).
    """

    def __init__(self, cfg: TrainConfig, **kwargs: Any) -> None:
        super().__init__(name="discriminator", **kwargs)
        pol, ini = dtype_policy(cfg), SeededInit(cfg.seed, 2)
        self.cfg = cfg
        self.embed = keras.layers.Embedding(cfg.num_classes, cfg.image_size**2, dtype=pol,
                                            embeddings_initializer=ini.embed())  # fmt: skip
        self.hidden = [keras.layers.Dense(w, dtype=pol, kernel_initializer=ini.glorot())
                       for w in cfg.d_widths]  # fmt: skip
        self.norms = [GroupBatchNorm(cfg.bn_momentum) if i >= 1 else None
                      for i in range(len(cfg.d_widths))]  # fmt: skip
        self.drop_at = dropout_layers(cfg)
        self.out = keras.layers.Dense(1, dtype=pol, kernel_initializer=ini.glorot())

    def call(
        self,
        inputs: Any,
        training: bool = False,
        groups: int = 1,
        dropout_u: list[Any] | None = None,
    ) -> Any:
        x, y = inputs
        s2 = self.cfg.image_size**2
        h = tf.cast(tf.reshape(x, (-1, s2)), self.embed.compute_dtype) * self.embed(y)  # (B, HW)
        k = 0
        for i, dense in enumerate(self.hidden):
            h = tf.nn.leaky_relu(dense(h), self.cfg.leaky_slope)
            bn = self.norms[i]
            if bn is not None:
                h = bn(h, training=training, groups=groups)
            if training and i in self.drop_at:
                u = dropout_u[k] if dropout_u is not None else tf.random.uniform(tf.shape(h))
                k += 1
                keep = tf.cast(u >= self.cfg.dropout, h.dtype)
                h = h * keep / tf.cast(1.0 - self.cfg.dropout, h.dtype)
        return tf.reshape(tf.cast(self.out(h), tf.float32), (-1,))


def forward_flops(cfg: TrainConfig) -> tuple[int, int]:
    """Matmul FLOPs of one forward pass of G and of D for ONE sample (2*N*K per Dense)."""

    def fwd(widths: list[int]) -> int:
        return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))

    px = cfg.image_size**2
    return fwd([cfg.latent_dim, *cfg.g_widths, px]), fwd([px, *cfg.d_widths, 1])
