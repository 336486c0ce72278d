"""Shared test fixtures: where ../shared lives, and settings pointed at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()
SHARED_WEIGHTS = SHARED / "weights"
SPECS = SHARED / "specs"
DEV_DATA = SHARED / "data" / "dev"

# Tests never download: checkpoints come from ../shared/weights (as CI does) or are built in the test.
os.environ.setdefault("WEIGHTS_DIR", str(SHARED_WEIGHTS))
os.environ.setdefault("ALLOW_DOWNLOAD", "0")
os.environ.setdefault("DEVICE", "cpu")


def need(path: Path) -> Path:
    """The shared material is part of every checkout's environment; its absence is a setup error."""
    if not path.exists():
        pytest.fail(f"missing shared test material: {path} (is ../shared mounted next to the repo?)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return need(SHARED)


@pytest.fixture(scope="session")
def specs_dir() -> Path:
    return need(SPECS)


@pytest.fixture(scope="session")
def dev_data() -> Path:
    return need(DEV_DATA)


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    return need(SHARED_WEIGHTS)
