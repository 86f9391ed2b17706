# Every modality (brainfuse.modalities): its samples in chunks of `batching` size, one
# {name}_run_{chunk} job per chunk, and one {name}_cache job joining the samples into
# cache/{name}.parquet once every chunk's manifest is written. Nothing here names a modality.
#
# A chunk job runs the modality's per-sample step for each of its samples in one Python process
# (workflow/scripts/sample_run.py) and still writes every sample's own outputs, log and QC
# record, so the cache and everything downstream read exactly the per-sample files of one job
# per sample. What changes is what reruns: a changed input, sample parameter or missing output
# of one sample reruns its whole chunk (the other samples' outputs come out identical).
from brainfuse.modalities.base import modality_reference

for modality in MODALITIES.values():
    for index, rows in enumerate(sample_chunks(modality.name)):

        rule:
            name:
                chunk_rule(modality.name, index)
            input:
                **chunk_files(
                    rows,
                    lambda row, m=modality: m.sample_inputs(row, CFG.raw),
                ),
            output:
                # the manifest first: Snakemake matches a requested file against a rule's
                # outputs in order, and the manifest is the one the cache job requests
                **{
                    "manifest": CHUNK_MANIFEST.format(
                        rule=chunk_rule(modality.name, index)
                    ),
                    **chunk_files(
                        rows,
                        lambda row, m=modality: sample_paths(
                            m.name, SAMPLE_OUTPUTS[m.name], row
                        ),
                    ),
                },
            log:
                [
                    sample_path(modality.name, SAMPLE_LOG[modality.name], row)
                    for row in rows
                ],
            benchmark:
                CHUNK_BENCHMARK.format(rule=chunk_rule(modality.name, index))
            conda:
                ENV
            resources:
                mem_mb=res(modality.name, "mem_mb"),
                # resources.<modality>.runtime is per sample; the samples run one after another
                runtime=res(modality.name, "runtime") * len(rows),
            params:
                modality=modality_reference(modality),
                atlas=CFG.raw["atlas"],
                # only the keys the step reads: other keys of the section do not rerun it
                section=modality.run_params(CFG.raw),
                samples=[
                    {
                        "entities": sample_entities(modality.name, row),
                        **modality.sample_params(row, CFG.raw),
                    }
                    for row in rows
                ],
            script:
                "../scripts/sample_run.py"


for modality in MODALITIES.values():

    rule:
        name:
            f"{modality.name}_cache"
        input:
            chunks=chunk_manifests(modality.name),
            participants=INPUTS.participants,
        output:
            cache=cache_of(modality.name),
            qc=MODALITY_QC.format(modality=modality.name),
        log:
            f"{LOGS}/cache_{modality.name}.log",
        conda:
            ENV
        resources:
            mem_mb=res("cache", "mem_mb"),
            runtime=res("cache", "runtime"),
        params:
            modality=modality_reference(modality),
            # the participants table's subject column is an input key the labels need too
            label={
                **CFG.raw["label"],
                "participant_column": CFG.raw["input"]["participant_column"],
            },
            atlas=CFG.raw["atlas"],
            # the whole section: the cache records it in its metadata
            section=CFG.section(modality.config_section),
            # every sample's files, written by the chunk jobs whose manifests are the input
            sample_files={
                argument: expand_samples(
                    modality.name, SAMPLE_OUTPUTS[modality.name][output]
                )
                for argument, output in modality.cache_inputs.items()
            },
        script:
            "../scripts/sample_cache.py"
