"""Training throughput of every deep method's real stage against a bare PyTorch loop, and each
method's 5-fold time on a synthetic 1,000-subject set.

Writes synthetic fMRI/EEG/SC caches of ``--subjects`` subjects (planted effects,
:func:`brainfuse.benchmarks.methods.write_caches`, ``--folds`` outer folds), then, for each
method, trains every stage of fold ``--fold`` with the method's default parameters, except
``--epochs`` epochs per stage (and ``--threads`` torch threads), twice:

* the real stage (:func:`~brainfuse.methods.torch.runner.run_torch_stage`: data loader,
  Lightning, checkpoints, validation every epoch, logging), timed from Lightning's
  ``on_train_start`` to its ``on_train_end`` (``loop_s``); the one-off set-up before it
  (``fit_s - loop_s``: Trainer set-up, a head initialised from a linear probe) and the rest of
  the stage (reading the caches, evaluation, outputs) are printed apart;
* a bare PyTorch loop: the same stage module built by the same call
  (:func:`~brainfuse.methods.torch.runner.build_stage`: same seed, same previous stage, same
  parameters), the same optimiser, the training set collated once into in-memory batches (the
  real loader's first epoch) and, for the same number of optimiser steps, ``losses`` forward,
  backward, step and the module's ``on_train_batch_end`` (EMA targets). No validation, no
  checkpoint, no logging, no data loading inside the timed loop.

``overhead_ratio`` = ``loop_s`` over the bare loop's seconds (summed over a method's stages).

The 5-fold time of a method at the defaults is extrapolated from the measured fold: per stage,
``other_s + loop_s / epochs_run * default_epochs`` (``other_s`` = stage seconds outside the
training loop), times ``(target / subjects)`` when fewer subjects were measured, summed over
stages, times ``--folds``. Early stopping can only shorten that, so it is an upper bound for
the training-loop part.

Prints one row per stage, one per method and, as the last line, ``overhead_ratio_<method>=``,
``cpu_overhead_ratio_<method>=`` (the same on process CPU seconds, steadier on a shared
machine), ``samples_per_s_<method>=`` and ``five_fold_min_<method>=`` pairs.

Run with ``brainfuse bench train [--methods gcn_fc brainmass] [--subjects 1000]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer, seed_everything

from brainfuse.benchmarks.methods import bench_request
from brainfuse.methods.catalog import Catalog, default_catalog
from brainfuse.methods.request import StageRequest
from brainfuse.methods.torch.data import train_loader
from brainfuse.methods.torch.module import StageModule, frozen_to_eval
from brainfuse.methods.torch.plugins import plugin_for
from brainfuse.methods.torch.runner import build_stage, process_settings, run_torch_stage

#: Autocast dtype of Lightning's mixed precisions (the real stage's ``precision`` on GPU).
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class StageTiming:
    """One stage of one method trained by the real runner and by the bare loop.

    Attributes
    ----------
    method, stage : str
        What was trained.
    n_train : int
        Training samples of the fold.
    epochs : int
        Epochs the real stage ran.
    default_epochs : int
        The stage's epochs at the method's defaults.
    steps, bare_steps : int
        Optimiser steps of the real stage and of the bare loop.
    samples : int
        Training samples the real stage stepped on.
    loop_s, fit_s, stage_s : float
        Seconds of the real training loop, of ``Trainer.fit`` and of the whole stage.
    bare_s : float
        Seconds of the bare loop.
    loop_cpu_s, bare_cpu_s : float
        Process CPU seconds (all threads) of the real training loop and of the bare loop: less
        sensitive than wall time to other processes sharing the cores.
    """

    method: str
    stage: str
    n_train: int
    epochs: int
    default_epochs: int
    steps: int
    bare_steps: int
    samples: int
    loop_s: float
    fit_s: float
    stage_s: float
    bare_s: float
    loop_cpu_s: float
    bare_cpu_s: float

    @property
    def overhead_ratio(self) -> float:
        return self.loop_s / self.bare_s

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.loop_s

    def extrapolated_s(self, scale: float) -> float:
        """Seconds of this stage at its default epochs, with ``scale`` times the subjects."""
        other = self.stage_s - self.loop_s
        return scale * (other + self.loop_s / max(1, self.epochs) * self.default_epochs)


class StageClock(Callback):
    """Times ``Trainer.fit`` and its training loop; counts optimiser steps and samples."""

    def __init__(self) -> None:
        self.fit_start = self.loop_start = 0.0
        self.fit_s = self.loop_s = self.loop_cpu_s = self.cpu_start = 0.0
        self.steps = self.samples = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.fit_start = time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.loop_start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.samples += len(batch["y"])

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.loop_s = time.perf_counter() - self.loop_start
        self.loop_cpu_s = time.process_time() - self.cpu_start
        self.steps = int(trainer.global_step)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.fit_s = time.perf_counter() - self.fit_start


def _optimiser(lit: StageModule) -> torch.optim.Optimizer:
    """The optimiser :meth:`StageModule.configure_optimizers` builds (without its schedule,
    which needs a Trainer and costs nothing measurable)."""
    params = list(lit.trainable_parameters())
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[lit.optimizer_name]
    return kind(params, lr=lit.lr, weight_decay=lit.weight_decay)


def bare_loop(
    request: StageRequest, catalog: Catalog, steps: int, device: torch.device
) -> tuple[int, float, float]:
    """Optimiser steps taken, wall and process CPU seconds of ``steps`` plain PyTorch training
    steps of ``request``'s stage module on its first epoch's batches, collated once and kept in
    memory (on ``device``)."""
    spec = catalog[request.method]
    hp = catalog.params(request.method, request.params, request.stage)
    with process_settings(hp["num_threads"]):
        seed_everything(request.seed, workers=True, verbose=False)
        built = build_stage(request, spec, plugin_for(spec, request.stage), hp)
        train_set = built.train_set
        loader = train_loader(train_set, int(hp["batch_size"]), train_set.seed)
        batches = [{k: v.to(device) for k, v in batch.items()} for batch in loader]
        lit = built.lit.to(device).train()
        opt = _optimiser(lit)
        taken = [0]
        opt.register_step_post_hook(lambda *_: taken.__setitem__(0, taken[0] + 1))
        mixed = _AUTOCAST.get(str(hp["precision"])) if device.type == "cuda" else None
        scaler = torch.amp.GradScaler(enabled=mixed == torch.float16)
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(steps):
            batch = batches[i % len(batches)]
            frozen_to_eval(lit.model)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=mixed, enabled=mixed is not None):
                loss = lit.losses(batch)["loss"]
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            lit.on_train_batch_end(loss, batch, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return taken[0], time.perf_counter() - start, time.process_time() - cpu_start


def stage_params(catalog: Catalog, method: str, stage: str, epochs: int, threads: int | None):
    """The method's defaults with ``epochs`` for ``stage`` (and ``threads`` torch threads)."""
    per_stage = catalog[method].params.get("per_stage", {})
    params: dict[str, Any] = {"num_threads": threads, "epochs": epochs}
    params["per_stage"] = {stage: {**per_stage.get(stage, {}), "epochs": epochs}}
    return params


