"""Logging of one Snakemake job into its log file."""

from __future__ import annotations

import logging
from pathlib import Path


def setup_logging(path: str) -> None:
    """Send this job's log records (and warnings) to its Snakemake log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=path,
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
