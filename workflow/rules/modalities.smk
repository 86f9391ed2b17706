# Every modality (brainfuse.modalities): one {name}_run job per sample (its per-sample step) and one
# {name}_cache job joining the samples into cache/{name}.parquet. Nothing here names a modality.
from brainfuse.modalities.base import modality_reference

# modality -> output name -> path pattern with the sample's wildcards
SAMPLE_OUTPUTS = {
    name: {
        output: out_pattern(name, datatype, **entities)
        for output, (datatype, entities) in modality.sample_outputs(ATLAS).items()
    }
    for name, modality in MODALITIES.items()
}
# the per-sample deliverable of each modality, asked for by rule all
PER_SAMPLE_OUTPUTS = {
    name: SAMPLE_OUTPUTS[name][modality.cache_inputs["data"]]
    for name, modality in MODALITIES.items()
}


for modality in MODALITIES.values():

    rule:
        name:
            f"{modality.name}_run"
        input:
            unpack(lambda w, m=modality: m.sample_inputs(INPUTS.row(m.name, w), config)),
        output:
            **SAMPLE_OUTPUTS[modality.name],
        log:
            out_pattern(modality.name, "logs", suffix=f"{modality.name}.log"),
        benchmark:
            out_pattern(modality.name, "benchmarks", suffix=f"{modality.name}_run.tsv")
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
            atlas=config["atlas"],
            # only the keys the step reads: other keys of the section do not rerun it
            section=modality.run_params(config),
            sample=lambda w, m=modality: m.sample_params(INPUTS.row(m.name, w), config),
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
            cache=f"{R}/cache/{modality.name}.parquet",
            qc=f"{R}/qc/{modality.name}_qc.tsv",
        log:
            f"{R}/logs/cache_{modality.name}.log",
        conda:
            ENV
        resources:
            mem_mb=res("cache", "mem_mb"),
            runtime=res("cache", "runtime"),
        params:
            modality=modality_reference(modality),
            label=config["label"],
            atlas=config["atlas"],
            # the whole section: the cache records it in its metadata
            section=config[modality.config_section],
        script:
            "../scripts/sample_cache.py"