def _measure_once(
    request: StageRequest, catalog: Catalog, device: torch.device
) -> tuple[StageClock, dict[str, Any], tuple[int, float, float]]:
    """The real stage (its clock and ``metrics.json``), then its bare loop."""
    clock = StageClock()
    run_torch_stage(request, catalog, callbacks=[clock])
    metrics = json.loads(Path(request.outputs.metrics).read_text())
    return clock, metrics, bare_loop(request, catalog, clock.steps, device)


def measure_method(
    method: str,
    paths: dict[str, str],
    fold: int,
    workdir: Path,
    epochs: int,
    threads: int | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    catalog: Catalog | None = None,
    repeats: int = 1,
) -> list[StageTiming]:
    """Train the default stages of ``method`` on ``fold`` with the real runner, each followed
    by its bare loop for the same number of optimiser steps (``repeats`` times: the best time
    of each)."""
    catalog = default_catalog() if catalog is None else catalog
    spec = catalog[method]
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    caches = {m: paths[m] for m in (*spec.modalities, *spec.optional) if m in paths}
    # The stages the default config runs: a classifier's optional probe stage is left out.
    stages = spec.stages[:1] if spec.stages[0] == "train" else spec.stages
    timings, previous = [], None
    for stage in stages:
        params = {**stage_params(catalog, method, stage, epochs, threads), **(overrides or {})}
        out = workdir / method / f"fold-{fold}" / stage
        request = bench_request(
            method, stage, fold, out, caches, paths["folds"], seed, params, previous
        )
        # Each quantity is the best of the repeats: other processes only ever add time.
        runs = [_measure_once(request, catalog, device) for _ in range(max(1, repeats))]
        clock, metrics, _ = runs[0]
        timings.append(
            StageTiming(
                method=method,
                stage=stage,
                n_train=int(metrics["n_train"]),
                epochs=int(metrics["epochs"]),
                default_epochs=int(catalog.params(method, overrides or {}, stage)["epochs"]),
                steps=clock.steps,
                bare_steps=max(bare[0] for _, _, bare in runs),
                samples=clock.samples,
                loop_s=min(c.loop_s for c, _, _ in runs),
                fit_s=min(c.fit_s for c, _, _ in runs),
                stage_s=min(float(m["seconds"]) for _, m, _ in runs),
                bare_s=min(bare[1] for _, _, bare in runs),
                loop_cpu_s=min(c.loop_cpu_s for c, _, _ in runs),
                bare_cpu_s=min(bare[2] for _, _, bare in runs),
            )
        )
        previous = request.outputs.model
    return timings


