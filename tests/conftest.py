"""Shared fixtures: where the interop vectors live, and how their absence is handled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INTEROP = REPO.parent / "shared" / "interop"


def interop_path(relative: str) -> Path:
    """A file under ../shared/interop; skip (or, under CI=true, fail) when the folder is absent."""
    if not INTEROP.is_dir():
        reason = f"interop vectors not found at {INTEROP} (they live beside the project, in ../shared/interop)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    path = INTEROP / relative
    assert path.exists(), f"interop file {relative} is missing from {INTEROP}"
    return path


@pytest.fixture
def interop() -> Path:
    """The interop folder (skips or fails as ``interop_path`` does)."""
    interop_path(".")
    return INTEROP
