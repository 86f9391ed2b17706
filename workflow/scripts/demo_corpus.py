import os

from brainfuse.core.atlas import load_atlas
from brainfuse.core.logging import setup_logging
from brainfuse.demo.corpus import make_demo_corpus

setup_logging(snakemake.log[0])
params = snakemake.params
make_demo_corpus(
    os.path.dirname(snakemake.output[0]),
    load_atlas(data_dir=params.atlas["data_dir"]),
    fmri_section=params.fmri,
    atlas_cfg=params.atlas,
    n_subjects=params.n_subjects,
    seed=params.seed,
)
