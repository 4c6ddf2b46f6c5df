"""Shared test fixtures.

The real-data tier reads ../shared/cxr-data (never copied into the repo). It skips when the
folder is absent, except under CI=true where its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXRAUG_SHARED_DATA", REPO.parent / "shared" / "cxr-data"))


@pytest.fixture(scope="session")
def cxr_data() -> Path:
    """Path to ../shared/cxr-data; skip (or fail under CI=true) when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        msg = f"real chest X-ray data not found at {SHARED_DATA}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (required under CI=true)")
        pytest.skip(msg)
    return SHARED_DATA
