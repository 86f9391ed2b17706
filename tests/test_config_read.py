"""Reading the config: the schema holds every default, and the typed sections carry them."""

from pathlib import Path

import pytest
import yaml

from brainfuse.config import Config, read_config
from brainfuse.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "brainfuse" / "config.schema.yaml"


@pytest.fixture
def documented() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_config_yaml_repeats_exactly_the_schema_defaults(documented):
    """config.yaml documents every key with its default: reading only its methods gives the
    same configuration as reading all of it."""
    full = read_config(documented, SCHEMA)
    minimal = read_config({"methods": documented["methods"]}, SCHEMA)
    assert full.raw == minimal.raw
    assert set(full.raw) == set(documented)


def test_typed_sections(documented):
    config = read_config(documented, SCHEMA)
    assert isinstance(config, Config)
    assert config.cv.n_folds == 5 and config.cv.group_by == "subject"
    assert config.label.positive == "patient"
    assert config.methods["m3d_bfs"].stages == ("encoders", "pretrain", "finetune")
    assert config.section("fmri")["sequence_length"] == 200
    assert config.resource("train", "mem_mb") == 4000
    assert config.resource("fmri", "threads") == 1  # from resources.default


def test_a_user_value_wins_and_the_rest_default(documented):
    config = read_config(
        {"methods": {"majority": {"stages": ["fit"]}}, "fmri": {"strategy": "24P"}}, SCHEMA
    )
    assert config.section("fmri")["strategy"] == "24P"
    assert config.section("fmri")["low_pass"] == 0.1
    assert list(config.methods) == ["majority"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fmri": {"strategy": "99P"}}, "fmri.strategy"),
        ({"cv": {"n_folds": 1}}, "cv.n_folds"),
        ({"extensions": ["no colon"]}, "extensions.0"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_key(documented, change, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        read_config({**documented, **change}, SCHEMA)


@pytest.mark.parametrize(
    ("methods", "named"),
    [
        ({"logreg_fc": {"stages": ["fitt"]}}, ["fitt", "logreg_fc has stages ['fit']"]),
        ({"logreg_fcc": {"stages": ["fit"]}}, ["logreg_fcc", "unknown method", "logreg_fc"]),
    ],
)
def test_a_dry_run_stops_on_an_unknown_method_or_stage(tmp_path, methods, named):
    """Method and stage names are checked when the config is read: no job is planned."""
    import subprocess
    import sys

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"methods": methods}))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1",
         "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert all(text in output for text in named), output[-2000:]
    assert "Job stats" not in output
