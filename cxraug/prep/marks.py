"""Burned-in editorial marks: the arrows, outlines, panel letters, captions, colour and frames
that figures cropped from papers carry and a GAN would copy. `preprocess` records them in the
manifest's `marks` column; `train` leaves marked images out unless `--include-marked`.

`detect_marks(gray, colour)` looks at one decoded image (its crop, at most ANALYSIS_SIDE px)
and returns the reasons it found, in MARK_REASONS order (empty = nothing found):

    colour  >= 0.02 % of the pixels strongly coloured (channels differ by >= 40 of 255): a
            grey radiograph saved as colour has none (its JPEG noise stays <= ~10)
    stroke  a drawn arrow or arrowhead, or a closed outline larger than a marker's circle
            (cxraug.prep.ink)
    text    a panel label hugging a corner, a word away from the edges, or a dense overlay
            (cxraug.prep.glyphs)
    border  a frame: >= 3 exactly uniform lines along an edge (figure padding, a drawn
            frame), then a straight step into the image; never black (below)
    annotation  not seen but stated: a DICOM file whose header says BurnedInAnnotation YES

What it cannot tell apart (docs/preprocess.md, "Editorial marks", has the measured numbers):
clinical markers and technologist annotations are the same pure ink as panel letters and
captions, so text near the edges is taken for clinical unless it hugs a corner and is no
L/R; a clinical "DX" in a corner is flagged, a caption near an edge is not. Black padding
looks exactly like the black bands film digitisers and electronic collimation leave on real
radiographs, so black frames are never flagged. Grey (not pure) marks, dashed outlines and
strokes thinner than ~2 px at the analysis size are missed.
"""

from __future__ import annotations

import cv2
import numpy as np

from cxraug.core.manifest import MARK_REASONS, Manifest, is_verdict, marks_cell
from cxraug.prep.glyphs import text_evidence
from cxraug.prep.ink import (
    INK_BLACK,
    analysis_image,
    ink_components,
    is_arrow,
    is_outline,  # fmt: skip
)

#: Version of the detector's rules: `preprocess` re-detects when a dataset's record differs.
#: 2: the decode the detector sees no longer depends on --size at or below DECODE_SIZE.
DETECTOR_VERSION = 2
#: `preprocess` decodes at least as finely as for --size DECODE_SIZE before it looks for marks,
#: so an image's marks do not depend on --size at or below it. Why: a JPEG is DCT-reduced to
#: >= 2x the target side, and the rules were measured at 224; at --size 56 the shared data's
#: decodes were 4x coarser and the detector missed 24 of its 107 marked images (thin strokes
#: fall under ~2 px, see the docstring).
DECODE_SIZE = 224
CHROMA = 40 / 255  # a coloured pixel: max - min channel, of the range
COLOUR_SHARE = 2e-4  # of the pixels: ~80 px of a 640 x 640 image, a short thin arrow
BAND_MIN = 3  # exactly uniform lines along an edge that make a frame band


def detect_marks(gray: np.ndarray, colour: np.ndarray | None = None,
                 burned_in: bool = False) -> list[str]:  # fmt: skip
    """Reasons (a subset of MARK_REASONS, in its order) for one image's crop.

    gray: (H, W) float in [0, 1] (cxraug.core.images' decode); colour: the (H, W, 3) BGR
    pixels it was reduced from (uint8 or uint16), or None for a grey file; burned_in: the
    file's DICOM header says BurnedInAnnotation YES (reason `annotation`)."""
    found: set[str] = {"annotation"} if burned_in else set()
    if colour is not None and colour_share(colour) >= COLOUR_SHARE:
        found.add("colour")
    g = analysis_image(gray)  # (h, w) uint8, longest side <= ANALYSIS_SIDE
    if has_border(g):
        found.add("border")
    inks = ink_components(g)
    L = max(g.shape)
    if any(is_arrow(k, g.shape) or is_outline(k, L) for k in inks):
        found.add("stroke")
    if text_evidence(inks, g.shape) is not None:
        found.add("text")
    return [r for r in MARK_REASONS if r in found]


def colour_share(colour: np.ndarray) -> float:
    """Share of the pixels whose channels differ by >= CHROMA of the range."""
    if colour.ndim != 3 or colour.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) colour pixels, got shape {colour.shape}")
    b, g, r = (np.ascontiguousarray(colour[:, :, i]) for i in range(3))
    chroma = cv2.subtract(cv2.max(cv2.max(b, g), r), cv2.min(cv2.min(b, g), r))  # (H, W)
    top = float(np.iinfo(colour.dtype).max) if colour.dtype.kind in "ui" else 1.0
    return float(np.count_nonzero(chroma >= CHROMA * top)) / chroma.size


def has_border(g: np.ndarray) -> bool:
    """A frame along any edge of the uint8 image `g` (`border_bands`)."""
    return any(border_bands(g))


def border_bands(g: np.ndarray) -> tuple[int, int, int, int]:
    """Widths in pixels of the frames along the top, bottom, left and right edges of the
    uint8 image `g` (0: none): >= BAND_MIN exactly uniform lines (figure padding, a drawn
    frame) followed by a straight step into the image along most of the edge, and not black.

    Black bands are left alone: film digitisers and electronic collimation leave exactly
    uniform black bands with straight edges on real radiographs (on 159 of the 499
    NIH normals here), indistinguishable from black figure padding. A single uniform line is
    left alone too: many cohen figures keep a 1 px line of the page's white at an edge where
    they were cut out (it fades to a faint edge at 224 px), and a darker 1-2 px line is what
    resampling leaves. Anatomy gives no uniform band."""
    widths = [0, 0, 0, 0]
    for e, lines in enumerate((g, g[::-1], g.T, g.T[::-1])):  # line 0 at the edge
        n = max(BAND_MIN + 3, lines.shape[0] // 6)
        part = lines[:n].astype(np.float32)  # (n, edge length)
        std, mean = part.std(axis=1), part.mean(axis=1)
        flat = (std <= 2.0) & (np.abs(mean - mean[0]) <= 3.0)
        run = n if flat.all() else int(np.argmin(flat))
        if run < BAND_MIN or run == n or mean[0] <= 2 * INK_BLACK:  # none, all, or black
            continue
        step = float(np.mean(np.abs(part[run : run + 2] - mean[0]).max(axis=0) >= 24))
        if step >= 0.6:
            widths[e] = run
    top, bottom, left, right = widths
    return top, bottom, left, right


def record_marks(manifest: Manifest, found: dict[str, tuple[str, ...]]) -> int:
    """Write the detector's reasons (id -> reasons) into the rows' `marks` cells, except where
    a person's verdict stands ("clean" / "marked: ..."); returns how many cells changed."""
    by_id = manifest.by_id()
    changed = 0
    for rid, reasons in found.items():
        rec = by_id[rid]
        cell = marks_cell(reasons)
        if not is_verdict(rec.marks) and rec.marks != cell:
            rec.marks = cell
            changed += 1
    return changed
