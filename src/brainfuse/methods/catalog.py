"""The catalog of methods: the one registry of what can run, checked when the config is read.

Torch-, Lightning- and sklearn-free: the Snakefile builds it at parse time. Each family declares
its methods in its own torch-free ``specs`` module; :func:`default_catalog` assembles them. An
outside package adds its own method to a catalog::

    catalog = default_catalog()
    catalog.add(MethodSpec(name="toy", family="torch", modalities=("fmri",), stages=("train",),
                           description="a toy", params={"hidden": 8}, plugin="my_pkg.toy"))

where ``my_pkg.toy`` defines ``stage_plugins(spec) -> dict[str, StagePlugin]``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from brainfuse.core.errors import ConfigError
from brainfuse.methods.baselines import specs as baselines
from brainfuse.methods.fusion import specs as fusion
from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.ssl import specs as ssl
from brainfuse.methods.torch import specs as torch_specs

__all__ = ["MODALITY_PREFERENCE", "Catalog", "MethodSpec", "default_catalog"]

#: The modality a method without required modalities reads: the first one available.
MODALITY_PREFERENCE = ("fmri", "eeg", "sc")


class Catalog:
    """Methods by name, and the checks and lookups done on them.

    Parameters
    ----------
    specs : iterable of MethodSpec
        The methods, in the order listed (names must be unique).
    family_params : mapping, optional
        Family -> hyper-parameters every method of that family accepts, under its own
        defaults (:meth:`params`).
    """

    def __init__(
        self,
        specs: Iterable[MethodSpec] = (),
        family_params: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._family_params = {k: dict(v) for k, v in (family_params or {}).items()}
        for spec in specs:
            self.add(spec)

    def add(self, spec: MethodSpec) -> None:
        """Add ``spec``; a name already in the catalog is an error."""
        if spec.name in self._specs:
            raise ValueError(f"method {spec.name!r} is already in the catalog")
        self._specs[spec.name] = spec

    def add_variants(self, variants: Mapping[str, str]) -> None:
        """Add each ``name -> method`` of ``variants`` as a copy of ``method`` under ``name``.

        A variant runs the same stages and code as its method with its own config entry, so
        two configurations of one method (pre-trained on a corpus, and on each fold) sit side
        by side in every table.

        Raises
        ------
        ConfigError
            The method is unknown or itself a variant, or the name is taken.
        """
        for name, base in variants.items():
            key = f"methods.{name}.variant_of"
            if name in self._specs:
                raise ConfigError(
                    f"{key}: {name!r} is a catalog method; a variant needs a new name"
                )
            if base not in self._specs or self._specs[base].variant_of:
                known = [n for n in self.names() if not self._specs[n].variant_of]
                raise ConfigError(f"{key}: {base!r} is no catalog method; known: {known}")
            spec = self._specs[base]
            self.add(
                dataclasses.replace(
                    spec, name=name, variant_of=base, description=f"{spec.description} ({name})"
                )
            )

    def __getitem__(self, name: str) -> MethodSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown method {name!r}; known: {self.names()}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[MethodSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self, family: str | None = None) -> list[str]:
        """Sorted method names (of one family only, with ``family``)."""
        return sorted(n for n, s in self._specs.items() if family in (None, s.family))

    def check(self, methods_cfg: Mapping[str, Any]) -> None:
        """Refuse unknown methods and stages in the config's ``methods`` section.

        A method's configured stages must be some of its spec's stages, in the spec's order.

        Parameters
        ----------
        methods_cfg : mapping
            Method name -> its config entry: a mapping with ``stages`` (as in ``config.yaml``)
            or an object with a ``stages`` attribute (:class:`brainfuse.config.MethodConfig`).

        Raises
        ------
        ConfigError
            Naming the key, the offending value and what would be valid.
        """
        for name, cfg in methods_cfg.items():
            if name not in self._specs:
                raise ConfigError(f"methods.{name}: unknown method; known: {self.names()}")
            self._check_stages(self._specs[name], _stages_of(cfg))
            self._check_pretrained(self._specs[name], cfg)

    @staticmethod
    def _check_pretrained(spec: MethodSpec, cfg: Any) -> None:
        """``pretrain_on`` and ``init`` replace a torch method's first stage, ``pretrain``, and
        need a stage after it that starts from the encoder."""
        given = [key for key in ("pretrain_on", "init") if _entry(cfg, key)]
        if not given:
            return
        key = f"methods.{spec.name}.{given[0]}"
        if len(given) > 1:
            raise ConfigError(f"methods.{spec.name}: give pretrain_on or init, not both")
        stages = _stages_of(cfg)
        if spec.family != "torch" or stages[0] != "pretrain" or len(stages) < 2:
            raise ConfigError(
                f"{key}: replaces the per-fold pretrain stage, so the stages must start with "
                f"pretrain and go on with another (methods.{spec.name}.stages: {stages})"
            )

    @staticmethod
    def _check_stages(spec: MethodSpec, stages: list[str]) -> None:
        key = f"methods.{spec.name}.stages"
        for stage in stages:
            if stage not in spec.stages:
                raise ConfigError(
                    f"{key}: unknown stage {stage!r}; {spec.name} has stages {list(spec.stages)}"
                )
        positions = [spec.stages.index(s) for s in stages]
        if any(b <= a for a, b in zip(positions, positions[1:], strict=False)):
            raise ConfigError(
                f"{key}: {stages} is not in the order of {spec.name}'s stages {list(spec.stages)}"
            )

    def plan(
        self, methods_cfg: Mapping[str, Any], available: set[str]
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Methods to run (name -> stages) and those skipped (name -> reason).

        Parameters
        ----------
        methods_cfg : mapping
            The config's ``methods`` section (checked with :meth:`check`).
        available : set of str
            Modalities the dataset has samples of.
        """
        self.check(methods_cfg)
        run, skipped = {}, {}
        for name, cfg in methods_cfg.items():
            reason = self._skip_reason(self._specs[name], available)
            if reason:
                skipped[name] = reason
            elif _entry(cfg, "pretrain_on") or _entry(cfg, "init"):
                # pre-trained once (results/pretrained/<name>/) instead of in every fold
                run[name] = _stages_of(cfg)[1:]
            else:
                run[name] = _stages_of(cfg)
        return run, skipped

    @staticmethod
    def _skip_reason(spec: MethodSpec, available: set[str]) -> str:
        """Why ``spec`` cannot run on ``available`` modalities; "" when it can."""
        if not available:
            return "the dataset has no usable modality"
        missing = [m for m in spec.required if m not in available]
        if missing:
            return f"needs {', '.join(missing)} data, which this dataset does not have"
        if spec.modalities and not spec.present(available):
            # Every modality is optional: one of them is enough, none is not.
            return f"needs {' or '.join(spec.modalities)} data, which this dataset does not have"
        return ""

    def modalities_of(self, name: str, available: set[str]) -> tuple[str, ...]:
        """The caches ``name`` reads on a dataset with ``available`` modalities: its
        modalities that are available (optional ones may be absent)."""
        spec = self[name]
        if spec.modalities:
            return spec.present(available)
        return tuple(m for m in MODALITY_PREFERENCE if m in available)[:1]

    def params(
        self,
        method: str,
        overrides: Mapping[str, Any] | None = None,
        stage: str | None = None,
    ) -> dict[str, Any]:
        """Resolved hyper-parameters of ``method`` (and of one of its stages).

        Order, later winning: the family's parameters, the spec's ``params``, ``overrides``,
        then - with ``stage`` - the spec's ``per_stage[stage]`` and ``overrides``'
        ``per_stage[stage]``.

        Parameters
        ----------
        method : str
            A method of the catalog.
        overrides : mapping, optional
            Typically the config's ``methods.<name>.params``. ``stages`` is ignored, so the
            whole config entry can be passed. ``per_stage`` maps a stage name to overrides of
            that stage only, e.g. ``{"epochs": 30, "per_stage": {"finetune": {"lr": 3e-4}}}``.
        stage : str, optional
            Apply that stage's ``per_stage`` entries.

        Returns
        -------
        dict
            A new dict (sharing nothing with the catalog) without ``per_stage``; for torch
            methods ``encoder`` names the encoder (the spec's ``features`` unless overridden).
        """
        spec = self[method]
        defaults = dict(spec.params)
        given = {k: v for k, v in (overrides or {}).items() if k != "stages"}
        per_stage = [defaults.pop("per_stage", None) or {}, given.pop("per_stage", None) or {}]
        for entry in per_stage:
            if not isinstance(entry, dict) or not all(isinstance(v, dict) for v in entry.values()):
                raise ValueError(f"methods.{method}.params.per_stage: expected stage -> dict")
        encoder = {"encoder": spec.features} if spec.family == "torch" else {}
        family = self._family_params.get(spec.family, {})
        resolved = {**encoder, **family, **defaults, **given}
        if stage is not None:
            for entry in per_stage:
                resolved.update(entry.get(stage, {}))
        return copy.deepcopy(resolved)

    def known_params(self, method: str) -> set[str]:
        """Parameter names ``method`` declares: its family's, its own and its stages'."""
        spec = self[method]
        known = set(self._family_params.get(spec.family, {})) | set(spec.params)
        for entry in (spec.params.get("per_stage") or {}).values():
            known |= set(entry)
        return known | ({"encoder"} if spec.family == "torch" else set())


def _stages_of(cfg: Any) -> list[str]:
    return list(cfg["stages"] if isinstance(cfg, Mapping) else cfg.stages)


def _entry(cfg: Any, key: str) -> Any:
    """``key`` of a method's config entry (a mapping or a MethodConfig); None when absent."""
    return cfg.get(key) if isinstance(cfg, Mapping) else getattr(cfg, key, None)


def default_catalog() -> Catalog:
    """Every method of brainfuse: baselines, reference torch methods, fusion, self-supervised."""
    return Catalog(
        [*baselines.SPECS, *torch_specs.SPECS, *fusion.SPECS, *ssl.SPECS],
        family_params={"torch": torch_specs.COMMON_PARAMS},
    )
