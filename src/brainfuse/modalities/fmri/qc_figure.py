"""Run-level QC figures: a parcel carpet plot with framewise displacement, and the FC matrix."""

from __future__ import annotations

import numpy as np

from brainfuse.core.atomic import atomic_path


def _network_order(networks: list[str], n_nodes: int) -> np.ndarray:
    """Parcels grouped by network; in atlas order when the atlas has no network labels."""
    if len(networks) != n_nodes:
        return np.arange(n_nodes)
    return np.argsort(np.asarray(networks), kind="stable")


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.2))
    title = f"{qc.get('sample_id', '')}: {qc.get('status', '')}"
    if qc.get("status") != "included" or len(timeseries) == 0:
        fig.text(0.5, 0.5, f"{title}\n{qc.get('reason', '')}", ha="center", va="center", wrap=True)
    else:
        grid = fig.add_gridspec(2, 2, width_ratios=[2.2, 1], height_ratios=[1, 4], hspace=0.08)
        ax_fd = fig.add_subplot(grid[0, 0])
        ax_fd.plot(fd, color="#b42318", lw=1)
        ax_fd.set_ylabel("FD (mm)")
        ax_fd.set_xticks([])
        ax_fd.set_title(title, fontsize=10, loc="left")
        ax_carpet = fig.add_subplot(grid[1, 0])
        order = _network_order(networks, timeseries.shape[1])
        x = timeseries[:, order]
        sd = np.nanstd(x, axis=0)
        z = (x - np.nanmean(x, axis=0)) / np.where(sd > 0, sd, 1)
        ax_carpet.imshow(np.nan_to_num(z).T, aspect="auto", cmap="gray", vmin=-2, vmax=2)
        ax_carpet.set_xlabel("kept volume")
        ax_carpet.set_ylabel("parcel (by network)" if networks else "parcel (atlas order)")
        ax_fc = fig.add_subplot(grid[:, 1])
        image = ax_fc.imshow(fc[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
        ax_fc.set_title("FC (Pearson r)", fontsize=10)
        ax_fc.set_xticks([])
        ax_fc.set_yticks([])
        fig.colorbar(image, ax=ax_fc, fraction=0.046)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
