"""The compiled training step of `--arch conv` (explicit GradientTape, explicit variable lists).

One iteration (batch B, images (H, W, 1)); T = DiffAugment (cxraug.gan.augment), drawn afresh
at every call, identity when --augment is empty:
    idx ~ U{0..N-1}^B, z ~ N(0, I) (B, L), y = labels[idx]       # fakes get the reals' labels
                                             (--sampling balanced: cxraug.gan.sampling)
    fake = G([z, y])                                              # the ONLY G pass
    D step: logits = D([T(real) ; T(fake)], [y; y])               # ONE D pass, (2B,)
            d_loss = mean softplus(-l_real) + mean softplus(l_fake)   (= BCE with logits)
                     [+ lecam * LeCam(l_real, l_fake)] [+ r1/2 * R1 on B/4 of T(real)]
                     [+ patch * (mean softplus(-p_real) + mean softplus(p_fake))]
                     [+ recon * reconstruction error of T(real) from D's maps]
            Adam update of D only
    G step: g_loss = mean softplus(-D'(T(fake), y)) through the UPDATED D'
            [+ patch * mean softplus(-p'_fake)]
            [+ diversity * mode seeking] [+ moments * coarse-layout moments (gan.moments)]
            [+ detail * detail-map moments (gan.moments, kind "detail")]
            [+ spectrum * log-spectrum distance (gan.spectral)]
            [+ fixed * the share of fine detail common to the fake batch (gan.spectral)]
            Adam update of G
    EMA:    ema <- d_t ema + (1 - d_t) G                      (cxraug.gan.ema; --ema-decay > 0)
D has no batch statistics (projection D, optional spectral norm), so unlike the MLP step the
real and fake halves need not share a pass for correctness; they do so because one pass is
cheaper. LeCam (Tseng et al. 2021): anchors a_r, a_f are EMAs (decay 0.99) of D's mean output
on reals and fakes; the penalty mean(relu(l_real - a_f)^2) + mean(relu(a_r - l_fake)^2) keeps
D's outputs from drifting apart on a small data set. p_* are D's patch logits (--conv-d-patch,
cxraug.gan.conv.ProjectionDiscriminator), one per position of its 28 px map, from the same pass.
The reconstruction term (--conv-d-recon, FastGAN's self-supervised D) decodes the real half's
maps from the same pass too: the whole T(real) at half size and one quarter of it at full size
(`recon_loss`); the quarter is read from the signs of z[0, :2] (uniform over the four, and no
extra draw: a run's other random numbers stay those of the run without the term).
Every random number (batch, z, instance noise, augmentation) comes from the run's
tf.random.Generator, in-graph, so resume equals uninterrupted. The G step draws a fresh T
(DiffAugment's reference does the same; the MLP step reuses its D-step T for its joint
BatchNorm batch). No XLA: on this CPU XLA's convolutions were slower than oneDNN's
(bench/conv_step.py, bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

from cxraug.core.errors import vassert
from cxraug.core.tf_setup import tf
from cxraug.gan.augment import diff_augment, parse_policy
from cxraug.gan.conv import quarter_of
from cxraug.gan.ema import update_ema
from cxraug.gan.moments import MomentLoss, MomentTargets, laplacian
from cxraug.gan.sampling import class_table, draw_indices
from cxraug.gan.spectral import SpectrumLoss, fixed_pattern_loss

LECAM_DECAY = 0.99


class _ConvStep:
    """One iteration as `__call__(sigma, noisy)`, traced by tf.function. `state` is a
    TrainState (cxraug.gan.step)."""

    def __init__(self, state: Any, images: Any, labels: Any) -> None:
        self.state, self.cfg, self.images, self.labels = state, state.cfg, images, labels
        self.n_images = int(images.shape[0])
        self.table = class_table(self.cfg, labels.numpy())  # --sampling balanced (else None)
        self.policy = parse_policy(self.cfg.augment)
        # R1 on the first quarter of the (augmented) reals: a double backward pass through D
        # on B/4 images costs ~5 % of the step instead of ~40 % on all B (groups of
        # mbstd_group stay whole: B/4 is rounded to a multiple of it)
        grp = max(self.cfg.mbstd_group, 1)
        self.r1_b = max(grp, (self.cfg.batch_size // 4) // grp * grp)
        # the real targets of the extra G terms are fixed by the training set: computed once,
        # here, from one host copy of the images
        self.moments = self.detail = self.spectrum = None
        if self.cfg.moments > 0 or self.cfg.detail > 0 or self.cfg.spectrum > 0:
            x, y, cells = images.numpy(), labels.numpy(), self.cfg.num_cells
            if self.cfg.moments > 0:
                self.moments = MomentLoss(MomentTargets.from_images(x, y, cells))
            if self.cfg.detail > 0:
                self.detail = MomentLoss(MomentTargets.from_images(x, y, cells, kind="detail"))
            if self.cfg.spectrum > 0:
                self.spectrum = SpectrumLoss(x, y, cells)

    def _aug(self, x: Any) -> Any:
        p = self.cfg.augment_p
        return diff_augment(x, self.state.rng, self.policy, p=p) if self.policy else x

    def _noise(self, x: Any, sigma: Any, noisy: bool) -> Any:
        """x (n, H, W, 1) + sigma * N(0, 1) when `noisy` (instance noise), else x."""
        if not noisy:
            return x
        s = self.cfg.image_size
        return x + sigma * self.state.rng.normal([int(x.shape[0]), s, s, 1])

    def _d_objective(self, d_loss: Any, l_real: Any, l_fake: Any, x: Any, y: Any) -> Any:
        """d_loss + the LeCam and R1 terms the config asks for (inside D's tape)."""
        cfg, d_obj = self.cfg, d_loss
        if cfg.lecam > 0:
            a_r, a_f = self.state.lecam[0], self.state.lecam[1]
            reg = tf.reduce_mean(tf.square(tf.nn.relu(l_real - a_f))) + tf.reduce_mean(
                tf.square(tf.nn.relu(a_r - l_fake))
            )
            d_obj = d_loss + cfg.lecam * reg
        if cfg.r1 > 0:
            d_obj = d_obj + cfg.r1 / 2 * r1_penalty(self.state.disc, x[: self.r1_b],
                                                    y[: self.r1_b])  # fmt: skip
        return d_obj

    def _g_objective(self, g_loss: Any, fake: Any, z: Any, y: Any) -> Any:
        """g_loss + the mode-seeking term (pairs (i, i + B/2) should differ with z) + the
        coarse-layout moment term (cxraug.gan.moments) + the detail-map moment term (the
        same, kind "detail") + the spectrum term and the fixed-pattern term (cxraug.gan.
        spectral), each where its weight is > 0."""
        g_obj = g_loss
        if self.cfg.diversity > 0:
            h = self.cfg.batch_size // 2
            dx = tf.reduce_mean(tf.abs(fake[:h] - fake[h : 2 * h]), axis=[1, 2, 3])
            dz = tf.reduce_mean(tf.abs(z[:h] - z[h : 2 * h]), axis=1)
            g_obj = g_obj + self.cfg.diversity * tf.reduce_mean(dz / (dx + 1e-5))
        if self.moments is not None:
            g_obj = g_obj + self.cfg.moments * self.moments(fake, y)
        if self.detail is not None:
            g_obj = g_obj + self.cfg.detail * self.detail(fake, y)
        if self.spectrum is not None:
            g_obj = g_obj + self.cfg.spectrum * self.spectrum(fake, y)
        if self.cfg.fixed > 0:
            g_obj = g_obj + self.cfg.fixed * fixed_pattern_loss(fake)
        return g_obj

    def _disc(self, x: Any, y: Any, with_maps: bool = False) -> tuple[Any, Any, Any]:
        """D's logits, with --conv-d-patch its patch logits (else None) and, `with_maps`, the
        maps its decoders read (else None)."""
        patch = self.cfg.conv_d_patch > 0
        out = self.state.disc([x, y], training=True, with_patches=patch, with_maps=with_maps)
        if not (patch or with_maps):
            return out, None, None
        return out[0], out[1] if patch else None, out[-1] if with_maps else None

    def __call__(self, sigma: Any, noisy: bool) -> dict[str, Any]:
        # One piece: the G tape must record the fake batch, the D step (outside it) and the G
        # step's pass through the UPDATED D in this order, and the random numbers are drawn
        # in this order (resume equals uninterrupted); splitting it would split the tapes.
        state, cfg, rng = self.state, self.cfg, self.state.rng
        gen, disc = state.gen, state.disc
        b = cfg.batch_size
        idx = draw_indices(rng, b, self.n_images, self.table)
        z = rng.normal([b, cfg.latent_dim])
        real = tf.gather(self.images, idx)[..., None]  # (B, H, W, 1)
        y = tf.gather(self.labels, idx)
        with tf.GradientTape() as g_tape:
            fake = gen([z, y], training=True)  # (B, H, W, 1)
            with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                x = self._noise(tf.concat([self._aug(real), self._aug(fake)], 0), sigma, noisy)
                recon = cfg.conv_d_recon > 0
                logits, patches, maps = self._disc(x, tf.concat([y, y], 0), with_maps=recon)
                l_real, l_fake = logits[:b], logits[b:]  # (B,) each; patches (2B, s, s)
                d_loss = _real_fake_loss(l_real, l_fake)
                d_obj = self._d_objective(d_loss, l_real, l_fake, x, y)
                if patches is not None:
                    d_obj = d_obj + cfg.conv_d_patch * _real_fake_loss(patches[:b], patches[b:])
                if recon:  # the real half only
                    quarter = tf.cast(z[0, 0] > 0, tf.int32) + 2 * tf.cast(z[0, 1] > 0, tf.int32)
                    real_maps = {k: v[:b] for k, v in maps.items()}
                    d_obj = d_obj + cfg.conv_d_recon * recon_loss(disc, real_maps, x[:b],
                                                                  quarter)  # fmt: skip
            d_vars = disc.trainable_variables
            state.d_opt.apply_gradients(zip(d_tape.gradient(d_obj, d_vars), d_vars, strict=True))
            if cfg.lecam > 0:
                m = tf.stack([tf.reduce_mean(l_real), tf.reduce_mean(l_fake)])
                state.lecam.assign(LECAM_DECAY * state.lecam + (1 - LECAM_DECAY) * m)
            g_logits, g_patches, _ = self._disc(self._noise(self._aug(fake), sigma, noisy), y)
            g_loss = tf.reduce_mean(tf.nn.softplus(-g_logits))
            g_obj = self._g_objective(g_loss, fake, z, y)
            if g_patches is not None:
                g_obj = g_obj + cfg.conv_d_patch * tf.reduce_mean(tf.nn.softplus(-g_patches))
        g_vars = gen.trainable_variables
        state.g_opt.apply_gradients(zip(g_tape.gradient(g_obj, g_vars), g_vars, strict=True))
        if state.ema is not None:
            state.g_updates.assign_add(1)
            update_ema(state.ema, gen, state.g_updates, cfg.ema_decay)
        f32 = tf.float32
        return {
            "d_loss": d_loss, "g_loss": g_loss,
            "d_real_acc": tf.reduce_mean(tf.cast(l_real > 0, f32)),
            "d_fake_acc": tf.reduce_mean(tf.cast(l_fake < 0, f32)),
        }  # fmt: skip


def _real_fake_loss(l_real: Any, l_fake: Any) -> Any:
    """mean softplus(-l_real) + mean softplus(l_fake): BCE with logits, reals labelled 1."""
    return tf.reduce_mean(tf.nn.softplus(-l_real)) + tf.reduce_mean(tf.nn.softplus(l_fake))


def recon_loss(disc: Any, maps: dict[int, Any], x: Any, quarter: Any) -> Any:
    """--conv-d-recon's error: D's decoders on `maps` (of the images x (B, H, W, 1)) against the
    whole of x at half size (2 x 2 means) and quarter `quarter` of x at full size, each as
    mean |rec - t| + mean |lap(rec) - lap(t)|. FastGAN compares with LPIPS, a learnt
    perceptual distance this project cannot download; a pixel L1 alone is least for a blur of
    the target, so the Laplacian term asks for the edges too."""
    whole, part = disc.reconstruct(maps, quarter)
    x = tf.cast(x, tf.float32)
    loss = 0.0
    for rec, t in ((whole, tf.nn.avg_pool2d(x, 2, 2, "VALID")), (part, quarter_of(x, quarter))):
        loss += tf.reduce_mean(tf.abs(rec - t))
        loss += tf.reduce_mean(tf.abs(laplacian(rec) - laplacian(t)))
    return loss


def make_conv_step(state: Any, images: Any, labels: Any, scope: str = "none") -> Any:
    """A tf.function (sigma, noisy) -> metrics running one iteration of the conv networks in
    place, on one device and without XLA (`scope` must be "none": cxraug.gan.step.xla_scope)."""
    vassert(state.strategy.num_replicas_in_sync == 1, "--arch conv trains on one device for now")
    vassert(scope == "none", "the conv step has no XLA form (xla_scope: none)")
    return tf.function(_ConvStep(state, images, labels).__call__, reduce_retracing=False)


def r1_penalty(disc: Any, x: Any, y: Any) -> Any:
    """E_x |grad_x D(x, y)|^2 over the batch x (B, H, W, 1) of real images (Mescheder et al.
    2018's R1, zero-centred on reals): it keeps D flat where the data lie, so D cannot answer
    a near miss with a steep gradient (the sharp outlines G learns to paint). training=False:
    the conv D has no batch statistics and no dropout; it only keeps spectral norm's power
    iteration from stepping twice per iteration."""
    x = tf.cast(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(disc([x, y], training=False))  # inside the tape: recorded
    grad = tf.cast(tape.gradient(total, x), tf.float32)  # (B, H, W, 1)
    return tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))
