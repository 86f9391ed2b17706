# brainfuse: BIDS derivatives -> parcellated signals -> Parquet caches -> models per stage and fold
# -> evaluation -> reports. Rules only wire files to functions in src/brainfuse/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"


localrules:
    dataset_description,
    qc_table,
    folds,
    evaluate,
    report,


include: "workflow/rules/demo.smk"
include: "workflow/rules/modalities.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{R}/reports/index.html",
        f"{R}/eval/summary.tsv",
        f"{R}/dataset_description.json",
        # per-sample derivatives are deliverables too: a deleted one is remade with what depends on it
        [expand_samples(m, p) for m, p in PER_SAMPLE_OUTPUTS.items() if m in AVAILABLE],
