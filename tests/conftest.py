"""Shared fixtures. The reference atlas in ../shared is used when present (no network in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_NILEARN = ROOT.parent / "shared" / "data" / "nilearn_data"


# The longest end-to-end files (about 270, 85, 80 and 65 s on two cores), started first.
LONGEST_FIRST = ("test_workflow.py", "test_slurm.py", "test_batching.py", "test_workflow_resume.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end runs first, the longest first: with pytest-xdist (files kept whole on one
    worker, in this order) the long files start at once on different workers and the short ones
    fill the gaps, rather than a long run starting last."""

    def rank(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        order = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return item.get_closest_marker("slow") is None, order

    items.sort(key=rank)


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
def small_demo_bids(tmp_path_factory, worker_id, atlas_data_dir) -> Path:
    """The smallest demo dataset (8 subjects, every fMRI run as BOLD), written once per session
    by the workflow's own demo_data rule; the workflow tests read it as real data.

    With pytest-xdist the workers share one copy: the first to ask writes it under a lock in
    the session's temporary folder, the others wait and read it.
    """
    from filelock import FileLock
    from test_slurm import demo_dataset

    if worker_id == "master":  # no xdist workers
        return demo_dataset(tmp_path_factory.mktemp("small_demo"), atlas_data_dir)
    shared = tmp_path_factory.getbasetemp().parent / "small_demo"
    with FileLock(f"{shared}.lock"):
        done = shared / "demo" / "results" / "demo_bids"
        if not (done / "ground_truth.json").exists():
            demo_dataset(shared, atlas_data_dir)
    return done
