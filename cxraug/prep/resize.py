"""The per-image maths of `preprocess`, shared with `export`: crop, resize, map to [-1, 1].

One owner for the resize rule, so an exported training set has exactly the pixels `train`
sees: the crop is resized straight to size x size like the paper (aspect NOT kept), or with
`keep_aspect` its longest side is scaled to `size` and the rest padded black (-1), centred.
The filter is cv2.INTER_AREA (pixel-area averaging: no aliasing) when both sides shrink, else
INTER_CUBIC. The option help of these settings lives here too (`PreprocessConfig`,
`ExportConfig`).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from cxraug.core.images import Box
from cxraug.core.settings import setting


def size_setting() -> Any:
    return setting(224, "Output side in pixels (the paper: 224).")


def keep_aspect_setting() -> Any:
    # False = stretch the crop to size x size, as the paper does
    return setting(False,
                   "Pad the crop to a square (black) instead of stretching it as the paper does.",
                   "--keep-aspect/--stretch")  # fmt: skip


def jpeg_reduce_setting() -> Any:
    return setting(True,
                   "Decode big JPEGs at 1/2-1/8 scale when the crop keeps >= 2x --size per side.",
                   "--jpeg-reduce/--no-jpeg-reduce")  # fmt: skip


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W) -> (h, w): INTER_AREA when both sides shrink, else INTER_CUBIC."""
    shrink = img.shape[1] >= w and img.shape[0] >= h
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def preprocess_image(
    gray01: np.ndarray, crop: Box | None, size: int, keep_aspect: bool = False
) -> np.ndarray:
    """(H, W) float [0, 1] image -> (size, size) float32 in [-1, 1]; `crop` in its pixels."""
    if gray01.ndim != 2:
        raise ValueError(f"expected an (H, W) gray image, got shape {gray01.shape}")
    H, W = gray01.shape
    x0, y0, x1, y1 = crop if crop is not None else (0, 0, W, H)
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError(f"crop {crop} does not fit an image of {W}x{H}")
    region = np.asarray(gray01[y0:y1, x0:x1], np.float32)  # (h, w)
    h, w = region.shape
    if keep_aspect:
        s = size / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        out = np.zeros((size, size), np.float32)  # black padding = -1 after scaling
        top, left = (size - nh) // 2, (size - nw) // 2
        out[top : top + nh, left : left + nw] = resize(region, nw, nh)
    else:
        out = resize(region, size, size)  # (size, size)
    # cubic overshoots a little at edges; clip before mapping [0, 1] -> [-1, 1]
    return (np.clip(out, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)
