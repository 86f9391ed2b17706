from brainfuse.core.atlas import load_atlas
from brainfuse.core.logging import setup_logging
from brainfuse.demo.dataset import make_demo_dataset
from brainfuse.demo.xcpd import convert_to_xcpd

setup_logging(snakemake.log[0])
atlas = load_atlas(data_dir=snakemake.params.atlas_data_dir)
make_demo_dataset(
    snakemake.params.outdir,
    atlas,
    n_subjects=snakemake.params.n_subjects,
    seed=snakemake.params.seed,
    n_jobs=snakemake.threads,
)
convert_to_xcpd(snakemake.params.outdir, snakemake.params.xcpd_subjects, atlas)
