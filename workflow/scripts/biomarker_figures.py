from brainfuse.core.atlas import atlas_from_config
from brainfuse.core.logging import setup_logging
from brainfuse.report.step import make_biomarker_figures

setup_logging(snakemake.log[0])
make_biomarker_figures(
    summary_path=snakemake.input.summary,
    importance_path=snakemake.input.importance,
    edges_path=snakemake.input.edges,
    atlas=atlas_from_config(snakemake.params.atlas),
    out=dict(snakemake.output.items()),
)
