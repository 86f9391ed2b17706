"""Cross-validated balanced accuracy of the deep methods beside the linear FC baseline.

For each seed, writes a synthetic cache with a planted FC effect of demo-like size
(:func:`brainfuse.methods.ssl.synthetic.write_multimodal_caches`: ``--subjects`` subjects,
``--nodes`` parcels, planted-factor variance share ``--effect``), re-draws the outer folds with
the demo's ``cv`` settings (``--folds`` folds, validation share ``--val-fraction``), then runs
every stage of each method in every fold through :func:`brainfuse.methods.run.run_stage` with the
method's defaults (``--epochs`` overrides every stage's epochs, for a quicker look). A method's
score is the mean over folds of the balanced accuracy of its last stage, as in the evaluation's
``summary.tsv``. Prints one row per method and, as the last line, ``<method>=<mean over seeds>``
pairs (plus ``<method>_min=<worst seed>``).

``--results DIR [DIR ...]`` runs on pipeline results folders instead (e.g. the demo's, made
with ``seed: 0``, ``1`` and ``2``): each folder's ``cache/*.parquet`` and ``folds/folds.tsv``,
each trained with the seed at the same position of ``--seeds`` (the seed the folder was made with).

Run with ``brainfuse bench methods [--methods gcn_fc logreg_fc] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.config import section_defaults
from brainfuse.core import atomic
from brainfuse.core.cache import read_cache
from brainfuse.core.metrics import binary_metrics
from brainfuse.folds import make_folds
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.run import run_stage

#: The linear FC baseline first, then the deep methods of the fMRI (and fMRI+EEG) families.
DEFAULT_METHODS = (
    "logreg_fc",
    "gcn_fc",
    "gat_fc",
    "graph_transformer_fc",
    "temporal_transformer",
    "mcsp_fmri_only",
    "brainmass",
    "brainmae",
    "dfc_generative",
)


def bench_request(
    method: str,
    stage: str,
    fold: int,
    out: Path,
    caches: Mapping[str, str],
    folds_path: str,
    seed: int,
    params: dict,
    previous: str | None,
) -> StageRequest:
    """One stage of a method on a synthetic cache (label ``patient``), its outputs and
    checkpoints under ``out``."""
    return StageRequest(
        method=method,
        stage=stage,
        fold=fold,
        cache_paths=dict(caches),
        folds_path=folds_path,
        positive="patient",
        seed=seed,
        outputs=StageOutputs(
            str(out / "model.bin"), str(out / "metrics.json"), str(out / "predictions.tsv")
        ),
        params=params,
        previous=previous,
        checkpoint_dir=str(out / "ckpt"),
    )


def write_caches(
    outdir: Path, n_subjects: int, n_nodes: int, effect: float, folds: int, val: float, seed: int
) -> dict[str, str]:
    """Synthetic fMRI/EEG/SC caches and a ``folds.tsv`` drawn with the demo's ``cv`` settings."""
    from brainfuse.methods.ssl.synthetic import write_multimodal_caches

    paths = write_multimodal_caches(
        outdir, n_subjects=n_subjects, n_nodes=n_nodes, effect=effect, eeg_effect=effect, seed=seed
    )
    table = read_cache(paths["fmri"]).table
    subjects = table[["subject", "label", "site"]].drop_duplicates("subject")
    atomic.write_tsv(paths["folds"], make_folds(subjects, folds, val, seed))
    return paths


def results_caches(results: Path) -> tuple[dict[str, str], int]:
    """The caches and folds of a pipeline results folder, and its number of folds."""
    paths = {
        p.stem: str(p) for p in sorted((results / "cache").glob("*.parquet")) if p.stem != "qc"
    }
    folds = results / "folds" / "folds.tsv"
    if not paths or not folds.exists():
        raise SystemExit(
            f"{results}: no cache/*.parquet or folds/folds.tsv (run the pipeline first)"
        )
    paths["folds"] = str(folds)
    return paths, int(pd.read_csv(folds, sep="\t")["fold"].max()) + 1


