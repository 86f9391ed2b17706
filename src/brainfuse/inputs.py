"""Input discovery: a table per modality (BIDS entities + path), from snakebids or the demo layout.

Each modality finds its own samples (:meth:`~brainfuse.modalities.base.Modality.discover`); this
module runs them over the configured modalities and finds the participants table. Rules are wired
from these tables, so real data and the demo take the same code paths downstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from brainfuse.core.bids import SAMPLE_ENTITIES

if TYPE_CHECKING:
    from brainfuse.modalities.base import Modality


@dataclass(frozen=True)
class Inputs:
    """Discovered inputs: for each modality a table with entity columns and a ``path`` column.

    A modality may add columns of its own (fMRI's ``source``: ``bold`` or ``timeseries``).
    """

    tables: dict[str, pd.DataFrame]
    participants: Path

    def entities(self, modality: str) -> list[str]:
        """Entities that vary between this modality's samples (the rule wildcards)."""
        table = self.tables[modality]
        return [e for e in SAMPLE_ENTITIES if e in table.columns]


def demo_runs(n_subjects: int, seed: int) -> dict[str, list[int]]:
    """Subjects of the demo dataset and their fMRI runs, as the generator draws them."""
    from brainfuse.demo.participants import make_participants

    table = make_participants(n_subjects, seed)
    return {
        pid.removeprefix("sub-"): list(runs)
        for pid, runs in zip(table["participant_id"], table["runs"], strict=True)
    }


def discover(config: dict, modalities: Mapping[str, Modality]) -> Inputs:
    """Build each modality's input table from the config: the demo layout, or its own discovery."""
    inp = config["input"]
    if inp["demo"]:
        root = Path(config["results_dir"]) / "demo_bids"
        runs = demo_runs(inp["demo_subjects"], config["seed"])
        tables = {name: m.demo_table(root, runs, config) for name, m in modalities.items()}
        return Inputs(tables=tables, participants=root / "participants.tsv")
    roots = [root for m in modalities.values() for root in m.input_roots(config).values()]
    if not roots:
        raise ValueError(
            "input: demo is false but no input folder is set for any of "
            f"{', '.join(modalities)} (e.g. fmriprep_dir, xcpd_dir, eeg_dir, sc_dir)"
        )
    tables = {name: m.discover(config) for name, m in modalities.items()}
    return Inputs(tables=tables, participants=_participants(inp["participants"], roots))


def _participants(configured: str | None, roots: list[Path]) -> Path:
    """``input.participants``, or the first input root's ``participants.tsv``."""
    if configured is not None:
        return Path(configured)
    found = [r / "participants.tsv" for r in roots if (r / "participants.tsv").exists()]
    if not found:
        raise FileNotFoundError(
            f"input.participants is not set and no participants.tsv in {[str(r) for r in roots]}"
        )
    return found[0]


def planning_subjects(inputs: Inputs, config: dict) -> pd.DataFrame:
    """The discovered samples of every modality with ``label`` and ``site``, for planning.

    Which samples pass QC is known only after the caches; this is what planning can know.
    """
    from brainfuse.core.samples import attach_labels, read_participants

    tables = [t for t in inputs.tables.values() if len(t)]
    if not tables:
        return pd.DataFrame(columns=["subject", "label", "site"])
    samples = pd.concat(tables, ignore_index=True)
    if config["input"]["demo"]:  # participants.tsv is written by the demo job: draw the same table
        from brainfuse.demo.participants import make_participants

        table = make_participants(config["input"]["demo_subjects"], config["seed"])
        participants = table.set_index(table["participant_id"].str.removeprefix("sub-"))
    else:
        participants = read_participants(inputs.participants, config["input"]["participant_column"])
    return attach_labels(samples, participants, config["label"])
