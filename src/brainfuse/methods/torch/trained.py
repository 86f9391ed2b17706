"""A trained torch stage rebuilt from its ``model.bin``: the one way to get the network back.

Attribution, the report and tests rebuild a stage the way the runner built it: the stage's
plugin builds its module from the saved parameters (:class:`~.plugins.StageContext`), then the
saved tensors replace the initial ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainfuse.methods.catalog import Catalog, default_catalog
from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.torch.data import BrainDataset
from brainfuse.methods.torch.module import StageModule
from brainfuse.methods.torch.plugins import StageContext, plugin_for
from brainfuse.methods.torch.weights import read_model

__all__ = ["TrainedStage"]


@dataclass(frozen=True)
class TrainedStage:
    """One trained stage of a torch method.

    Attributes
    ----------
    spec : MethodSpec
        The method's catalog entry.
    saved : mapping
        The ``model.bin`` content (:func:`~.weights.read_model`): ``method``, ``stage``,
        ``fold``, ``encoder``, ``n_nodes``, ``params`` (resolved), ``supervised``,
        ``input_keys``, ``state_dict``.
    module : StageModule
        The network with the trained tensors, in eval mode.
    """

    spec: MethodSpec
    saved: Mapping[str, Any]
    module: StageModule

    @classmethod
    def load(
        cls,
        model_bin: str | Path,
        dataset: BrainDataset,
        train_set: BrainDataset | None = None,
        previous: str | Path | None = None,
        seed: int = 0,
        catalog: Catalog | None = None,
    ) -> TrainedStage:
        """Rebuild the stage saved in ``model_bin``.

        Parameters
        ----------
        model_bin : str or Path
            A ``model.bin`` written by :func:`~.runner.run_torch_stage`.
        dataset : BrainDataset
            Samples of the method's modalities (a plugin reads sizes and metadata from it).
        train_set : BrainDataset, optional
            The fold's training samples, for plugins that compute input statistics while
            building (default: ``dataset``).
        previous : str or Path, optional
            The previous stage's ``model.bin``, for plugins that read metadata from it while
            building; ignored when the file does not exist. Its tensors are not loaded: the
            saved ones replace every tensor.
        seed : int
            The run's seed, passed to the plugin.
        catalog : Catalog, optional
            Where the method is looked up (default:
            :func:`~brainfuse.methods.catalog.default_catalog`).

        Returns
        -------
        TrainedStage
        """
        catalog = default_catalog() if catalog is None else catalog
        saved = read_model(model_bin)
        spec = catalog[saved["method"]]
        context = StageContext(
            method=saved["method"],
            stage=saved["stage"],
            fold=int(saved["fold"]),
            seed=seed,
            hp=dict(saved["params"]),
            dataset=dataset,
            train_set=dataset if train_set is None else train_set,
            class_weights=None,
            previous=str(previous) if previous and Path(previous).exists() else None,
        )
        module = plugin_for(spec, saved["stage"]).build(context)
        module.model.load_state_dict(saved["state_dict"])
        return cls(spec, saved, module.eval())

    @property
    def supervised(self) -> bool:
        """Whether the stage predicts with its own logits (else a linear probe, not saved)."""
        return bool(self.saved.get("supervised", True))

    @property
    def input_keys(self) -> list[str]:
        """The batch keys the stage reads."""
        return list(self.saved["input_keys"])

    @property
    def params(self) -> dict[str, Any]:
        """The stage's resolved hyper-parameters."""
        return dict(self.saved["params"])
