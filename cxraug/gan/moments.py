"""Coarse-layout moment matching (`--moments W`, conv G only): a G loss that pulls each label's
generated thumbnails to the first and second moments of that label's real training thumbnails.

Why: the C2ST's pixel block tells the default recipe's images from held-out real ones at AUC
~1.0 already at 16 px (bench/RESULTS.md "Pass for real"), where no single statistic does
(each AUC <= 0.58): the generated MEAN image is off by 0.05-0.15 over much of the frame (the
mediastinum shifted, the left lung darker, the bottom brighter) and the per-pixel spread is
0.5-0.8x the real one in the lungs. Summed over hundreds of thumbnail pixels these small shifts
are a large Mahalanobis distance, which D, seeing translated and cut-out images, does not
penalise. This term states the target directly (statistic matching, as Salimans et al. 2016's
feature matching, here on fixed features: thumbnails of the TRAINING images only, never a test
split). It constrains only the coarse layout: sharpness and texture are left to D, and the
judges' detail and texture blocks, the 128 px scale and the spectrum still see them.

Features: x (H, W) in [-1, 1] -> its f x f block average t (s x s, s = H // f, f = round(H / 32):
32 px at 224, 28 at 56), per label l (a class; a class x source cell in a source-conditioned
run) centred and whitened in the top K principal directions of that label's real thumbnails:
    p_j = (t - mu_l) . v_lj / sd_lj,   j = 1..k_l,  k_l = min(K, n_l - 1)
For real thumbnails E p = 0 and E p_j^2 = 1. The loss is the squared distance of the FAKE
moments from these, estimated without bias from the batch (U-statistics over pairs i != i' of
fakes with the same label; a plain batch mean of |mean - mu|^2 would add Var/n and push G to
shrink its spread, i.e. towards collapse):
    mean term   E_{i != i'} [p_i . p_i'] / k           = |E p|^2 / k
    spread term E_{i != i'} [(p_i^2 - 1) . (p_i'^2 - 1)] / k = |E p^2 - 1|^2 / k
and, outside those k directions, where the real thumbnails vary little (a localised edge, a
dark spot at one place: measured on a 56 px proxy, the top directions matched and a few
pixels still differed by d' 1-1.6), the residual r = (t - mu_l) minus its projection on the
k directions, each pixel divided by the real residual's sd there (floored at RESID_FLOOR x its
median: a constant frame must not weigh ~1/0):
    residual term E_{i != i'} [r_i . r_i'] / D      = |E r|^2 / D
loss = the sum of the three, averaged over the pairs of the batch; weighted by W in G's
objective. Labels with fewer than 2 fakes in the batch add nothing that step.

The same machinery on another feature map (`--detail W`, kind "detail"): instead of the
thumbnail t itself, its local-contrast map d = log(|lap u| + 1/255), u = (t + 1) / 2 the
thumbnail in [0, 1] and lap the 4-neighbour Laplacian with a reflected border (OpenCV's
default, as the C2ST probe computes its detail block, cxraug.metrics.probe). Why: with the
layout matched by `--moments`, the probe's detail block still told the generated images from
held-out real ones at AUC 0.98-1.0 (bench/RESULTS.md "`--moments 10` at 224 px"): where the
thumbnail is sharp or soft (rib and lung edges, the mediastinum's borders) differs place by
place, and neither D nor the spectrum term (which matches power per ring, not per place) pins
it. It reads the same features as the probe's 32 px detail block, so that block's AUC is
partly by construction once the term is on; the 16, 64 and 128 px blocks, the texture block,
the spectrum and the eye are the independent checks. Unlike the thumbnails, whose variance
sits in a few layout modes, a detail map is close to white: its top sample directions are
mostly sampling noise, so the detail targets keep only the directions well above the noise
edge (EDGE_MARGIN x `noise_edge`: e.g. the image-wide sharpness mode) and the rest is matched
by the residual's per-pixel mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from cxraug.core.tf_setup import tf

#: The 4-neighbour Laplacian as a (3, 3, 1, 1) conv kernel (OpenCV's ksize=1 kernel).
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32).reshape(3, 3, 1, 1)

#: Thumbnail side aimed at: the C2ST's 32 px scale, where the layout difference is plain.
THUMB = 32
#: Principal directions per label: the layout modes (framing, zoom, brightness gradients)
#: carry most of the thumbnails' variance; 32 directions need >= 33 real images of a label.
DIRECTIONS = 32
#: Floor of a direction's variance, relative to the top one: no whitening by ~1/0.
VAR_FLOOR = 1e-4
#: Floor of the residual's per-pixel sd, relative to its median over the thumbnail.
RESID_FLOOR = 0.1
#: The feature maps the moments are taken of: the thumbnail itself, or its local contrast.
KINDS = ("pixels", "detail")
#: Detail-map directions kept: those whose variance is above this multiple of the noise edge
#: (`noise_edge`). The edge is exact only for features of equal variance and fluctuates with
#: the sample: on white maps (1,024 features, 600 images) the top two sample directions sat
#: 4 % above it, and fresh draws then read a spread term of ~0.6 instead of 0.
EDGE_MARGIN = 2.0
#: Floor under |Laplacian| before the log: one grey level of [0, 1], as the C2ST probe's.
DETAIL_FLOOR = 1.0 / 255.0


def laplacian(x: Any) -> Any:
    """The 4-neighbour Laplacian of x (B, H, W, 1), valid positions only: (B, H - 2, W - 2, 1)
    float32 (pad first for OpenCV's border, as `maps` does)."""
    return tf.nn.conv2d(tf.cast(x, tf.float32), _LAPLACIAN, 1, "VALID")


def pool_factor(image_size: int) -> int:
    """f of the f x f block average: the thumbnail is image_size // f px, about THUMB."""
    return max(1, round(image_size / THUMB))


def thumbnails(images: np.ndarray, factor: int) -> np.ndarray:
    """(N, H, W) -> (N, (H // f) * (W // f)) float64 block averages (the edge rows and columns
    that do not fill a block are dropped, as tf's VALID average pool does)."""
    n, h, w = images.shape
    s, t = h // factor, w // factor
    x = np.asarray(images[:, : s * factor, : t * factor], np.float64)
    return x.reshape(n, s, factor, t, factor).mean(axis=(2, 4)).reshape(n, s * t)


def detail_maps(thumbs: np.ndarray, side: int) -> np.ndarray:
    """(N, side * side) thumbnails in [-1, 1] -> (N, side * side) log(|lap u| + DETAIL_FLOOR),
    u = (t + 1) / 2, with OpenCV's Laplacian (4-neighbour, reflected border): the C2ST probe's
    detail block, computed the way the probe computes it (the loss's tf version is tested
    against this one)."""
    out = np.empty(thumbs.shape, np.float64)
    for i, t in enumerate(thumbs):
        u = ((t.reshape(side, -1) + 1.0) * 0.5).astype(np.float32)
        lap = cv2.Laplacian(u, cv2.CV_32F)
        out[i] = np.log(np.abs(lap) + np.float32(DETAIL_FLOOR)).ravel()
    return out


def noise_edge(mean_var: float, dims: int, n: int) -> float:
    """The largest sample-covariance eigenvalue pure noise reaches: the Marchenko-Pastur edge
    mean_var (1 + sqrt(dims / (n - 1)))^2 for `dims` independent features of variance
    mean_var seen in n images. Directions below it cannot be told from sampling noise: their
    sample variance is inflated (by up to ~(1 + sqrt(D / n))^2, ~5x for D = 1,024 and n = 342),
    so fresh real draws would read E p^2 < 1 along them and the spread term would push G to
    spread out along the training set's own noise."""
    return mean_var * (1.0 + np.sqrt(dims / max(n - 1, 1))) ** 2


def feature_maps(images: np.ndarray, factor: int, kind: str) -> np.ndarray:
    """(N, H, W) in [-1, 1] -> (N, D) the `kind` map of each image's f x f thumbnail."""
    t = thumbnails(images, factor)
    return t if kind == "pixels" else detail_maps(t, images.shape[1] // factor)


@dataclass(frozen=True)
class MomentTargets:
    """Per label (rows indexed by the label value): mean thumbnail, principal directions and
    their scales, the residual's per-pixel scale, and which directions exist."""

    factor: int
    kind: str  # one of KINDS: the feature map the moments are of
    mean: np.ndarray  # (L, D) float32
    unit: np.ndarray  # (L, D, K) float32: orthonormal v_lj (zero columns beyond k_l)
    scale: np.ndarray  # (L, K) float32: 1 / sd_lj (0 beyond k_l)
    resid_scale: np.ndarray  # (L, D) float32: 1 / the real residual's per-pixel sd
    mask: np.ndarray  # (L, K) float32: 1 for the label's k_l directions

    @classmethod
    def from_images(cls, images: np.ndarray, labels: np.ndarray, num_labels: int,
                    directions: int = DIRECTIONS,
                    kind: str = "pixels") -> MomentTargets:  # fmt: skip
        """Targets from the real training images (N, H, W) in [-1, 1] and labels (N,), on the
        `kind` map of their thumbnails."""
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}; use one of {KINDS}")
        factor = pool_factor(images.shape[1])
        t = feature_maps(images, factor, kind)
        d = t.shape[1]
        mean, resid = np.zeros((num_labels, d)), np.zeros((num_labels, d))
        unit = np.zeros((num_labels, d, directions))
        scale, mask = np.zeros((num_labels, directions)), np.zeros((num_labels, directions))
        for lab in range(num_labels):
            x = t[labels == lab]
            if len(x) < 2:  # a label never drawn (unseen cell) or one image: nothing to match
                continue
            mean[lab] = x.mean(axis=0)
            c = x - mean[lab]
            _, sv, vt = np.linalg.svd(c, full_matrices=False)
            var = sv**2 / (len(x) - 1)
            k = int(min(directions, len(x) - 1, np.sum(var > var[0] * VAR_FLOOR),
                        np.sum(var > EDGE_MARGIN * noise_edge(var.sum() / d, d, len(x)))
                        if kind == "detail"
                        else directions))  # fmt: skip
            unit[lab, :, :k] = vt[:k].T
            scale[lab, :k] = 1.0 / np.sqrt(var[:k])
            mask[lab, :k] = 1.0
            sd = (c - (c @ vt[:k].T) @ vt[:k]).std(axis=0, ddof=1)  # (D,) residual per pixel
            # pixels the real residual never varies at (a constant frame) must not weigh ~1/0
            resid[lab] = 1.0 / np.maximum(sd, RESID_FLOOR * max(float(np.median(sd)), 1e-6))
        f32 = np.float32
        return cls(factor, kind, mean.astype(f32), unit.astype(f32), scale.astype(f32),
                   resid.astype(f32), mask.astype(f32))  # fmt: skip

    def whitened(self, thumbs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(n, D) feature maps (`feature_maps`) -> (n, K) whitened coordinates p (0 beyond
        each label's k_l)."""
        c = thumbs - self.mean[labels]
        return np.einsum("nd,ndk->nk", c, self.unit[labels]) * self.scale[labels]

    def residual(self, thumbs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(n, D) feature maps -> (n, D) their part outside the k_l directions, per-pixel scaled."""
        c = thumbs - self.mean[labels]
        u = self.unit[labels]
        return (c - np.einsum("nk,ndk->nd", np.einsum("nd,ndk->nk", c, u), u)) * \
            self.resid_scale[labels]


def pair_mean(d: Any, labels: Any) -> Any:
    """The mean over pairs i != i' with the same label of d_i . d_i' (d (B, M)): an unbiased
    estimate of |E d|^2 when the rows of a label are independent draws (0 without a pair)."""
    b = tf.shape(labels)[0]
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), d.dtype)
    pairs = same * (1.0 - tf.eye(b, dtype=d.dtype))  # (B, B): same label, i != i'
    inner = tf.matmul(d, d, transpose_b=True)
    return tf.math.divide_no_nan(tf.reduce_sum(pairs * inner), tf.reduce_sum(pairs))


def pair_loss(p: Any, labels: Any, mask: Any, r: Any | None = None) -> Any:
    """The U-statistics of the module docstring from whitened p (B, K), the labels (B,), each
    row's direction mask (B, K) and, when given, the scaled residuals r (B, D). Rows of one
    label share k_l, so dividing each row by sqrt(k) divides each pair's products by k."""
    q = (tf.square(p) - 1.0) * mask
    root_k = tf.sqrt(tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0))  # (B, 1)
    parts = [p / root_k, q / root_k]
    if r is not None:
        parts.append(r / tf.sqrt(tf.cast(tf.shape(r)[1], r.dtype)))
    return pair_mean(tf.concat(parts, axis=1), labels)


class MomentLoss:
    """The loss on a fake batch (B, H, W, 1) with labels (B,), as tf constants of `targets`."""

    def __init__(self, targets: MomentTargets) -> None:
        self.factor, self.kind = targets.factor, targets.kind
        self.mean = tf.constant(targets.mean)
        self.unit = tf.constant(targets.unit)
        self.scale = tf.constant(targets.scale)
        self.resid_scale = tf.constant(targets.resid_scale)
        self.mask = tf.constant(targets.mask)

    def maps(self, fake: Any) -> Any:
        """(B, H, W, 1) -> (B, s, s, 1): the `kind` map of each image's thumbnail (tf)."""
        f = self.factor
        t = tf.nn.avg_pool2d(tf.cast(fake, tf.float32), f, f, "VALID")  # (B, s, s, 1)
        if self.kind == "pixels":
            return t
        u = tf.pad((t + 1.0) * 0.5, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
        lap = laplacian(u)  # REFLECT = OpenCV's reflect-101
        return tf.math.log(tf.abs(lap) + DETAIL_FLOOR)

    def __call__(self, fake: Any, labels: Any) -> Any:
        t = self.maps(fake)
        c = tf.reshape(t, [tf.shape(t)[0], -1]) - tf.gather(self.mean, labels)  # (B, D)
        u = tf.gather(self.unit, labels)  # (B, D, K)
        z = tf.einsum("bd,bdk->bk", c, u)  # coordinates along the k_l directions
        r = (c - tf.einsum("bk,bdk->bd", z, u)) * tf.gather(self.resid_scale, labels)
        p = z * tf.gather(self.scale, labels)
        return pair_loss(p, labels, tf.gather(self.mask, labels), r)