def deep_methods(catalog: Catalog) -> list[str]:
    """Every torch method of the catalog, in catalog order."""
    return catalog.names("torch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every deep method")
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--target", type=int, default=1000, help="subjects extrapolated to")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold", type=int, default=0, help="the fold measured")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured per stage")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each stage and loop; the best time counts"
    )
    parser.add_argument(
        "--params", type=json.loads, default={}, help="JSON overrides of every method's params"
    )
    args = parser.parse_args(argv)
    from brainfuse.benchmarks.methods import write_caches

    # Lightning's start-up notices (GPU available, tips) would bury the table.
    logging.getLogger("lightning").setLevel(logging.WARNING)

    catalog = default_catalog()
    methods = args.methods or deep_methods(catalog)
    scale = args.target / args.subjects
    device = "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} thread(s)"
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = write_caches(
            Path(tmp) / "caches", args.subjects, args.nodes, 0.2, args.folds, 0.2, args.seed
        )
        print(
            f"{args.subjects} synthetic subjects, {args.nodes} parcels, {args.folds} folds "
            f"(caches in {time.perf_counter() - start:.0f} s); fold {args.fold}, "
            f"{args.epochs} epochs per stage, best of {args.repeats}; {device}",
            flush=True,
        )
        print(
            f"{'method/stage':<28}{'n_train':>8}{'steps':>7}{'loop s':>9}{'bare s':>9}"
            f"{'ratio':>7}{'cpu ratio':>10}{'samples/s':>11}{'setup s':>9}{'other s':>9}"
            f"{'epochs':>7}{'est s':>9}"
        )
        results: dict[str, list[StageTiming]] = {}
        for method in methods:
            timings = measure_method(
                method,
                paths,
                args.fold,
                Path(tmp) / "runs",
                args.epochs,
                args.threads,
                args.params,
                args.seed,
                catalog,
                args.repeats,
            )
            for t in timings:
                if t.steps != t.bare_steps:
                    raise RuntimeError(f"{method}/{t.stage}: {t.steps} != {t.bare_steps} steps")
                print(
                    f"{method + '/' + t.stage:<28}{t.n_train:>8}{t.steps:>7}{t.loop_s:>9.2f}"
                    f"{t.bare_s:>9.2f}{t.overhead_ratio:>7.2f}"
                    f"{t.loop_cpu_s / t.bare_cpu_s:>10.2f}{t.samples_per_s:>11.1f}"
                    f"{t.fit_s - t.loop_s:>9.2f}{t.stage_s - t.fit_s:>9.2f}"
                    f"{t.default_epochs:>7}{t.extrapolated_s(scale):>9.0f}",
                    flush=True,
                )
            results[method] = timings
    print(
        f"est s = {scale:g} x (other s + setup s + loop s / epochs run x default epochs): one "
        f"stage at its default epochs on {args.target} subjects (no early stopping)"
    )
    print(
        f"{'method':<24}{'ratio':>7}{'cpu ratio':>10}{'samples/s':>11}{'measured s':>12}"
        f"{'5-fold min':>12}"
    )
    for method, timings in results.items():
        loop = sum(t.loop_s for t in timings)
        ratio = loop / sum(t.bare_s for t in timings)
        cpu_ratio = sum(t.loop_cpu_s for t in timings) / sum(t.bare_cpu_s for t in timings)
        rate = sum(t.samples for t in timings) / loop
        five_fold = args.folds * sum(t.extrapolated_s(scale) for t in timings) / 60
        print(
            f"{method:<24}{ratio:>7.2f}{cpu_ratio:>10.2f}{rate:>11.1f}{loop:>12.1f}"
            f"{five_fold:>12.1f}"
        )
        summary += [
            f"overhead_ratio_{method}={ratio:.2f}",
            f"cpu_overhead_ratio_{method}={cpu_ratio:.2f}",
            f"samples_per_s_{method}={rate:.1f}",
            f"five_fold_min_{method}={five_fold:.1f}",
        ]
    print(
        f"5-fold min = {args.folds} x sum over stages of est s / 60 "
        f"(measured: fold {args.fold}, {args.epochs} epochs per stage, {args.subjects} subjects)"
    )
    print(" ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
