"""The config schema: the default validates, a wrong key or value stops and names the key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "brainfuse" / "config.schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid(config):
    validate(config, str(SCHEMA))


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("fmri", "strategy", "99P", "strategy"),
        ("cv", "n_folds", 1, "n_folds"),
        ("eeg", "level", "scalp", "level"),
        ("atlas", "min_coverage", 1.5, "min_coverage"),
    ],
)
def test_bad_value_names_the_key(config, section, key, value, named):
    config[section][key] = value
    with pytest.raises(Exception) as err:
        validate(config, str(SCHEMA))
    assert named in str(err.value)


def test_unknown_key_is_named(config):
    config["fmri"]["stratgy"] = "36P"
    with pytest.raises(Exception) as err:
        validate(config, str(SCHEMA))
    assert "stratgy" in str(err.value)


def test_snakemake_stops_before_any_job(tmp_path):
    """A dry run with a bad value fails at validation, naming the key, and schedules nothing."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("fmri:\n  strategy: 99P\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--configfile",
            str(bad),
            "--directory",
            str(tmp_path),
            "--snakefile",
            str(ROOT / "Snakefile"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "strategy" in output and "99P" in output
    assert "Job stats" not in output


@pytest.mark.parametrize("name", ["fmri", "eeg", "sc"])
def test_modality_keys_are_schema_keys_and_cache_keys_do_not_reach_the_run(name):
    """A cache-only key (fmri.sequence_length) leaves the run rule's params as they were, so
    changing it reruns the cache and what follows, not the per-sample jobs."""
    from brainfuse.modalities import builtin_modalities

    modality = builtin_modalities()[name]
    schema = yaml.safe_load(SCHEMA.read_text())["properties"][modality.config_section]
    assert set(modality.run_keys) | set(modality.cache_keys) == set(schema["properties"])
    assert not set(modality.run_keys) & set(modality.cache_keys)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    before = modality.run_params(config)
    for key in modality.cache_keys:
        config[modality.config_section][key] = 999
    assert modality.run_params(config) == before
