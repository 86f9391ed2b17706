"""Run-level QC figures: a parcel carpet plot with framewise displacement, and the FC matrix.

A chunk job draws one figure per run, one run after another in one process. Building a
matplotlib figure (axes, ticks, colorbar) and fitting a tight bounding box around it cost about
three times more than drawing it, so each process builds the figure once per layout (parcel
count, carpet label) and then only swaps the data in before each save. The layout is fixed, so
every run's PNG has the same size. Drawing goes straight to an Agg canvas (no pyplot state).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from brainfuse.core.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SIZE_INCHES = (11.0, 4.2)
DPI = 80
# zlib level of the PNG: 1 encodes several times faster than matplotlib's default (6) for a
# file about a third larger; these are per-run QC pictures, not publication figures
PNG_COMPRESSION = 1


def _network_order(networks: list[str], n_nodes: int) -> np.ndarray:
    """Parcels grouped by network; in atlas order when the atlas has no network labels."""
    if len(networks) != n_nodes:
        return np.arange(n_nodes)
    return np.argsort(np.asarray(networks), kind="stable")


def _new_figure() -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


class _RunCanvas:
    """The figure of an included run, built once; :meth:`show` puts one run's data in it."""

    def __init__(self, n_nodes: int, carpet_label: str) -> None:
        from matplotlib.ticker import MaxNLocator

        self.figure = figure = _new_figure()
        grid = figure.add_gridspec(
            2,
            2,
            width_ratios=[2.2, 1],
            height_ratios=[1, 4],
            hspace=0.08,
            wspace=0.12,
            left=0.07,
            right=0.93,
            bottom=0.13,
            top=0.9,
        )
        self.ax_fd = figure.add_subplot(grid[0, 0])
        (self.fd_line,) = self.ax_fd.plot([], [], color="#b42318", lw=1)
        self.ax_fd.set_ylabel("FD (mm)")
        self.ax_fd.set_xticks([])
        self.ax_fd.yaxis.set_major_locator(MaxNLocator(3))
        self.title = self.ax_fd.set_title("", fontsize=10, loc="left")
        self.ax_carpet = figure.add_subplot(grid[1, 0])
        # nearest: one cell per parcel and volume, and cheaper than the antialiased default
        self.carpet = self.ax_carpet.imshow(
            np.zeros((n_nodes, 2)),
            aspect="auto",
            cmap="gray",
            vmin=-2,
            vmax=2,
            interpolation="nearest",
        )
        self.ax_carpet.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        self.ax_carpet.yaxis.set_major_locator(MaxNLocator(4, integer=True))
        self.ax_carpet.set_xlabel("kept volume")
        self.ax_carpet.set_ylabel(carpet_label)
        ax_fc = figure.add_subplot(grid[:, 1])
        self.fc = ax_fc.imshow(
            np.zeros((n_nodes, n_nodes)), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
        )
        ax_fc.set_title("FC (Pearson r)", fontsize=10)
        ax_fc.set_xticks([])
        ax_fc.set_yticks([])
        # few tick labels: laying out text is most of what is left of drawing the figure
        figure.colorbar(self.fc, ax=ax_fc, fraction=0.046, ticks=[-1, 0, 1])

    def show(self, carpet: np.ndarray, fc: np.ndarray, fd: np.ndarray, title: str) -> Figure:
        """The figure holding this run: ``carpet`` is parcels x kept volumes."""
        n_nodes, n_kept = carpet.shape
        self.carpet.set_data(carpet)
        self.carpet.set_extent((-0.5, n_kept - 0.5, n_nodes - 0.5, -0.5))
        self.fc.set_data(fc)
        self.fd_line.set_data(np.arange(len(fd)), fd)
        self.ax_fd.relim()
        self.ax_fd.autoscale_view()
        self.title.set_text(title)
        return self.figure


@lru_cache(maxsize=4)
def _run_canvas(n_nodes: int, carpet_label: str) -> _RunCanvas:
    return _RunCanvas(n_nodes, carpet_label)


@lru_cache(maxsize=1)
def _message_canvas() -> Figure:
    """The figure of an excluded run: one centred text, set per run."""
    figure = _new_figure()
    figure.text(0.5, 0.5, "", ha="center", va="center", wrap=True)
    return figure


def run_figure(
    timeseries: np.ndarray,
    fc: np.ndarray,
    fd: np.ndarray,
    networks: list[str],
    qc: dict,
    out_png: str,
) -> None:
    """FD trace over a carpet of z-scored parcel signals (ordered by network, or in atlas order
    when ``networks`` is empty) beside the FC matrix.

    Excluded runs get a figure stating the reason, so every run has one to look at.
    """
    title = f"{qc.get('sample_id', '')}: {qc.get('status', '')}"
    if qc.get("status") != "included" or len(timeseries) == 0:
        figure = _message_canvas()
        figure.texts[0].set_text(f"{title}\n{qc.get('reason', '')}")
    else:
        order = _network_order(networks, timeseries.shape[1])
        x = timeseries[:, order]
        sd = np.nanstd(x, axis=0)
        z = (x - np.nanmean(x, axis=0)) / np.where(sd > 0, sd, 1)
        label = "parcel (by network)" if networks else "parcel (atlas order)"
        figure = _run_canvas(timeseries.shape[1], label).show(
            np.nan_to_num(z).T, fc[np.ix_(order, order)], fd, title
        )
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, format="png", pil_kwargs={"compress_level": PNG_COMPRESSION})
