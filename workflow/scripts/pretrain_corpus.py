from brainfuse.core.logging import setup_logging
from brainfuse.extensions import load_extensions
from brainfuse.methods.pretrained import CorpusJob, pretrain_on_corpus

setup_logging(snakemake.log[0])
catalog, _ = load_extensions(snakemake.params.extensions, snakemake.params.variants)
job = CorpusJob(
    method=snakemake.wildcards.method,
    corpus=dict(zip(snakemake.params.modalities, snakemake.input.corpus, strict=True)),
    source=snakemake.params.source,
    seed=snakemake.params.seed,
    encoder=snakemake.output.encoder,
    manifest=snakemake.output.manifest,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    params={**snakemake.params.method_params, "num_threads": snakemake.threads},
    devices=max(1, int(snakemake.resources.get("gpu", 0))),
    study_subjects=snakemake.params.study_subjects,
)
pretrain_on_corpus(job, catalog)
