"""The configuration, read once: validated against the schema, which holds every default, into
typed sections.

The Snakefile calls :func:`read_config` on Snakemake's ``config`` before planning anything; rules
then hand each job only the sections (or keys) it reads, so that a changed value reruns only the
jobs that depend on it. The modality sections (``fmri``, ``eeg``, ``sc``) stay mappings: which of
their keys a step reads is declared by the modality itself (:mod:`brainfuse.modalities`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from brainfuse.core.errors import ConfigError

#: The configuration's JSON schema (YAML): every key, its checks and its default.
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@dataclass(frozen=True)
class InputConfig:
    """``input``: where the data are (or the embedded demo)."""

    demo: bool
    demo_subjects: int
    demo_xcpd_subjects: int
    demo_corpus_subjects: int
    fmriprep_dir: str | None
    xcpd_dir: str | None
    roi_tables: Mapping[str, str] | None
    timeseries_tr: float | str | None
    mean_fd_column: str | None
    eeg_dir: str | None
    sc_dir: str | None
    participants: str | None
    participant_column: str
    participant_label: tuple[str, ...]
    exclude_participant_label: tuple[str, ...]
    pybids_db_dir: str | None


@dataclass(frozen=True)
class LabelConfig:
    """``label``: the class label, from a participants column or a BIDS entity."""

    column: str
    entity: str | None
    positive: str | None
    site_column: str


@dataclass(frozen=True)
class AtlasConfig:
    """``atlas``: the parcellation every modality is expressed in."""

    name: str
    path: str | None
    labels: str | None
    data_dir: str | None
    min_coverage: float


@dataclass(frozen=True)
class CVConfig:
    """``cv``: outer folds grouped by subject (or site) with an inner validation split."""

    n_folds: int | str  # a number, or "auto" (resolved when the workflow is planned)
    val_fraction: float
    group_by: str


@dataclass(frozen=True)
class HarmoniseConfig:
    """``harmonise``: in-fold site harmonisation of the baselines' features."""

    method: str  # "none" or "combat"
    batch: str
    covariates: tuple[str, ...]
    min_site_size: int


@dataclass(frozen=True)
class MethodConfig:
    """``methods.<name>``: the stages to run, in order, and hyper-parameter overrides;
    ``pretrain_on`` (a corpus cache or folder) or ``init`` (an ``encoder.bin``) replace the
    per-fold ``pretrain`` stage (:mod:`brainfuse.methods.pretrained`)."""

    stages: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    pretrain_on: str | None = None
    init: str | None = None
    variant_of: str | None = None


@dataclass(frozen=True)
class Config:
    """The whole configuration, validated and with every default filled in.

    Attributes
    ----------
    raw : Mapping
        The validated mapping itself (for provenance records and for code that takes a whole
        modality section).
    """

    results_dir: str
    input: InputConfig
    filters: Mapping[str, Mapping[str, Any]]
    label: LabelConfig
    atlas: AtlasConfig
    cv: CVConfig
    seed: int
    harmonise: HarmoniseConfig
    confounds: tuple[str, ...]
    methods: Mapping[str, MethodConfig]
    resources: Mapping[str, Mapping[str, Any]]
    extensions: tuple[str, ...]
    raw: Mapping[str, Any]

    @property
    def variants(self) -> dict[str, str]:
        """The configured method variants: name -> the catalog method it copies."""
        return {n: m.variant_of for n, m in self.methods.items() if m.variant_of}

    def section(self, name: str) -> Mapping[str, Any]:
        """A modality's config section (``fmri``, ``eeg``, ``sc``, or an extension's).

        The sections are plain dicts so that Snakemake can hand them to jobs; treat them as
        read-only."""
        if name not in self.raw:
            raise ConfigError(f"the config has no section {name!r}")
        return self.raw[name]

    def resource(self, group: str, key: str) -> Any:
        """Resource ``key`` of a rule group, falling back to ``resources.default``."""
        return self.resources.get(group, {}).get(key, self.resources["default"].get(key))


def _with_defaults(validator_class: type) -> type:
    """A validator that fills in each property's ``default`` before checking it (as
    :func:`snakemake.utils.validate` does), so defaults live in the schema alone."""
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_check})


def validate(config: Mapping[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """``config`` checked against the schema, with every missing key set to its default.

    Raises
    ------
    ConfigError
        Naming every offending key (as a dotted path) and the schema's complaint.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    filled = copy.deepcopy(dict(config))
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("; ".join(_describe(error) for error in errors))
    return filled


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"config key {where}: {error.message}"


def section_defaults(section: str, schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The schema's default of every key of a config section (e.g. ``eeg``), for code called
    outside a workflow run (tests, benchmarks) that needs a complete section."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    properties = schema["properties"][section]["properties"]
    return {key: copy.deepcopy(p["default"]) for key, p in properties.items() if "default" in p}


def _refuse_label_adjustment(raw: Mapping[str, Any]) -> None:
    """The label may not be a ComBat covariate or a confound: applying either to validation and
    test subjects would read their labels (ComBat's design matrix, the regression's inputs)."""
    label = {"label", raw["label"]["column"]}
    for key, names in (
        ("harmonise.covariates", raw["harmonise"]["covariates"]),
        ("confounds", raw["confounds"]),
    ):
        if used := sorted(label & set(names)):
            raise ConfigError(
                f"{key}: {used} is the label; adjusting test subjects for it would use their "
                "labels. Leave it out (ComBat then removes only what site explains)"
            )


def read_config(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> Config:
    """Validate ``config`` (Snakemake's ``config``, or a loaded YAML file) into a :class:`Config`.

    Parameters
    ----------
    config : Mapping
        The user's configuration; keys it omits take the schema's defaults.
    schema_path : str or Path
        The JSON schema (YAML) of the configuration.
    """
    raw = validate(config, schema_path)
    _refuse_label_adjustment(raw)
    inp = raw["input"]
    return Config(
        results_dir=raw["results_dir"],
        input=InputConfig(
            **{
                **inp,
                "participant_label": tuple(inp["participant_label"]),
                "exclude_participant_label": tuple(inp["exclude_participant_label"]),
            }
        ),
        filters=raw["filters"],
        label=LabelConfig(**raw["label"]),
        atlas=AtlasConfig(**raw["atlas"]),
        cv=CVConfig(**raw["cv"]),
        seed=raw["seed"],
        harmonise=HarmoniseConfig(
            **{**raw["harmonise"], "covariates": tuple(raw["harmonise"]["covariates"])}
        ),
        confounds=tuple(raw["confounds"]),
        methods={
            name: MethodConfig(
                stages=tuple(m["stages"]),
                params=m.get("params", {}),
                pretrain_on=m["pretrain_on"],
                init=m["init"],
                variant_of=m["variant_of"],
            )
            for name, m in raw["methods"].items()
        },
        resources=raw["resources"],
        extensions=tuple(raw["extensions"]),
        raw=raw,
    )
