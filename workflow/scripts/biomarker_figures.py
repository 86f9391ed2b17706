from brainfuse.report.step import make_biomarker_figures
from brainfuse.steps import atlas_from_config, setup_logging

setup_logging(snakemake.log[0])
make_biomarker_figures(
    summary_path=snakemake.input.summary,
    importance_path=snakemake.input.importance,
    edges_path=snakemake.input.edges,
    atlas=atlas_from_config(snakemake.params.atlas),
    out=dict(snakemake.output.items()),
)
