"""Shared fixtures. The reference atlas in ../shared is used when present (no network in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_NILEARN = ROOT.parent / "shared" / "data" / "nilearn_data"


@pytest.fixture(scope="session")
def atlas_data_dir() -> str | None:
    """Folder holding Schaefer-100: NILEARN_DATA, else ../shared, else nilearn's default."""
    if os.environ.get("NILEARN_DATA"):
        return os.environ["NILEARN_DATA"]
    return str(SHARED_NILEARN) if SHARED_NILEARN.exists() else None


@pytest.fixture(scope="session")
def atlas(atlas_data_dir):
    from brainfuse.core.atlas import load_atlas

    return load_atlas(data_dir=atlas_data_dir)


@pytest.fixture(scope="session")
def small_demo_bids(tmp_path_factory, atlas_data_dir) -> Path:
    """The smallest demo dataset (8 subjects, every fMRI run as BOLD), written once per session
    by the workflow's own demo_data rule; the workflow tests read it as real data."""
    from test_slurm import demo_dataset

    return demo_dataset(tmp_path_factory.mktemp("small_demo"), atlas_data_dir)
