from brainfuse.core.logging import setup_logging
from brainfuse.modalities.sc.run import sc_run

setup_logging(snakemake.log[0])
sc_run(
    sc_path=snakemake.input.sc,
    entities=snakemake.params.entities,
    atlas_cfg=snakemake.params.atlas,
    params=snakemake.params.sc,
    out_relmat=snakemake.output.relmat,
    out_sidecar=snakemake.output.sidecar,
)
