"""Procedural frontal chest radiograph phantoms: SYNTHETIC demo and test data, not real patients.

`make_phantom` draws a look-alike of a PA chest X-ray (bright body, dark lungs with diaphragm
domes, spine, mediastinum, heart shadow, ribs as arcs, clavicles, smooth noise); `covid`
phantoms add patchy bilateral peripheral ground-glass opacities in the lower lung fields, as
described for COVID-19 pneumonia. The anatomy, the noise and the opacities come from three
independent child generators, so `covid` and `normal` phantoms drawn from generators in the same
state share their anatomy and differ only by the opacities (brighter, never darker).

    python -m cxraug.prep.phantom OUT --covid 40 --normal 120 --seed 0

writes the `folder:` layout (OUT/covid, OUT/normal) in the formats real datasets mix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_write_bytes, atomic_write_text
from cxraug.core.images import encode_image

WORK_ROWS = 176  # anatomy is drawn at this height, then resized: cost is independent of size
README = (
    "SYNTHETIC TEST DATA — procedural phantoms, not real patients.\n"
    "Written by cxraug.prep.phantom (make_phantom / write_phantom_folder) for demos and tests;\n"
    "one sub-folder per class (covid/, normal/), each image its own 'patient'.\n"
)
_NAME = "phantom-{label}-{i:04d}"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, ~unit-std noise smooth at 1/cells of the height: (H, W) float32."""
    h, w = shape
    grid = rng.standard_normal((cells, max(2, round(cells * w / h)))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _band(dist: np.ndarray, width: float) -> np.ndarray:
    """Bone-like band profile around a curve (dist = signed distance): brighter cortex edges."""
    core = np.exp(-((dist / width) ** 2))
    return 0.75 * core + 0.35 * np.exp(-(((np.abs(dist) - 0.8 * width) / (0.35 * width)) ** 2))


def make_phantom(
    rng: np.random.Generator, label: str, size: tuple[int, int] = (512, 512)
) -> np.ndarray:
    """A (H, W) uint8 frontal chest radiograph look-alike; `label` is "covid" or "normal"."""
    if label not in ("covid", "normal"):
        raise InputError(f"phantom label {label!r}: use covid or normal")
    H, W = size
    if min(H, W) < 16:
        raise InputError(f"phantom size {size} is too small; use at least 16x16")
    anat, noise_rng, ggo_rng = rng.spawn(3)
    h = WORK_ROWS
    w = max(16, round(h * W / H))
    u = anat.uniform
    # coordinates: y 0 (top) .. 1 (bottom); x -1 .. 1 across the image; small shift + tilt
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / (h - 1), (xx / (w - 1)) * 2.0 - 1.0
    tilt, dx = float(np.deg2rad(u(-3, 3))), u(-0.05, 0.05)  # Python floats keep float32
    x = (xx - dx) * math.cos(tilt) + (yy - 0.5) * math.sin(tilt)
    y = yy
    ax = np.abs(x)
    # body: neck widening to shoulders, then a torso whose edges are soft
    bw = u(0.78, 0.93)
    half = bw * (0.38 + 0.62 * _smoothstep(0.0, u(0.10, 0.16), y))
    body = _smoothstep(0.0, 0.08, half - ax)
    thickness = np.sqrt(np.clip(1.0 - (ax / np.maximum(half, 1e-3)) ** 2, 0.0, 1.0))
    img = 0.04 + body * (0.30 + 0.25 * thickness)  # thinner body edges let more X-rays through
    y_top, lw, lx, lungs = _lung_fields(u, x, y)
    # heart shadow on the patient's left (image right), mediastinum and spine in the middle
    hx, hy = u(0.08, 0.16), u(0.58, 0.64)
    heart = _smoothstep(1.05, 0.85, np.hypot((x - hx) / u(0.28, 0.34), (y - hy) / u(0.17, 0.21)))
    medi = _smoothstep(0.16, 0.10, ax) * _smoothstep(0.0, 0.1, y)
    lungs = lungs * (1.0 - heart) * (1.0 - medi)
    spine = _smoothstep(0.075, 0.05, ax) * (0.85 + 0.15 * np.cos(2 * np.pi * y / u(0.05, 0.06)))
    img = img * (1.0 - 0.70 * lungs) + 0.16 * medi + 0.12 * heart * (1 - medi)
    img += 0.08 * spine * (1.0 - 0.6 * heart)
    ribs, clavicles = _bones(u, y, ax, bw, y_top, body, lungs)
    img += ribs
    img += clavicles
    # lung texture (vessels, overlapping soft tissue) and broad exposure variation
    texture = 0.6 * _smooth_noise(noise_rng, (h, w), 24)
    texture += 0.4 * _smooth_noise(noise_rng, (h, w), 64)
    img += 0.06 * texture * lungs + 0.035 * _smooth_noise(noise_rng, (h, w), 4)
    img += 0.05 * _smooth_noise(noise_rng, (h, w), 12) * body  # overlying soft tissue
    grain = noise_rng.standard_normal((h, w)).astype(np.float32)
    if label == "covid":
        img += _opacities(ggo_rng, x, y, (y_top, lw, lx)) * lungs
    gain, gamma = u(0.88, 1.08), u(0.85, 1.2)
    img = np.clip(img * gain, 0.0, 1.0) ** gamma + 0.008 * grain
    out = cv2.resize(img.astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


Uniform = Callable[[float, float], float]


def _lung_fields(u: Uniform, x: np.ndarray,
                 y: np.ndarray) -> tuple[float, float, float, np.ndarray]:  # fmt: skip
    """(apex y_top, lung width, lung centre offset, (h, w) lung density map): apex at y_top,
    diaphragm dome bottom (patient's right, image left, ~3% higher)."""
    y_top, lw, lx = u(0.10, 0.16), u(0.27, 0.33), u(0.40, 0.47)
    lungs = np.zeros_like(x)
    for side, y_dome in ((-1.0, u(0.70, 0.78)), (1.0, u(0.73, 0.81))):
        uu = (x - side * lx) / lw  # -1 .. 1 across this lung
        bottom = y_dome + u(0.06, 0.10) * (uu**2)  # dome: costophrenic angles lowest
        v = np.clip((y - y_top) / (bottom - y_top), 0.0, 1.5)
        width = np.minimum(1.0, 1.35 * np.sqrt(v)) * (1.0 - 0.05 * v)  # tapered apex
        inside = np.minimum(width - np.abs(uu), (bottom - y) * 6.0)
        dense = 1.0 - 0.25 * _smoothstep(0.6, -0.2, side * uu)  # vessels: hila less dark
        lungs = np.maximum(lungs, _smoothstep(-0.02, 0.10, inside) * (y > y_top - 0.02) * dense)
    return y_top, lw, lx, lungs


def _bones(u: Uniform, y: np.ndarray, ax: np.ndarray, bw: float, y_top: float,
           body: np.ndarray, lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The (h, w) brightness the ribs add, and that the clavicles add."""
    # ribs: posterior arcs rising from the spine then falling laterally, every ~6% of height
    s = np.clip((ax - 0.06) / (bw - 0.06), 0.0, 1.2)
    spacing, thick = u(0.058, 0.068), u(0.014, 0.019)
    ribs = np.zeros_like(y)
    for k in range(11):
        yc = y_top - 0.03 + k * spacing - 0.10 * s + 0.34 * s**2 + 0.02 * k * s
        ribs = np.maximum(ribs, _band(y - yc, thick) * (s < 1.0))
    thorax = body * _smoothstep(0.05, 0.12, y) * _smoothstep(0.86, 0.74, y)
    rib_term = 0.16 * ribs * thorax * (0.5 + 0.5 * lungs)
    # clavicles: from the sternal notch out and slightly up to the shoulders
    cy = u(0.10, 0.14)
    clav = _band(y - (cy + 0.03 - 0.10 * np.clip((ax - 0.1) / 0.5, 0, 1) + 0.15 * (ax - 0.4) ** 2),
                 u(0.016, 0.022)) * _smoothstep(0.08, 0.12, ax) * _smoothstep(0.70, 0.60, ax)
    return rib_term, 0.22 * clav


def _opacities(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
               lung: tuple[float, float, float]) -> np.ndarray:  # fmt: skip
    """The (h, w) brightness of patchy ground-glass opacities (before the lung mask):
    bilateral, peripheral, lower zones; `lung` = (y_top, width, centre offset)."""
    y_top, lw, lx = lung
    ggo = np.zeros_like(x)
    n = int(rng.integers(4, 9))
    for i in range(n):
        side = -1.0 if i % 2 == 0 else 1.0
        bx = side * (lx + lw * rng.uniform(0.15, 0.85))
        by = rng.uniform(y_top + 0.35 * (0.75 - y_top), 0.78)
        r = rng.uniform(0.06, 0.13)
        ggo += rng.uniform(0.5, 1.0) * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / r**2)
    patchy = 0.55 + 0.45 * np.tanh(_smooth_noise(rng, x.shape, 20))
    return 0.30 * np.minimum(ggo, 1.3) * patchy


def _encode_variant(img: np.ndarray, k: int, rng: np.random.Generator) -> tuple[str, bytes]:
    """Cycle the formats real datasets mix: 8-bit gray PNG, RGB JPEG, 16-bit PNG, some RGBA."""
    kind = ("gray8", "rgb_jpeg", "gray16", "gray8", "rgb_jpeg", "rgba")[k % 6]
    if kind == "gray8":
        return ".png", encode_image(img, ".png")
    if kind == "rgb_jpeg":
        bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return ".jpeg", encode_image(bgr, ".jpg", jpeg_quality=int(rng.integers(85, 96)))
    if kind == "gray16":  # 12-bit detector values in a 16-bit container, as DR exports do
        return ".png", encode_image(img.astype(np.uint16) * 16 + 8, ".png")
    bgra = cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)  # opaque alpha: pixels read unchanged
    return ".png", encode_image(bgra, ".png")


def write_phantom_folder(out: Path, n_covid: int, n_normal: int, seed: int) -> Path:
    """Write OUT/covid/*.png|jpeg and OUT/normal/* phantoms (sizes 400-1100 px) + README.txt.

    Refuses a non-empty folder unless it is an earlier phantom folder (has our README.txt);
    then its phantom files are replaced."""
    out = Path(out)
    if n_covid < 0 or n_normal < 0:
        raise InputError("phantom counts must be >= 0")
    if out.exists() and any(out.iterdir()):
        ours = (out / "README.txt").is_file() and \
            (out / "README.txt").read_text(encoding="utf-8").startswith("SYNTHETIC")
        if not ours:
            raise InputError(f"{out} is not empty and not a phantom folder; choose an empty or "
                             "new folder")  # fmt: skip
        for p in [*out.glob("covid/phantom-*"), *out.glob("normal/phantom-*")]:
            p.unlink()
    rng = np.random.default_rng(seed)
    atomic_write_text(out / "README.txt", README)
    for label, n in (("covid", n_covid), ("normal", n_normal)):
        (out / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            size = (int(rng.integers(400, 1101)), int(rng.integers(400, 1101)))
            img = make_phantom(rng, label, size)
            suffix, data = _encode_variant(img, i, rng)
            atomic_write_bytes(out / label / (_NAME.format(label=label, i=i) + suffix), data)
    return out


def main() -> None:
    import typer

    def run(
        out: Path = typer.Argument(..., help="Folder to write (covid/, normal/, README.txt)."),
        covid: int = typer.Option(20, help="Number of covid phantoms."),
        normal: int = typer.Option(60, help="Number of normal phantoms."),
        seed: int = typer.Option(0, help="Seed of every random choice."),
    ) -> None:
        """Write SYNTHETIC procedural chest X-ray phantoms in the folder: layout."""
        try:
            path = write_phantom_folder(out, covid, normal, seed)
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        typer.echo(f"wrote {covid} covid + {normal} normal phantoms to {path}")

    typer.run(run)


if __name__ == "__main__":
    main()
