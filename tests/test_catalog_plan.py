"""Catalog.plan and Catalog.modalities_of: required modalities must all be there, optional ones
may be absent, and a method whose modalities are all optional needs at least one of them."""

from __future__ import annotations

import pytest

from brainfuse.core.errors import ConfigError
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.spec import MethodSpec

CATALOG = default_catalog()
#: mcsp (fMRI and EEG both optional), one method per kind of required modalities.
METHODS = ("mcsp", "mcsp_fmri_only", "logreg_eeg", "m3d_bfs")


def _plan(available: set[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    cfg = {name: {"stages": list(CATALOG[name].stages)} for name in METHODS}
    return CATALOG.plan(cfg, available)


@pytest.mark.parametrize(
    ("available", "runs", "reads"),
    [
        ({"fmri"}, {"mcsp", "mcsp_fmri_only"}, ("fmri",)),
        ({"eeg"}, {"mcsp", "logreg_eeg"}, ("eeg",)),
        ({"fmri", "eeg"}, {"mcsp", "mcsp_fmri_only", "logreg_eeg"}, ("fmri", "eeg")),
        ({"sc"}, set(), ()),
    ],
)
def test_plan_runs_methods_on_the_modalities_present(available, runs, reads):
    run, skipped = _plan(available)
    assert set(run) == runs
    assert set(skipped) == set(METHODS) - runs
    assert all(run[name] == list(CATALOG[name].stages) for name in run)
    assert CATALOG.modalities_of("mcsp", available) == reads


def test_skip_reasons_name_what_is_missing():
    _, skipped = _plan({"sc"})
    assert skipped["mcsp"] == "needs fmri or eeg data, which this dataset does not have"
    assert skipped["mcsp_fmri_only"] == "needs fmri data, which this dataset does not have"
    assert skipped["logreg_eeg"] == "needs eeg data, which this dataset does not have"
    assert skipped["m3d_bfs"] == "needs fmri data, which this dataset does not have"
    _, skipped = _plan({"eeg"})
    assert skipped["m3d_bfs"] == "needs fmri, sc data, which this dataset does not have"
    _, skipped = _plan(set())
    assert set(skipped.values()) == {"the dataset has no usable modality"}


def test_required_and_optional_modalities_mix():
    spec = MethodSpec(
        name="toy",
        family="torch",
        modalities=("fmri", "eeg", "sc"),
        stages=("train",),
        description="a toy",
        optional=("eeg",),
    )
    assert spec.required == ("fmri", "sc")
    assert spec.present({"sc", "fmri"}) == ("fmri", "sc")
    catalog = default_catalog()
    catalog.add(spec)
    cfg = {"toy": {"stages": ["train"]}}
    assert catalog.plan(cfg, {"fmri", "sc"})[0] == {"toy": ["train"]}
    assert catalog.plan(cfg, {"fmri", "eeg"})[1] == {
        "toy": "needs sc data, which this dataset does not have"
    }
    assert catalog.modalities_of("toy", {"fmri", "eeg", "sc"}) == ("fmri", "eeg", "sc")
    with pytest.raises(ValueError, match="not among its modalities"):
        MethodSpec(
            name="bad", family="torch", modalities=("fmri",), stages=("t",), description="",
            optional=("eeg",),
        )  # fmt: skip


def test_a_variant_is_its_method_under_another_name():
    catalog = default_catalog()
    catalog.add_variants({"brainmass_corpus": "brainmass", "connex_fc_b": "connex_fc_only"})
    variant, base = catalog["brainmass_corpus"], catalog["brainmass"]
    assert variant.origin == "brainmass" and base.origin == "brainmass"
    assert (variant.stages, variant.plugin, variant.family) == (base.stages, base.plugin, "torch")
    assert dict(variant.params) == dict(base.params)
    assert catalog.params("brainmass_corpus", {}, "pretrain") == catalog.params(
        "brainmass", {}, "pretrain"
    )
    # its stages run the method's code (ConneX takes its graphs from the catalog method)
    from brainfuse.methods.torch.plugins import plugin_for

    assert plugin_for(catalog["connex_fc_b"], "train").build.keywords == {"graphs": ("fc",)}
    with pytest.raises(ConfigError, match="methods.brainmass.variant_of"):
        catalog.add_variants({"brainmass": "gcn_fc"})
    with pytest.raises(ConfigError, match="'nope' is no catalog method"):
        catalog.add_variants({"x": "nope"})
    with pytest.raises(ConfigError, match="is no catalog method"):
        catalog.add_variants({"y": "brainmass_corpus"})  # not a variant of a variant


def test_declared_self_supervised_stages_are_those_of_the_plugins():
    """Planning reads MethodSpec.self_supervised (torch-free); the plugins are the truth."""
    from brainfuse.methods.torch.plugins import plugin_for

    catalog = default_catalog()
    for spec in catalog:
        if spec.family != "torch":
            continue
        for stage in spec.stages:
            unsupervised = not plugin_for(spec, stage).supervised
            assert unsupervised == (stage in spec.self_supervised), (spec.name, stage)
    assert catalog["brainmass"].self_supervised == ("pretrain",)
    assert not catalog["m3d_bfs"].self_supervised  # its pretrain stage is supervised
