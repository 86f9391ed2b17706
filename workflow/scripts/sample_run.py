# One chunk of a modality's samples in one process: the per-sample step for each sample in turn,
# each with its own inputs, outputs and log (named s{j}_<name> by the rule; chunk_files in
# workflow/rules/common.smk). Outputs are written atomically by the step, so a chunk killed
# mid-way leaves no half-written file; Snakemake reruns the whole chunk.
import logging

from brainfuse.core import atomic
from brainfuse.core.logging import setup_logging
from brainfuse.modalities.base import load_modality


def sample_files(files, j: int) -> dict:
    """The files of the chunk's j-th sample, by their per-sample name."""
    prefix = f"s{j}_"
    return {name[len(prefix) :]: path for name, path in files.items() if name.startswith(prefix)}


params = snakemake.params
modality = load_modality(params.modality)
for j, sample in enumerate(params.samples):
    setup_logging(snakemake.log[j])
    try:
        modality.run_sample(
            inputs=sample_files(snakemake.input, j),
            params={"atlas": params.atlas, "section": params.section, **sample},
            outputs=sample_files(snakemake.output, j),
        )
    except Exception:
        # a bad input is an exclusion, not an error: this is a bug or a broken machine, and it
        # fails the whole chunk, so say which sample it was in that sample's log
        logging.getLogger("brainfuse").exception("sample %s failed", sample["entities"])
        raise

# Last: the cache job starts from this file, so it exists only once every sample is done.
atomic.write_json(
    snakemake.output.manifest,
    {
        "rule": snakemake.rule,
        "samples": [
            {
                "entities": sample["entities"],
                "outputs": {k: str(v) for k, v in sample_files(snakemake.output, j).items()},
            }
            for j, sample in enumerate(params.samples)
        ],
    },
)
