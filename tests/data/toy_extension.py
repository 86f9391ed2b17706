"""A modality and a method added from outside brainfuse (docs/architecture.md walkthroughs).

``strength``: each parcel's total connection strength, from the subjects' SC files (it reuses
the SC modality's discovery and checks). ``logreg_strength``: a logistic regression on it.
Named in a config as ``extensions: ["toy_extension:register"]``.
"""

import numpy as np
import pandas as pd

from brainfuse.methods.spec import MethodSpec
from brainfuse.modalities.sc.modality import SC


class Strength(SC):
    """Node strength: the column sums of each subject's checked, normalised SC matrix."""

    name = "strength"
    cache_columns = ("strength",)
    cache_inputs = {"sidecars": "sidecar", "data": "strength"}

    def sample_outputs(self, atlas):
        entities = {"seg": atlas, "desc": "strength"}
        return {
            "strength": ("dwi", {**entities, "suffix": "relmat.tsv"}),
            "sidecar": ("dwi", {**entities, "suffix": "relmat.json"}),
        }

    def demo_files(self, table):
        return []  # the SC modality's demo files

    def run_sample(self, inputs, params, outputs):
        matrix = {"relmat": outputs["strength"], "sidecar": outputs["sidecar"]}
        super().run_sample(inputs, params, matrix)
        sc = pd.read_csv(outputs["strength"], sep="\t")
        sc.sum(axis=0).to_frame().T.to_csv(outputs["strength"], sep="\t", index=False)

    def build_cache(self, inputs, params, outputs):
        from brainfuse.core import atomic
        from brainfuse.core.atlas import atlas_from_config
        from brainfuse.core.cache import cache_metadata, write_cache
        from brainfuse.core.qc import id_columns, read_qc

        qc, keep = read_qc(list(inputs["sidecars"]), inputs["participants"], params["label"])
        table = qc.iloc[keep][id_columns(qc)].reset_index(drop=True)
        rows = [pd.read_csv(inputs["data"][i], sep="\t").to_numpy(np.float32)[0] for i in keep]
        atlas = atlas_from_config(params["atlas"])
        meta = cache_metadata(atlas, self.name, params["section"], list(inputs["data"]))
        write_cache(outputs["cache"], table, {"strength": np.stack(rows)}, meta)
        atomic.write_tsv(outputs["qc"], qc)


def strengths(caches):
    """The baseline's features: one row of node strengths per sample."""
    return caches["strength"].arrays["strength"]


def register(catalog, modalities):
    modalities["strength"] = Strength()
    catalog.add(
        MethodSpec(
            name="logreg_strength",
            family="sklearn",
            modalities=("strength",),
            stages=("fit",),
            description="logistic regression on SC node strength (an extension)",
            estimator="logreg",
            features="toy_extension:strengths",
        )
    )
