from brainfuse.core import atomic
from brainfuse.core.logging import setup_logging
from brainfuse.curves import CurvePoint, learning_curves
from brainfuse.provenance import check_manifests
from brainfuse.report.curves import curves_figure

setup_logging(snakemake.log[0])
# a subsampled fold's stages read only its subsample: no test subject of the fold may appear
for percent, manifests in snakemake.params.manifests.items():
    check_manifests(manifests, snakemake.params.folds_files[percent])
curves = learning_curves([CurvePoint(**point) for point in snakemake.params.points])
atomic.write_tsv(snakemake.output.table, curves)
curves_figure(curves, snakemake.output.figure)
