"""The feature cache of `cxraug fid` (docs/fid.md "Cache"): the (N, D) features of a set are
stored in CACHE_DIR/<key>.npz (default WORKSPACE/.cache/fid), key = sha256 of (sorted content
sha256s, extractor name, weights sha256, resize filter, feature dim, cxraug version). A changed
file changes the key; an entry whose stored metadata or keys differ from what was asked is
recomputed with a warning, never reused. Written atomically, float64 as computed, so a hit
gives bit-identical results.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cxraug import __version__
from cxraug.core.fsutil import atomic_save_npz, sha256_bytes
from cxraug.core.ui import err, warn
from cxraug.metrics import features as feats
from cxraug.metrics.inputs import ImageSet, check_readable


def cache_meta(s: ImageSet, ex: feats.FeatureExtractor, resize: str) -> dict[str, Any]:
    return {
        "inputs_sha256": sha256_bytes("\n".join(s.keys).encode()),
        "n": len(s),
        "extractor": ex.name,
        "weights_sha256": ex.weights_sha256,
        "dim": ex.dim,
        "resize": resize,
        "cxraug": __version__,
    }


def set_features(
    s: ImageSet,
    ex: feats.FeatureExtractor,
    resize: str,
    batch_size: int,
    cache_dir: Path | None,
    label: str,
    show_progress: bool = True,
) -> tuple[np.ndarray, str]:
    """(N, D) float64 features of a canonical set and the cache outcome ("hit", "miss", "off")."""
    meta = cache_meta(s, ex, resize)
    path = None
    if cache_dir is not None:
        key = sha256_bytes(json.dumps(meta, sort_keys=True).encode())
        path = Path(cache_dir) / f"{key[:32]}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    stored, f = json.loads(str(z["meta"])), np.asarray(z["features"], np.float64)
                    ok = (
                        stored == meta and list(z["keys"]) == s.keys and f.shape == (len(s), ex.dim)
                    )
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
                ok, f = False, np.empty(0)
                warn(f"feature cache {path} is unreadable ({e}); recomputing it")
            if ok:
                err.print(f"{label}: feature cache hit ({path})", highlight=False)
                return f, "hit"
            warn(f"feature cache {path} does not match the inputs; recomputing it")
    check_readable(s)
    f = feats.extract_features(
        lambda i: s.loaders[i](),
        len(s),
        ex,
        resize=resize,
        batch_size=batch_size,
        label=f"{label} features",
        show_progress=show_progress,
    )
    if path is not None:
        # float64 as computed: a cache hit gives bit-identical results
        atomic_save_npz(
            path,
            features=f,
            keys=np.asarray(s.keys, str),
            meta=np.asarray(json.dumps(meta, sort_keys=True)),
        )
    return f, ("miss" if path is not None else "off")
