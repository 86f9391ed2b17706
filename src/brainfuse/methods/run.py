"""The entry point of the ``train_stage`` and ``fit_baseline`` rules: one stage of one method
on one outer fold, sent to its family's trainer."""

from __future__ import annotations

import logging

from brainfuse.methods.catalog import Catalog, default_catalog
from brainfuse.methods.request import StageRequest

__all__ = ["run_stage"]


def run_stage(request: StageRequest, catalog: Catalog | None = None) -> None:
    """Fit ``request``'s stage; write the model, its metrics and test predictions.

    Torch methods train with Lightning (:func:`brainfuse.methods.torch.runner.run_torch_stage`),
    checkpointing to ``request.checkpoint_dir`` and resuming from it when restarted; sklearn
    methods fit their estimator here.

    Parameters
    ----------
    request : StageRequest
        The method, stage, fold, inputs and outputs.
    catalog : Catalog, optional
        Where the method is looked up (default: :func:`~brainfuse.methods.catalog.default_catalog`).
    """
    catalog = default_catalog() if catalog is None else catalog
    spec = catalog[request.method]
    if spec.family == "torch":
        from brainfuse.methods.torch.runner import run_torch_stage

        # The `lightning` package adds a console handler on import; its records belong in the
        # job's log file (the root logger), not in Snakemake's terminal output.
        logging.getLogger("lightning").handlers.clear()
        run_torch_stage(request, catalog)
    else:
        from brainfuse.methods.baselines.fit import fit_baseline

        fit_baseline(request, spec)
