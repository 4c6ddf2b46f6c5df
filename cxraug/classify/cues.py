"""`evaluate --cues`: source cues out of the classifier's inputs (docs/evaluate.md, "Source
cues"). The image functions have one owner, cxraug.prep.cues, shared with `train --cues` (the
GAN's training images); this module is what the evaluate stage imports (a stage imports its
own folder and core/ only)."""

from __future__ import annotations

from cxraug.prep.cues import CUES, CueFacts, parse_cues, remove_cues

__all__ = ["CUES", "CueFacts", "parse_cues", "remove_cues"]
