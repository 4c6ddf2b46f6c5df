"""The compiled training step of the paper's MLP networks (`--arch mlp`, cxraug.gan.mlp):
explicit GradientTape, explicit variable lists.

One iteration (batch B, images (H, W, 1)):
    idx ~ U{0..N-1}^B (with replacement; --sampling balanced: cxraug.gan.sampling),
    z ~ N(0, I) (B, L), y = labels[idx]
    fake = G([z, y], training)                               # (B, H, W, 1), the ONLY G pass
    D step: logits = D([real + s*e_r ; fake + s*e_f], [y; y])   # ONE pass, (2B,)
            d_loss = mean BCE(1, logits[:B]) and BCE(0, logits[B:]); Adam update of D only
    G step: D' = updated D on the SAME [real; fake] batch (same z, same labels, so the
            recorded G forward pass equals a fresh one: reusing it changes only the cost)
            g_loss = mean BCE(1, D'(...)[B:]) (fake half only); Adam update of G only
Fake labels are the real batch's labels, so D cannot learn the class prior (pitfalls #3).
`s` is the annealed instance-noise sigma.

BatchNorm in D uses JOINT statistics over the concatenated [real; fake] batch, in both steps.
Per-half statistics (what two separate Keras-GAN `train_on_batch` calls compute) make this D
blind: its last hidden layer ends in BatchNorm, so the batch-mean logit of an all-real and of
an all-fake batch are both exactly `w . beta + b` and D stays at chance (loss ln 2; seen on
real data in the first version). With joint statistics the real/fake mean difference survives.
Every random number comes from one tf.random.Generator seeded by --seed, in-graph, drawn for
the GLOBAL batch in cross-replica context: the result does not depend on the number of
replicas. `step_flops` counts the matmuls of one iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cxraug.core.errors import vassert
from cxraug.core.tf_setup import keras, tf
from cxraug.gan.augment import diff_augment
from cxraug.gan.config import TrainConfig, parse_policy
from cxraug.gan.ema import update_ema
from cxraug.gan.mlp import dropout_layers, forward_flops
from cxraug.gan.sampling import class_table, draw_indices


def _bce_sum(target: float, logits: Any) -> Any:
    t = tf.fill(tf.shape(logits), target)
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(t, logits))


def _scaled(opt: Any, loss: Any) -> Any:
    """The loss to differentiate (call inside the tape): fp16 scales it, apply() unscales."""
    if isinstance(opt, keras.optimizers.LossScaleOptimizer):
        return opt.scale_loss(loss)
    return loss


def _updater(opt: Any, variables: list[Any], *, jit: bool) -> Callable[[list[Any]], None]:
    """opt.apply_gradients over `variables`, compiled on its own with XLA when `jit`
    (a jit_compile function nested in the step's tf.function is one fused XLA cluster)."""

    def apply(grads: list[Any]) -> None:
        opt.apply_gradients(zip(grads, variables, strict=True))

    return tf.function(apply, jit_compile=True) if jit else apply


class _MlpStep:
    """One iteration as `__call__(sigma, noisy)`, traced by tf.function; `replica` is the part
    each replica runs on its slice of the global batch. `state` is a TrainState
    (cxraug.gan.step)."""

    def __init__(self, state: Any, images: Any, labels: Any, scope: str) -> None:
        cfg, st = state.cfg, state.strategy
        self.state, self.cfg, self.images, self.labels = state, cfg, images, labels
        self.policy = parse_policy(cfg.augment)
        vassert(not self.policy or st.num_replicas_in_sync == 1,
                "--augment draws its transforms per replica; use one device (--strategy "
                "default)")  # fmt: skip
        self.b_glob = cfg.batch_size
        self.b = self.b_glob // st.num_replicas_in_sync
        self.drop_w = [cfg.d_widths[i] for i in dropout_layers(cfg)]
        self.n_images = int(images.shape[0])
        self.table = class_table(cfg, labels.numpy())  # --sampling balanced (else None)
        self.apply_d = _updater(state.d_opt, state.disc.trainable_variables,
                                jit=scope == "update")  # fmt: skip
        self.apply_g = _updater(state.g_opt, state.gen.trainable_variables,
                                jit=scope == "update")  # fmt: skip

    def _aug(self, x: Any) -> Any:
        return diff_augment(x, self.state.rng, self.policy, p=self.cfg.augment_p)

    def _halves(self, us: list[Any], lo: int) -> list[Any]:
        """This replica's rows of the real and the fake half of each (2B, width) tensor."""
        b, bg = self.b, self.b_glob
        return [tf.concat([u[lo : lo + b], u[bg + lo : bg + lo + b]], 0) for u in us]

    def replica(self, idx: Any, z: Any, e_real: Any, e_fake: Any, u_d: Any, u_g: Any,
                sigma: Any) -> dict[str, Any]:  # fmt: skip
        # One piece: the G tape must record the fake batch, the D step (outside it) and the
        # G step's pass through the UPDATED D in this order; splitting it would split tapes.
        state, gen, disc, b, b_glob = self.state, self.state.gen, self.state.disc, self.b, \
            self.b_glob  # fmt: skip
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        lo = r * b  # this replica's slice of the global batch
        idx, z = idx[lo : lo + b], z[lo : lo + b]
        real = tf.gather(self.images, idx)[..., None]  # (b, H, W, 1)
        y = tf.gather(self.labels, idx)  # (b,) fakes get the real batch's labels
        with tf.GradientTape() as g_tape:
            fake = gen([z, y], training=True)  # (b, H, W, 1)
            fake_in = fake if e_fake is None else fake + sigma * e_fake[lo : lo + b]
            if self.policy:  # DiffAugment: the same T(fake) is seen by the D and the G step
                fake_in = self._aug(fake_in)
            with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                real_in = real if e_real is None else real + sigma * e_real[lo : lo + b]
                if self.policy:
                    real_in = self._aug(real_in)
                x = tf.concat([real_in, fake_in], 0)  # (2b, H, W, 1)
                yy = tf.concat([y, y], 0)
                logits = disc([x, yy], training=True, groups=1, dropout_u=self._halves(u_d, lo))
                d_sum = _bce_sum(1.0, logits[:b]) + _bce_sum(0.0, logits[b:])
                d_loss = d_sum / (2.0 * b_glob)  # global mean: replica gradients are summed
                d_obj = _scaled(state.d_opt, d_loss)
            self.apply_d(d_tape.gradient(d_obj, disc.trainable_variables))
            # G step through the UPDATED D (control dependencies keep program order), on the
            # same [real; fake] batch so BatchNorm uses the same joint statistics as in the D
            # step; the loss reads only the fake half.
            g_logits = disc([tf.concat([real_in, fake_in], 0), yy], training=True, groups=1,
                            dropout_u=self._halves(u_g, lo))[b:]  # fmt: skip
            g_sum = _bce_sum(1.0, g_logits)
            g_obj = _scaled(state.g_opt, g_sum / float(b_glob))
        self.apply_g(g_tape.gradient(g_obj, gen.trainable_variables))
        if state.ema is not None:
            state.g_updates.assign_add(1)
            update_ema(state.ema, gen, state.g_updates, self.cfg.ema_decay)
        f32 = tf.float32
        return {
            "d_sum": d_sum, "g_sum": g_sum,
            "real_ok": tf.reduce_sum(tf.cast(logits[:b] > 0, f32)),
            "fake_ok": tf.reduce_sum(tf.cast(logits[b:] < 0, f32)),
        }  # fmt: skip

    def __call__(self, sigma: Any, noisy: bool) -> dict[str, Any]:
        # All randomness drawn here, in cross-replica context, for the GLOBAL batch:
        # the result does not depend on the number of replicas.
        cfg, rng, st, b_glob = self.cfg, self.state.rng, self.state.strategy, self.b_glob
        s = cfg.image_size
        idx = draw_indices(rng, b_glob, self.n_images, self.table)
        z = rng.normal([b_glob, cfg.latent_dim])
        e_real = rng.normal([b_glob, s, s, 1]) if noisy else None
        e_fake = rng.normal([b_glob, s, s, 1]) if noisy else None
        u_d = [rng.uniform([2 * b_glob, w]) for w in self.drop_w]
        u_g = [rng.uniform([2 * b_glob, w]) for w in self.drop_w]
        out = st.run(self.replica, args=(idx, z, e_real, e_fake, u_d, u_g, sigma))
        tot = {k: st.reduce("SUM", v, axis=None) for k, v in out.items()}
        return {
            "d_loss": tot["d_sum"] / (2.0 * b_glob), "g_loss": tot["g_sum"] / float(b_glob),
            "d_real_acc": tot["real_ok"] / b_glob, "d_fake_acc": tot["fake_ok"] / b_glob,
        }  # fmt: skip


def make_mlp_step(state: Any, images: Any, labels: Any, scope: str) -> Any:
    """A tf.function (sigma, noisy) -> metrics running one iteration of the MLP networks in
    place. `images` (N, H, W) float32 and `labels` (N,) int32 are resident tf.Variables;
    `scope` is where XLA compiles (cxraug.gan.step.xla_scope): step | update | none."""
    fn = _MlpStep(state, images, labels, scope)
    return tf.function(fn.__call__, jit_compile=scope == "step", reduce_retracing=False)


def step_flops(cfg: TrainConfig) -> float:
    """Matmul FLOPs of one iteration, from the layer shapes (2*M*N*K per matmul).

    Per sample, Dfwd / Gfwd = one forward pass of D / G. D step on the 2B batch: forward,
    weight gradients, data gradients (down to the input: D's label embedding multiplies it)
    = 6 B Dfwd; G step: D forward + data gradients on the same 2B batch = 4 B Dfwd; G: one
    forward (reused), weight and data gradients = 3 B Gfwd.
    """
    g, d = forward_flops(cfg)
    return float(10 * cfg.batch_size * d + 3 * cfg.batch_size * g)
