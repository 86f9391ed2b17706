from brainfuse.core.logging import setup_logging
from brainfuse.modalities.eeg.run import eeg_run

setup_logging(snakemake.log[0])
eeg_run(
    eeg=snakemake.input.eeg,
    channels=snakemake.input.channels or None,
    electrodes=snakemake.input.electrodes or None,
    entities=snakemake.params.entities,
    atlas_cfg=snakemake.params.atlas,
    params=snakemake.params.eeg,
    out_features=snakemake.output.features,
    out_sidecar=snakemake.output.sidecar,
)
