# Every modality (brainfuse.modalities): one {name}_run job per sample (its per-sample step) and one
# {name}_cache job joining the samples into cache/{name}.parquet. Nothing here names a modality.
from brainfuse.modalities.base import modality_reference

for modality in MODALITIES.values():

    rule:
        name:
            f"{modality.name}_run"
        input:
            unpack(
                lambda w, m=modality: m.sample_inputs(INPUTS.row(m.name, w), CFG.raw)
            ),
        output:
            **SAMPLE_OUTPUTS[modality.name],
        log:
            SAMPLE_LOG[modality.name],
        benchmark:
            SAMPLE_BENCHMARK[modality.name]
        group:
            modality.name
        conda:
            ENV
        resources:
            mem_mb=res(modality.name, "mem_mb"),
            runtime=res(modality.name, "runtime"),
        params:
            modality=modality_reference(modality),
            entities=lambda w, m=modality: entities_of(m.name, w),
            atlas=CFG.raw["atlas"],
            # only the keys the step reads: other keys of the section do not rerun it
            section=modality.run_params(CFG.raw),
            sample=lambda w, m=modality: m.sample_params(INPUTS.row(m.name, w), CFG.raw),
        script:
            "../scripts/sample_run.py"


for modality in MODALITIES.values():

    rule:
        name:
            f"{modality.name}_cache"
        input:
            **{
                argument: expand_samples(
                    modality.name, SAMPLE_OUTPUTS[modality.name][output]
                )
                for argument, output in modality.cache_inputs.items()
            },
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
        script:
            "../scripts/sample_cache.py"
