"""Where the shared openb trace is, and what a test does when it is missing.

The trace lives beside the repository (``../shared/traces/openb``), as CI lays it out. A
developer without it gets the trace tests skipped; under CI (``CI`` set) a missing trace
fails them, so "beats FGD" is never reported green without having been measured.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

OPENB = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "openb"


def require_openb() -> Path:
    """The trace directory; skip (or, under CI, fail) the calling test when it is missing."""
    if not OPENB.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the openb trace is missing at {OPENB}, and CI must measure on it")
        pytest.skip(f"no openb trace at {OPENB}")
    return OPENB
