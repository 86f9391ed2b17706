"""``brainfuse bench train``: the real stage and the bare loop train the same steps."""

from __future__ import annotations

import math

import pytest

from brainfuse.benchmarks.methods import write_caches
from brainfuse.benchmarks.train import main, measure_method

TINY = {"batch_size": 4, "hidden": 8, "head_hidden": 8, "top_k": 3, "length": 32}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    return write_caches(tmp_path_factory.mktemp("caches"), 20, 8, 0.2, 4, 0.25, 0)


def test_bare_loop_takes_the_real_stage_steps(caches, tmp_path):
    (timing,) = measure_method(
        "gcn_fc", caches, 0, tmp_path, epochs=2, threads=1, overrides=TINY, repeats=2
    )
    # Both counted, not assumed: Lightning's global step and the bare optimiser's step hook.
    assert timing.stage == "train" and timing.epochs == 2
    assert timing.steps == timing.bare_steps == 2 * math.ceil(timing.n_train / 4)
    assert timing.samples == 2 * timing.n_train
    assert timing.loop_s > 0 and timing.bare_s > 0 and timing.fit_s >= timing.loop_s
    assert timing.stage_s >= timing.fit_s
    # At the defaults (60 epochs) the extrapolation scales the training loop, not the rest.
    other = timing.stage_s - timing.loop_s
    assert timing.extrapolated_s(1.0) == pytest.approx(other + 30 * timing.loop_s)


def test_last_line_is_key_value_pairs(capsys):
    args = ["--methods", "gcn_fc", "--subjects", "16", "--nodes", "8", "--folds", "4"]
    args += ["--epochs", "1", "--threads", "1", "--params", '{"batch_size": 4, "hidden": 8}']
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    pairs = dict(item.split("=") for item in last.split())
    assert set(pairs) == {
        "overhead_ratio_gcn_fc",
        "cpu_overhead_ratio_gcn_fc",
        "samples_per_s_gcn_fc",
        "five_fold_min_gcn_fc",
    }
    assert all(float(v) > 0 for v in pairs.values())
