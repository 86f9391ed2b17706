from brainfuse.atlas import load_atlas
from brainfuse.demo import make_demo_dataset
from brainfuse.steps import setup_logging

setup_logging(snakemake.log[0])
make_demo_dataset(
    snakemake.params.outdir,
    load_atlas(data_dir=snakemake.params.atlas_data_dir),
    n_subjects=snakemake.params.n_subjects,
    seed=snakemake.params.seed,
    xcpd_subjects=snakemake.params.xcpd_subjects,
)
