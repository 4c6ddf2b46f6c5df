"""Test doubles shared by the FID tests."""

from __future__ import annotations

import numpy as np

from cxraug.metrics import features as feats


def tiny_extractor(name: str = "tiny-test", standard: bool = True) -> feats.FeatureExtractor:
    """4x4 grid of block means and stds of channel 0: (B, 299, 299, 3) -> (B, 32)."""

    def embed(x: np.ndarray) -> np.ndarray:
        g = x[:, :296, :296, 0].reshape(len(x), 4, 74, 4, 74)
        return np.concatenate(
            [g.mean((2, 4)).reshape(len(x), -1), g.std((2, 4)).reshape(len(x), -1)], axis=1
        )

    return feats.FeatureExtractor(name, standard, None, 32, embed)
