# SC: read, check and normalise each subject's structural connectivity matrix.
SC_RELMAT = out_pattern("sc", "dwi", seg=ATLAS, desc="normalized", suffix="relmat.tsv")
SC_SIDECAR = SC_RELMAT.replace(".tsv", ".json")


rule sc_run:
    input:
        sc=lambda w: INPUTS.lookup("sc", w),
    output:
        relmat=SC_RELMAT,
        sidecar=SC_SIDECAR,
    log:
        out_pattern("sc", "logs", suffix="sc.log"),
    benchmark:
        out_pattern("sc", "benchmarks", suffix="sc_run.tsv")
    group:
        "sc"
    conda:
        ENV
    resources:
        mem_mb=res("sc", "mem_mb"),
        runtime=res("sc", "runtime"),
    params:
        entities=lambda w: entities_of("sc", w),
        atlas=config["atlas"],
        sc=config["sc"],
    script:
        "../scripts/sc_run.py"