def cross_validate(
    method: str,
    paths: dict[str, str],
    n_folds: int,
    seed: int,
    workdir: Path,
    epochs: int | None = None,
    overrides: dict | None = None,
) -> tuple[float, int]:
    """Mean over folds of the balanced accuracy of ``method``'s last stage, and the number of
    folds whose test subjects were all predicted one class (a collapsed model)."""
    catalog = default_catalog()
    spec = catalog[method]
    stages = spec.stages[:1] if spec.family != "torch" or spec.stages[0] == "train" else spec.stages
    params: dict = {"num_threads": 1} if spec.family == "torch" else {}
    params.update(overrides or {})
    if epochs is not None and spec.family == "torch":
        params["epochs"] = epochs
        params["per_stage"] = {
            stage: {**spec.params.get("per_stage", {}).get(stage, {}), "epochs": epochs}
            for stage in stages
        }
    caches = {m: paths[m] for m in (*spec.modalities, *spec.optional) if m in paths}
    scores, one_class = [], 0
    for fold in range(n_folds):
        previous = None
        for stage in stages:
            out = workdir / method / f"fold-{fold}" / stage
            request = bench_request(
                method, stage, fold, out, caches, paths["folds"], seed, params, previous
            )
            if spec.family != "torch":
                request = replace(request, checkpoint_dir=None)
            run_stage(request, catalog)
            previous = request.outputs.model
        predictions = pd.read_csv(request.outputs.predictions, sep="\t")
        metrics = binary_metrics(
            predictions["y_true"], predictions["y_pred"], predictions["y_score"]
        )
        scores.append(metrics["balanced_accuracy"])
        one_class += int(predictions["y_pred"].nunique() == 1)
    return float(np.mean(scores)), one_class


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--results", nargs="+", type=Path, default=None, help="pipeline results folders"
    )
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs' outputs here")
    parser.add_argument("--effect", type=float, default=0.2, help="planted variance share")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=None, help="override every stage's epochs")
    parser.add_argument(
        "--adjust",
        type=json.loads,
        default={},
        help="JSON in-fold adjustment for every method, as the pipeline passes it: harmonise, "
        "confounds, participants (a participants.tsv), participant_column",
    )
    parser.add_argument(
        "--params", type=json.loads, default={}, help="JSON overrides of the deep methods' params"
    )
    args = parser.parse_args(argv)
    if args.results is not None and len(args.results) != len(args.seeds):
        parser.error("--results needs one --seeds value per folder")
    if "harmonise" in args.adjust:  # the keys it omits take the config's defaults
        args.adjust["harmonise"] = {**section_defaults("harmonise"), **args.adjust["harmonise"]}
    import torch

    torch.set_num_threads(1)
    catalog = default_catalog()
    results: dict[str, list[float]] = {m: [] for m in args.methods}
    seconds: dict[str, float] = dict.fromkeys(args.methods, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            root = (args.workdir or Path(tmp)) / f"seed-{seed}"
            if args.results is not None:
                paths, n_folds = results_caches(args.results[i])
            else:
                n_folds = args.folds
                paths = write_caches(
                    root / "caches",
                    args.subjects,
                    args.nodes,
                    args.effect,
                    n_folds,
                    args.val_fraction,
                    seed,
                )
            for method in args.methods:
                start = time.perf_counter()
                overrides = args.params if catalog[method].family == "torch" else {}
                overrides = {**overrides, **args.adjust}
                score, one_class = cross_validate(
                    method, paths, n_folds, seed, root, args.epochs, overrides
                )
                seconds[method] += time.perf_counter() - start
                results[method].append(score)
                print(
                    f"seed {seed} {method:<22} balanced accuracy {score:.3f} "
                    f"({one_class} of {n_folds} folds predicted one class)",
                    flush=True,
                )
    seeds = " ".join(map(str, args.seeds))
    if args.results is not None:
        print(f"results folders {' '.join(map(str, args.results))}, seeds {seeds}")
    else:
        print(
            f"{args.subjects} subjects, {args.nodes} parcels, effect {args.effect}, "
            f"{args.folds} folds, seeds {seeds}"
        )
    print(f"{'method':<22}" + "".join(f"{f'seed {s}':>9}" for s in args.seeds) + f"{'s/run':>9}")
    for method, scores in results.items():
        per_run = seconds[method] / len(args.seeds)
        print(f"{method:<22}" + "".join(f"{s:>9.3f}" for s in scores) + f"{per_run:>9.1f}")
    print(
        " ".join(f"{m}={np.mean(s):.3f} {m}_min={np.min(s):.3f}" for m, s in results.items() if s)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
