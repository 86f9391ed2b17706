# brainfuse: BIDS derivatives -> parcellated signals -> Parquet caches -> models per stage and fold
# -> evaluation -> reports. Rules only wire files to functions in src/brainfuse/; the rule files
# are included in the order the data flows (docs/architecture.md).
import time

from snakemake.utils import min_version

min_version("9.0")
PLANNING_STARTED = time.monotonic()  # the wall time printed at the end counts from here

# A config file given on the command line (--configfile) replaces config.yaml rather than being
# merged into it, so that it can drop methods, filters or bands; the schema fills every default
# (brainfuse.config.read_config), so such a file needs only what differs. --config key=value
# overrides apply on top either way.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/paths.smk"


localrules:
    dataset_description,
    qc_table,
    folds,
    diagnostics,
    evaluate,
    report,
    curve_folds,
    curves_evaluate,
    curves,


include: "workflow/rules/demo.smk"
include: "workflow/rules/modalities.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/diagnostics.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/curves.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        REPORT_INDEX,
        EVAL["summary"],
        EVAL["diagnostics"],
        DATASET_DESCRIPTION,
        # per-sample derivatives are deliverables too: a deleted one is remade with what depends on it
        missing_sample_outputs(),


onsuccess:
    from pathlib import Path
    from brainfuse.run_summary import run_summary

    # The QC table is absent when only part of the workflow was asked for (a single sample, say).
    if Path(QC_TABLE).exists():
        print(
            run_summary(
                QC_TABLE, SKIPPED, REPORT_INDEX, time.monotonic() - PLANNING_STARTED
            )
        )
