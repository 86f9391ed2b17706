"""What a modality is to the pipeline: the :class:`Modality` protocol.

A modality (fMRI, EEG, SC, ...) is one folder under ``brainfuse.modalities``. Its object says how
its inputs are found, which files one sample's job reads and writes, how a sample is processed,
and how the processed samples are joined into the dataset cache ``{name}.parquet``. Discovery
(:func:`brainfuse.inputs.discover`), the Snakemake rules (``workflow/rules/modalities.smk``) and
the generic job scripts iterate over modality objects and never switch on a modality's name.

Module-level imports of a modality class must stay light (no torch, mne or nilearn): the
Snakefile imports the objects when it is parsed. Heavy work is imported inside
:meth:`Modality.run_sample` and :meth:`Modality.build_cache`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd

if TYPE_CHECKING:
    from brainfuse.input_scan import FilterScan

#: One output of a sample's job: the BIDS datatype folder and the fixed entities of its name
#: (the sample's own entities are added by the rule).
OutputName = tuple[str, dict[str, str]]


@runtime_checkable
class Modality(Protocol):
    """One input modality, as the pipeline sees it.

    Attributes
    ----------
    name : str
        Short name (``"fmri"``): rule names ``{name}_run_<k>`` and ``{name}_cache``, the cache file
        ``cache/{name}.parquet`` and the QC table ``qc/{name}_qc.tsv`` are made from it.
    datatype : str
        BIDS datatype folder of its per-sample derivatives (``func``, ``eeg``, ``dwi``).
    config_section : str
        Key of its section in the config (``"fmri"``).
    run_keys : tuple of str
        Keys of that section the per-sample step reads; only these reach the ``{name}_run_<k>``
        rule, so changing any other key does not rerun the per-sample jobs.
    cache_keys : tuple of str
        Keys of that section only the cache builder reads.
    filters : tuple of str
        Keys of the config's ``filters`` section (input kinds) its discovery uses.
    qc_fields : tuple of str
        QC sidecar fields copied into the cache table for every included sample.
    cache_columns : tuple of str
        Names of the arrays in its cache.
    cache_inputs : dict of str to str
        Argument name of :meth:`build_cache` -> name of the per-sample output it collects; the
        ``data`` entry is the per-sample deliverable the default target asks for.
    """

    name: str
    datatype: str
    config_section: str
    run_keys: tuple[str, ...]
    cache_keys: tuple[str, ...]
    filters: tuple[str, ...]
    qc_fields: tuple[str, ...]
    cache_columns: tuple[str, ...]
    cache_inputs: Mapping[str, str]

    def input_roots(self, config: dict) -> dict[str, Path]:
        """Root folder of each configured input kind (``filters`` key -> path) for real data."""
        ...

    def discover(self, config: dict) -> pd.DataFrame:
        """Its samples in real data: entity columns and ``path``, one row per sample."""
        ...

    def input_scans(self, config: dict) -> list[FilterScan]:
        """For the planning check: per input folder, the files kept and those turned away, and
        why (:func:`brainfuse.input_scan.scan_filter` for a BIDS root)."""
        ...

    def demo_table(self, root: Path, runs: Mapping[str, list[int]], config: dict) -> pd.DataFrame:
        """Its samples in the demo layout under ``root`` (subjects and their fMRI runs)."""
        ...

    def demo_files(self, table: pd.DataFrame) -> list[str]:
        """Every file the demo generator writes for these samples (inputs and companions)."""
        ...

    def sample_inputs(self, row: pd.Series, config: dict) -> dict[str, str | list[str]]:
        """Files one sample's job reads (input name -> path; ``[]`` for a missing optional)."""
        ...

    def sample_outputs(self, atlas: str) -> dict[str, OutputName]:
        """Output name -> datatype folder and fixed entities; paths exactly as published.

        Outputs in the ``figures`` folder are QC pictures: config ``qc.run_figures: false``
        leaves them out of the job's outputs, and :meth:`run_sample` then gets no path for them
        and must not draw them."""
        ...

    def run_params(self, config: dict) -> dict[str, Any]:
        """The config values the per-sample step reads (its ``run_keys`` and what it needs)."""
        ...

    def sample_params(self, row: pd.Series, config: dict) -> dict[str, Any]:
        """Per-sample values that are not files the job depends on (e.g. a sidecar path)."""
        ...

    def run_sample(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        """Process one sample: ``params`` holds ``entities``, ``atlas``, ``section`` and the
        values of :meth:`sample_params`; ``outputs`` are the paths of :meth:`sample_outputs`."""
        ...

    def build_cache(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        """Join the samples into ``outputs["cache"]`` and their QC into ``outputs["qc"]``.

        ``inputs`` holds the lists named by ``cache_inputs`` and ``participants``; ``params``
        holds ``label``, ``atlas`` and ``section`` (its whole config section, recorded in the
        cache metadata).
        """
        ...

    def report_section(self, cache_path: str) -> str:
        """An HTML section for the dataset report from its cache ("" for none)."""
        ...


def section_values(config: dict, modality: Modality, keys: tuple[str, ...]) -> dict[str, Any]:
    """The ``keys`` of the modality's config section, in the order of ``keys``: the order keys
    are written in a config file then never reruns a step."""
    section = config[modality.config_section]
    return {key: section[key] for key in keys if key in section}


def modality_reference(modality: Modality) -> str:
    """``module:Class`` of a modality object, to rebuild it in a job's own process."""
    kind = type(modality)
    return f"{kind.__module__}:{kind.__qualname__}"


def load_modality(reference: str) -> Modality:
    """The modality object named by :func:`modality_reference` (its class takes no arguments)."""
    module, _, qualname = reference.partition(":")
    kind: Any = importlib.import_module(module)
    for part in qualname.split("."):
        kind = getattr(kind, part)
    return kind()
