from brainfuse.core import atomic
from brainfuse.core.cache import read_cache
from brainfuse.core.logging import setup_logging
from brainfuse.core.samples import read_participants
from brainfuse.diagnostics import diagnose
from brainfuse.folds import read_folds
from brainfuse.modalities import builtin_modalities

setup_logging(snakemake.log[0])
params = snakemake.params
caches = {
    m: read_cache(path) for m, path in zip(params.modalities, snakemake.input.caches, strict=True)
}
participants = (
    read_participants(snakemake.input.participants[0], params.participant_column)
    if snakemake.input.participants
    else None
)
# per-sample QC fields (mean_fd) may be absent from a modality's samples, as for the baselines
absent_ok = {f for m in builtin_modalities().values() for f in m.qc_fields}
table = diagnose(
    caches,
    read_folds(snakemake.input.folds),
    params.feature_sets,
    params.harmonise,
    params.confounds,
    participants,
    absent_ok,
    params.seed,
)
atomic.write_tsv(snakemake.output[0], table)
