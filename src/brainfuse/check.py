"""The planning check: run before any job, by the Snakefile and by ``brainfuse check``.

It discovers the inputs and says, in one readable table, what each input folder holds and what
the filters turned away, whether the participants table fits the inputs and the label, how many
folds the classes allow, and which methods run. Problems that would stop a job later (no label
column, one class, too few subjects for ``cv.n_folds``, a folder whose filter keeps nothing) are
errors here, each naming the config key or the file; the rest are warnings, printed once.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from brainfuse.core.errors import ConfigError
from brainfuse.folds import check_feasible, planned_n_folds, subjects_per_class
from brainfuse.input_scan import FilterScan
from brainfuse.inputs import Inputs, discover, planning_subjects

if TYPE_CHECKING:
    from brainfuse.config import Config
    from brainfuse.methods.catalog import Catalog
    from brainfuse.modalities.base import Modality

#: Subject labels listed in a message before "and N more".
SHOWN = 8
INDENT = "  "


@dataclass
class PlanCheck:
    """The outcome of :func:`check_plan`.

    Attributes
    ----------
    inputs : Inputs or None
        The discovered inputs (None when discovery failed: see ``errors``).
    scans : list of FilterScan
        One per input kind and root (none for the demo).
    samples : dict
        Modality -> discovered samples.
    class_sizes : dict
        Label -> subjects with inputs and that label.
    sites : set of str
        Sites of the labelled subjects (``label.site_column``), if the table has them.
    n_folds : int or None
        Planned outer folds; ``folds_note`` says how a number not given was chosen.
    run_methods, skipped_methods : dict
        Method -> stages that run in every fold; method -> why it does not.
    pretrained_once : dict
        Method -> where its encoder comes from when it is pre-trained once (``pretrain_on``)
        or given (``init``) instead of pre-trained in every fold.
    errors, warnings : list of str
        Errors stop planning; warnings are printed once.
    """

    inputs: Inputs | None = None
    scans: list[FilterScan] = field(default_factory=list)
    samples: dict[str, int] = field(default_factory=dict)
    participants: Path | None = None
    class_sizes: dict[str, int] = field(default_factory=dict)
    sites: set[str] = field(default_factory=set)
    n_folds: int | None = None
    folds_note: str = ""
    run_methods: dict[str, list[str]] = field(default_factory=dict)
    skipped_methods: dict[str, str] = field(default_factory=dict)
    pretrained_once: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_errors(self) -> None:
        """Stop with every error in one message."""
        if self.errors:
            raise ConfigError(
                "planning check failed:\n" + "\n".join(f"  - {e}" for e in self.errors)
            )

    def text(self) -> str:
        """The readable table ``brainfuse check`` prints."""
        lines = ["brainfuse planning check", "", "Inputs"]
        for scan in self.scans:
            lines.append(f"  {scan.kind:<11} {scan.matched:>5} files kept in {scan.root}")
            lines += [f"  {'':<11} {'':>5} not kept: {line}" for line in scan.lines()]
        if self.samples:
            counts = ", ".join(f"{m} {n}" for m, n in self.samples.items())
            lines.append(f"  samples: {counts}")
        if self.participants is not None:
            lines += ["", f"Participants  {self.participants}"]
        if self.class_sizes:
            counts = ", ".join(f"{label} {n}" for label, n in sorted(self.class_sizes.items()))
            lines.append(f"  subjects per class: {counts}")
        if self.sites:
            lines.append(f"  sites: {len(self.sites)} ({_listed(sorted(self.sites))})")
        if self.n_folds is not None:
            lines.append(f"  outer folds: {self.n_folds}{self.folds_note}")
        if self.run_methods or self.skipped_methods:
            names = [
                f"{m} ({self.pretrained_once[m]}, then {', '.join(stages)} per fold)"
                if m in self.pretrained_once
                else m
                if len(stages) == 1
                else f"{m} ({', '.join(stages)})"
                for m, stages in self.run_methods.items()
            ]
            lines += ["", f"Methods  {len(names)} run"]
            wrapped = textwrap.wrap(", ".join(names), 96)
            lines += [INDENT + line for line in wrapped]
            lines += [f"  skipped {m}: {why}" for m, why in self.skipped_methods.items()]
        if self.warnings:
            lines += ["", "Warnings"] + [f"  - {w}" for w in self.warnings]
        if self.errors:
            lines += ["", "Errors"] + [f"  - {e}" for e in self.errors]
        lines += ["", "OK" if not self.errors else f"{len(self.errors)} error(s)"]
        return "\n".join(lines)


def check_plan(
    config: Config,
    modalities: Mapping[str, Modality],
    catalog: Catalog,
    scan_roots: bool = True,
) -> PlanCheck:
    """Discover the inputs and check that the plan can run.

    Parameters
    ----------
    config : Config
        The validated config (:func:`brainfuse.config.read_config`).
    modalities : mapping
        Modality name -> modality (built-in and extensions').
    catalog : Catalog
        The methods (checked against ``config.methods`` already).
    scan_roots : bool
        Walk the input folders for the files the filters turn away. A job that re-reads the
        workflow (on a cluster) skips this: the main process has checked them.

    Returns
    -------
    PlanCheck
        Call :meth:`PlanCheck.raise_errors` to stop on errors.
    """
    raw = dict(config.raw)
    check = PlanCheck()
    if scan_roots and not raw["input"]["demo"]:
        check.scans = [scan for m in modalities.values() for scan in m.input_scans(raw)]
        check.errors += [
            f"no {s.kind} file kept under {s.root}"
            + (f"; not kept: {'; '.join(s.lines())}" if s.turned_away else "")
            for s in check.scans
            if s.matched == 0
        ]
    if check.errors:
        return check
    try:
        check.inputs = discover(raw, modalities)
    except (FileNotFoundError, ValueError) as error:
        check.errors.append(str(error))
        return check
    check.samples = {name: len(t) for name, t in check.inputs.tables.items()}
    check.participants = check.inputs.participants
    subjects = _participants_checks(check, raw)
    available = {m for m, n in check.samples.items() if n}
    check.run_methods, check.skipped_methods = catalog.plan(config.methods, available)
    _skip_demo_corpus_methods(check, config)
    check.pretrained_once = _pretrained_once(config.methods, check.run_methods)
    if subjects is not None and not check.errors:
        _folds_checks(check, raw["cv"], subjects)
    if subjects is not None:
        _pretrained_checks(check, config, catalog, set(subjects["subject"].astype(str)))
    if not raw["input"]["demo"] and not check.errors:
        _adjustment_checks(check, raw, modalities)
    return check


def _participants_checks(check: PlanCheck, config: dict) -> pd.DataFrame | None:
    """Label column, classes, positive class, and subjects missing on either side."""
    label = config["label"]
    try:
        samples = planning_subjects(check.inputs, config)
    except (FileNotFoundError, ValueError) as error:
        check.errors.append(f"{check.participants}: {error}")
        return None
    with_inputs = set(samples["subject"].astype(str))
    if not config["input"]["demo"]:
        from brainfuse.core.samples import read_participants

        table = read_participants(check.participants, config["input"]["participant_column"])
        rows = set(table.index.astype(str))
        if no_row := sorted(with_inputs - rows):
            check.warnings.append(
                f"{len(no_row)} subjects have inputs but no row in {check.participants.name} "
                f"(excluded, no label): {_listed(no_row)}"
            )
        if no_inputs := sorted(rows - with_inputs):
            check.warnings.append(
                f"{len(no_inputs)} participants have no inputs: {_listed(no_inputs)}"
            )
    labelled = samples[samples["label"].notna()]
    unlabelled = sorted(set(samples.loc[samples["label"].isna(), "subject"].astype(str)))
    if unlabelled and not config["input"]["demo"]:
        source = f"entity {label['entity']}" if label["entity"] else f"column {label['column']}"
        check.warnings.append(
            f"{len(unlabelled)} subjects have no label ({source}; excluded): {_listed(unlabelled)}"
        )
    check.class_sizes = subjects_per_class(labelled) if len(labelled) else {}
    check.sites = set(labelled["site"].astype(str)) - {"n/a"}
    entity = label["entity"]
    key = f"label.entity {entity!r}" if entity else f"label.column {label['column']!r}"
    if len(check.class_sizes) < 2:
        check.errors.append(
            f"{key} gives {len(check.class_sizes)} class(es) among the subjects with inputs "
            f"({_counts(check.class_sizes)}); classification needs two"
        )
    elif str(label["positive"]) not in check.class_sizes:
        check.errors.append(
            f"label.positive {label['positive']!r} is not a value of {key}; values: "
            f"{sorted(check.class_sizes)}"
        )
    elif len(check.class_sizes) > 2:
        check.warnings.append(
            f"{key} has {len(check.class_sizes)} classes ({_counts(check.class_sizes)}): "
            f"{label['positive']!r} is classified against the rest"
        )
    return labelled


def _adjustment_checks(check: PlanCheck, config: dict, modalities: Mapping[str, Modality]) -> None:
    """Harmonisation and confound columns exist before a job needs them.

    ``harmonise`` columns are read by the diagnostics job even with ``method: none``, so a
    missing covariate there is a warning (the diagnostics' ComBat goes without it); with
    ``method: combat``, and for any ``confounds``, it is an error.
    """
    from brainfuse.core.samples import read_participants

    table = read_participants(check.participants, config["input"]["participant_column"])
    per_sample = {"site"} | {f for m in modalities.values() for f in m.qc_fields}
    per_sample |= {c for t in check.inputs.tables.values() for c in t.columns}
    known = set(table.columns) | per_sample

    def missing(columns: list[str]) -> list[str]:
        return [c for c in columns if c not in known]

    where = (
        f"neither columns of {check.participants.name} ({_listed(sorted(table.columns))}) "
        f"nor per-sample fields ({', '.join(sorted(per_sample))})"
    )
    harmonise = config["harmonise"]
    if absent := missing([harmonise["batch"]]):
        check.errors.append(f"harmonise.batch {absent[0]!r} is {where}")
    if absent := missing(list(harmonise["covariates"])):
        message = f"harmonise.covariates {absent} are {where}"
        if harmonise["method"] == "none":
            check.warnings.append(f"{message}; the diagnostics' in-fold ComBat goes without them")
        else:
            check.errors.append(message)
    if absent := missing(list(config["confounds"])):
        check.errors.append(f"confounds {absent} are {where}")


def _pretrained_once(methods: dict, run: dict[str, list[str]]) -> dict[str, str]:
    """Where each running method's encoder comes from when it is not pre-trained per fold."""
    out = {}
    for name, cfg in methods.items():
        corpus, init = getattr(cfg, "pretrain_on", None), getattr(cfg, "init", None)
        if name in run and corpus:
            out[name] = f"pretrain once on {corpus}"
        elif name in run and init:
            out[name] = f"encoder from {init}"
    return out


def _skip_demo_corpus_methods(check: PlanCheck, config: Config) -> None:
    """A method pre-trained on the demo's corpus runs on the demo only (a config that extends
    the checkout's config.yaml keeps its methods)."""
    from brainfuse.methods.pretrained import DEMO_CORPUS

    if config.input.demo:
        return
    for name in list(check.run_methods):
        if config.methods[name].pretrain_on == DEMO_CORPUS:
            del check.run_methods[name]
            check.skipped_methods[name] = (
                f"pre-trains on the demo's corpus (pretrain_on: {DEMO_CORPUS}), and this run "
                "is not the demo"
            )


def _pretrained_checks(check: PlanCheck, config: Config, catalog: Catalog, study: set[str]) -> None:
    """A corpus (``pretrain_on``) or an encoder (``init``) must exist and must not have seen a
    subject of this study: any of them may be a test subject of some fold. Subjects are
    compared by label, so the corpus and the study must share one subject namespace."""
    from brainfuse.methods.pretrained import (
        DEMO_CORPUS,
        corpus_subjects,
        method_corpus,
        overlapping_subjects,
        pretrained_subjects,
        read_manifest,
    )

    for name in check.run_methods:
        method = config.methods[name]
        if not (method.pretrain_on or method.init):
            continue
        key = f"methods.{name}.{'pretrain_on' if method.pretrain_on else 'init'}"
        source = method.pretrain_on or method.init
        if source == DEMO_CORPUS and config.input.demo:
            continue  # made by the run (subjects c01, c02, ...); its pre-training job checks
        try:
            if method.pretrain_on:
                seen = corpus_subjects(method_corpus(catalog[name], source))
            else:
                seen = pretrained_subjects(read_manifest(source))
        except ConfigError as error:  # names its key already
            check.errors.append(str(error))
            continue
        except (FileNotFoundError, ValueError) as error:  # a missing or unreadable file
            check.errors.append(f"{key}: {error}")
            continue
        if shared := overlapping_subjects(seen, study):
            check.errors.append(
                f"{key}: {len(shared)} subjects of this study are in the pre-training data of "
                f"{source} (any may be a test subject; pre-train on other subjects): "
                f"{_listed(shared)}"
            )


def _folds_checks(check: PlanCheck, cv: Mapping, subjects: pd.DataFrame) -> None:
    try:
        check.n_folds = planned_n_folds(cv, subjects)
        check_feasible(subjects, check.n_folds, cv["group_by"])
    except ConfigError as error:
        check.errors.append(str(error))
        return
    if cv["group_by"] == "site":
        check.folds_note = " (one per site: cv.group_by is site)"
    elif cv["n_folds"] == "auto":
        check.folds_note = " (cv.n_folds: auto)"


def _counts(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{label} {n}" for label, n in sorted(sizes.items())) or "none"


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more
