from brainfuse.core import atomic
from brainfuse.core.logging import setup_logging
from brainfuse.curves import CurvePoint, learning_curves
from brainfuse.report.curves import curves_figure

setup_logging(snakemake.log[0])
curves = learning_curves([CurvePoint(**point) for point in snakemake.params.points])
atomic.write_tsv(snakemake.output.table, curves)
curves_figure(curves, snakemake.output.figure)
