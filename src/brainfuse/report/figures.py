"""Report figures (matplotlib Agg and nilearn): biomarkers on the brain, ROC curves, group FC
difference, fold spread, MoE routing and QC.

Every function draws one figure and writes it to ``out_png`` atomically (a PNG that Snakemake's
report and the HTML report both use); none needs a display or the network. None raises on
degenerate input (flat, NaN or empty importances, one-class predictions): what can be drawn is
drawn, and a figure that cannot be drawn becomes a PNG that says why (and the reason is logged),
so that the report stage never stops a run.
"""

from __future__ import annotations

import base64
import functools
import inspect
import logging
import textwrap
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfuse.core.atomic import atomic_path

log = logging.getLogger("brainfuse")

#: Yeo-7 network colours (the usual Yeo 2011 palette), for labels and bars; other networks of a
#: custom atlas get a colour of matplotlib's ``tab10`` palette.
NETWORK_COLORS = {
    "Vis": "#781286",
    "SomMot": "#4682b4",
    "DorsAttn": "#00760e",
    "SalVentAttn": "#c43afa",
    "Limbic": "#a0a064",
    "Cont": "#e69422",
    "Default": "#cd3e4e",
}
#: colour of a node without a network label
UNLABELLED_COLOR = "#888888"
NETWORK_ORDER = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
DPI = 100
#: nilearn's colorbar rounds its bounds with this format; a colour range must survive it.
NILEARN_TICK_FORMAT = "%.2g"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_png: str | Path) -> str:
    """Write ``fig`` to ``out_png`` (atomically) and close it; returns the path."""
    plt = _plt()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return str(out_png)


def data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI (to embed it in a self-contained page)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def message_figure(text: str, out_png: str | Path, size: tuple[float, float] = (6, 1.4)) -> str:
    """A figure that only says why there is nothing to show."""
    plt = _plt()
    fig = plt.figure(figsize=size)
    fig.text(0.5, 0.5, textwrap.fill(text, 80), ha="center", va="center", color="#667085")
    return save(fig, out_png)


def never_raises(draw: Callable[..., str]) -> Callable[..., str]:
    """Make a figure function write a PNG that says why instead of raising.

    The figure functions handle the degenerate inputs they know of; this is the last resort for
    the ones nobody foresaw, so that one figure never stops the report of a long run.
    """
    signature = inspect.signature(draw)

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        plt = _plt()
        open_before = set(plt.get_fignums())
        try:
            return draw(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any failure becomes a figure that says why
            for number in set(plt.get_fignums()) - open_before:
                plt.close(number)
            out_png = signature.bind(*args, **kwargs).arguments["out_png"]
            log.warning("%s could not draw %s: %r", draw.__name__, out_png, error)
            return message_figure(
                f"This figure could not be drawn ({draw.__name__}): "
                f"{type(error).__name__}: {error}",
                out_png,
            )

    return wrapper


def _colour_range(low: float, high: float) -> tuple[float, float]:
    """Colour limits for importances in ``[low, high]`` (finite) that nilearn's colorbar can show.

    The colour runs from a little below the lowest to the highest value, so that the ranking
    shows. nilearn rounds the colorbar bounds with ``%.2g``; a narrow range (1.069-1.107 %, as a
    diffuse effect gives) would round to one value and its colorbar would divide by zero, so the
    range then starts at 0 (the values are about equal, which the colours then say).
    """
    vmax = high if high > 0 else 1.0
    vmin = low - 0.1 * (high - low)
    if float(NILEARN_TICK_FORMAT % vmin) >= float(NILEARN_TICK_FORMAT % vmax):
        vmin = 0.0 if vmax > 0 else vmax - 1.0
    return vmin, vmax


def _network_color(network: str) -> str:
    """A network's colour: Yeo-7's palette, a stable ``tab10`` colour for another network's
    name (the same in every figure), grey for no network."""
    if not network:
        return UNLABELLED_COLOR
    if network in NETWORK_COLORS:
        return NETWORK_COLORS[network]
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["tab10"](zlib.crc32(network.encode()) % 10))


def network_order(networks: Sequence[str]) -> np.ndarray:
    """Node order grouping nodes by network, stable within a network: Yeo-7 networks in the
    usual order, other networks in the order they first appear."""
    rank = {n: i for i, n in enumerate(NETWORK_ORDER)}
    for network in networks:
        rank.setdefault(network, len(rank))
    return np.argsort([rank[n] for n in networks], kind="stable")


def _short(name: str) -> str:
    return name.removeprefix("7Networks_").removeprefix("17Networks_")


# --------------------------------------------------------------------------- brain figures


def _coords(names: Sequence[str], atlas_labels: Sequence[str], centroids: np.ndarray):
    index = {n: i for i, n in enumerate(atlas_labels)}
    rows = [index.get(n) for n in names]
    if any(r is None for r in rows):
        return None
    coords = centroids[rows]
    return None if not np.isfinite(coords).all() else coords


@never_raises
def top_parcels_figure(
    importance: pd.DataFrame,
    atlas_labels: Sequence[str],
    centroids: np.ndarray,
    out_png: str | Path,
    block: str | None = None,
    k: int = 10,
    title: str = "",
) -> str:
    """The top-``k`` parcels of a block as markers (size and colour = importance) on a glass
    brain at the atlas centroids (nilearn ``plot_markers``)."""
    plt = _plt()
    from nilearn import plotting

    frame = importance if block is None else importance[importance["block"] == block]
    frame = frame[np.isfinite(pd.to_numeric(frame["importance"], errors="coerce"))]
    frame = frame.sort_values("rank", kind="stable").head(k)
    if frame.empty:
        return message_figure("No parcel importance to show (none is a finite number).", out_png)
    coords = _coords(list(frame["parcel"]), atlas_labels, centroids)
    if coords is None:
        return message_figure(
            "The nodes of this block are not atlas parcels (e.g. EEG channels): "
            "no brain map; see the table.",
            out_png,
        )
    values = frame["importance"].to_numpy(dtype=float) * 100  # percent of the importance
    low, high = float(values.min()), float(values.max())
    spread = high - low
    # size and colour run from the k-th to the first parcel, so that the ranking shows
    size = 60 + 240 * (values - low) / spread if spread > 0 else np.full(len(values), 150.0)
    vmin, vmax = _colour_range(low, high)
    fig = plt.figure(figsize=(9, 3.2))
    plotting.plot_markers(
        values,
        coords,
        node_size=size,
        node_cmap="YlOrRd",
        node_vmin=vmin,
        node_vmax=vmax,
        display_mode="lzry",
        figure=fig,
        title=title or None,
        colorbar=True,
        alpha=0.85,
    )
    return save(fig, out_png)


@never_raises
def top_edges_figure(
    edges: pd.DataFrame,
    atlas_labels: Sequence[str],
    centroids: np.ndarray,
    out_png: str | Path,
    block: str | None = None,
    k: int = 20,
    title: str = "",
) -> str:
    """The top-``k`` edges of a block on a glass brain (nilearn ``plot_connectome``): red edges
    push towards the positive class (positive pattern or attribution), blue away from it."""
    plt = _plt()
    from nilearn import plotting

    frame = edges if block is None else edges[edges["block"] == block]
    frame = frame[np.isfinite(pd.to_numeric(frame["importance"], errors="coerce"))]
    if frame.empty:
        return message_figure(
            "This model has no edge-level attribution (or none is a finite number).", out_png
        )
    if (frame["band"].astype(str) != "").any():
        frame = frame.assign(edge_label=frame["band"].astype(str))
    frame = frame.sort_values("rank", kind="stable").head(k)
    nodes = sorted(set(frame["parcel_i"]) | set(frame["parcel_j"]))
    coords = _coords(nodes, atlas_labels, centroids)
    if coords is None:
        return message_figure(
            "The nodes of this block are not atlas parcels: no brain map; see the table.",
            out_png,
        )
    position = {n: i for i, n in enumerate(nodes)}
    adjacency = np.zeros((len(nodes), len(nodes)))
    top = float(frame["importance"].abs().max()) or 1.0  # all-zero edges: drawn as zero
    for row in frame.itertuples(index=False):
        i, j = position[row.parcel_i], position[row.parcel_j]
        value = row.importance / top * (-1.0 if row.sign == "-" else 1.0)
        if abs(value) > abs(adjacency[i, j]):
            adjacency[i, j] = adjacency[j, i] = value
    node_colors = [_network_color(n) for n in _networks_of(frame, nodes)]
    fig = plt.figure(figsize=(9, 3.2))
    plotting.plot_connectome(
        adjacency,
        coords,
        node_color=node_colors,
        node_size=30,
        edge_cmap="RdBu_r",
        edge_vmin=-1,
        edge_vmax=1,
        display_mode="lzry",
        figure=fig,
        title=title or None,
        colorbar=True,
        edge_kwargs={"linewidth": 2},
    )
    return save(fig, out_png)


def _networks_of(frame: pd.DataFrame, nodes: Sequence[str]) -> list[str]:
    if "network_i" not in frame:
        return [""] * len(nodes)
    mapping = dict(zip(frame["parcel_i"], frame["network_i"], strict=True))
    mapping |= dict(zip(frame["parcel_j"], frame["network_j"], strict=True))
    return [str(mapping.get(n, "")) for n in nodes]


@never_raises
def networks_figure(summary: Mapping[str, Any], out_png: str | Path) -> str:
    """Per block: share of importance per network (bars, coloured by network) against the
    network's share of parcels (ticks); bands and modality shares when the model has them.

    A block whose atlas has no network labels has no network panel; when no panel is left, the
    figure says so.
    """
    plt = _plt()
    blocks = summary.get("blocks") or {}
    if not blocks:
        return message_figure("No biomarkers for this method.", out_png)
    extra = [("bands", b) for b, v in blocks.items() if v.get("bands")]
    if len(blocks) > 1 and summary.get("kind") == "integrated_gradients":
        # IG attributions of all inputs add up to one log-odds difference: comparable shares
        extra.append(("modalities", None))
    panels = [("networks", b) for b, v in blocks.items() if v.get("networks")] + extra
    if not panels:
        return message_figure(
            "The atlas has no network labels: no network shares (the tables list the parcels).",
            out_png,
        )
    legend_block = next((b for what, b in panels if what == "networks"), None)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (what, block) in zip(axes[0], panels, strict=True):
        if what == "networks":
            rows = blocks[block]["networks"]
            rows = sorted(
                rows,
                key=lambda r: (
                    NETWORK_ORDER.index(r["network"]) if r["network"] in NETWORK_ORDER else 99
                ),
            )
            names = [r["network"] for r in rows]
            # a share is null in summary.json where it was not a number (e.g. no importance)
            shares = [r.get("share") or 0.0 for r in rows]
            total = blocks[block].get("n_parcels") or 0
            expected = [(r.get("n_parcels") or 0) / total if total else 0.0 for r in rows]
            y = np.arange(len(rows))
            ax.barh(y, shares, color=[_network_color(n) for n in names])
            ax.scatter(expected, y, marker="|", s=200, color="black", label="parcel share")
            ax.set_yticks(y, names)
            ax.invert_yaxis()
            ax.set_xlabel("share of importance")
            ax.set_title(f"{block}: networks", fontsize=10)
            if block == legend_block:
                ax.legend(
                    loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False, fontsize=8
                )
        elif what == "bands":
            bands = blocks[block]["bands"]
            ax.bar(
                list(bands),
                [v.get("share") or 0.0 for v in bands.values()],
                yerr=[v.get("sd") or 0.0 for v in bands.values()],
                color="#3b5bdb",
            )
            ax.set_ylabel("share of importance")
            ax.set_title(f"{block}: bands", fontsize=10)
        else:
            names = list(blocks)
            ax.bar(
                names, [blocks[b].get("share_of_attribution") or 0 for b in names], color="#667085"
            )
            ax.set_ylabel("share of total |attribution|")
            ax.set_title("inputs", fontsize=10)
            ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return save(fig, out_png)


# --------------------------------------------------------------------------- evaluation


@never_raises
def roc_figure(predictions: pd.DataFrame, out_png: str | Path) -> str:
    """ROC curves per method: each test fold (thin) and the pooled test predictions (thick).

    Pooling scores across folds assumes they are on one scale (probabilities, or SVM decision
    values from similar models); the per-fold curves do not.
    """
    plt = _plt()
    from sklearn.metrics import roc_auc_score, roc_curve

    score = pd.to_numeric(predictions.get("y_score"), errors="coerce")
    predictions = predictions[np.isfinite(score)] if score is not None else predictions.iloc[0:0]
    methods = list(dict.fromkeys(predictions["method"])) if "method" in predictions else []
    if not methods:
        return message_figure("No predictions with a finite score: no ROC curves.", out_png)
    cols = min(4, len(methods))
    rows = int(np.ceil(len(methods) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel()[len(methods) :]:
        ax.axis("off")
    for ax, method in zip(axes.ravel(), methods, strict=False):
        frame = predictions[predictions["method"] == method]
        for _, fold in frame.groupby("fold"):
            if fold["y_true"].nunique() == 2:
                fpr, tpr, _ = roc_curve(fold["y_true"], fold["y_score"])
                ax.plot(fpr, tpr, color="#98a2b3", lw=0.8)
        title = method
        if frame["y_true"].nunique() == 2:
            fpr, tpr, _ = roc_curve(frame["y_true"], frame["y_score"])
            auc = roc_auc_score(frame["y_true"], frame["y_score"])
            ax.plot(fpr, tpr, color="#3b5bdb", lw=2)
            title += f"\npooled AUC {auc:.2f}"
        else:
            title += "\none class only: no ROC curve"
        ax.plot([0, 1], [0, 1], color="#b42318", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("1 - specificity", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity", fontsize=8)
    fig.tight_layout()
    return save(fig, out_png)


@never_raises
def fold_spread_figure(
    per_fold: pd.DataFrame, out_png: str | Path, metric: str = "balanced_accuracy"
) -> str:
    """Per-fold metric of each method as points over a box, with chance marked."""
    plt = _plt()
    methods = list(dict.fromkeys(per_fold["method"])) if metric in per_fold else []
    if not methods:
        return message_figure(f"No per-fold {metric.replace('_', ' ')}.", out_png)
    values = pd.to_numeric(per_fold[metric], errors="coerce")
    values = values.where(np.isfinite(values))
    data = [values[per_fold["method"] == m].dropna().to_numpy() for m in methods]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(methods), 3.2))
    ax.boxplot(data, tick_labels=methods, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(
            i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, color="#3b5bdb", zorder=3
        )
    ax.axhline(0.5, color="#b42318", lw=1, ls="--", label="chance")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.02)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(loc="lower right", frameon=False)
    return save(fig, out_png)


@never_raises
def per_site_figure(
    per_site: pd.DataFrame, out_png: str | Path, metric: str = "balanced_accuracy"
) -> str:
    """Each method's metric on every site's test subjects (one point per site, sized by its
    subjects) and their mean, with chance marked: the spread across sites."""
    plt = _plt()
    defined = per_site[np.isfinite(pd.to_numeric(per_site[metric], errors="coerce"))]
    methods = list(dict.fromkeys(defined["method"]))
    if not methods:
        return message_figure(
            f"No site has test subjects of both classes: no per-site {metric.replace('_', ' ')}.",
            out_png,
        )
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.45 * len(methods)))
    for i, method in enumerate(methods):
        rows = defined[defined["method"] == method]
        ax.scatter(
            rows[metric],
            np.full(len(rows), i),
            s=12 + 3 * rows["n_subjects"],
            alpha=0.6,
            color="#3b5bdb",
            zorder=3,
        )
        ax.plot([rows[metric].mean()] * 2, [i - 0.3, i + 0.3], color="#1d2330", lw=2)
    ax.axvline(0.5, color="#b42318", lw=1, ls="--", label="chance")
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"{metric.replace('_', ' ')} per site (bar: mean over sites)")
    ax.legend(loc="lower right", frameon=False, fontsize=8)
    return save(fig, out_png)


@never_raises
def fc_difference_figure(
    fc: np.ndarray,
    labels: Sequence[str],
    subjects: Sequence[str],
    networks: Sequence[str],
    positive: str,
    out_png: str | Path,
) -> str:
    """Mean Fisher-z FC of the positive class minus the others (runs averaged per subject
    first), ordered by network with the network blocks marked; in atlas order, unmarked, when
    ``networks`` does not label every parcel (an atlas without network labels gives none)."""
    plt = _plt()
    labels = np.asarray([str(x) for x in labels])
    subjects = np.asarray([str(x) for x in subjects])
    z = np.arctanh(np.clip(np.asarray(fc, dtype=float), -0.999999, 0.999999))
    per_subject, subject_label = [], []
    for subject in dict.fromkeys(subjects):
        rows = subjects == subject
        per_subject.append(_finite_mean(z[rows]))
        subject_label.append(labels[rows][0])
    if not per_subject or z.ndim != 3 or z.shape[1] == 0:
        return message_figure("No fMRI samples with connectivity: no FC group difference.", out_png)
    per_subject = np.stack(per_subject)
    positive_rows = np.asarray(subject_label) == str(positive)
    if positive_rows.all() or not positive_rows.any():
        return message_figure(
            "Only one class among the fMRI samples: no group difference.", out_png
        )
    diff = _finite_mean(per_subject[positive_rows]) - _finite_mean(per_subject[~positive_rows])
    if not np.isfinite(diff).any():
        return message_figure(
            "No parcel pair has connectivity in both classes: no FC group difference.", out_png
        )
    np.fill_diagonal(diff, 0.0)
    labelled = len(networks) == len(diff)
    order = network_order(networks) if labelled else np.arange(len(diff))
    ordered = np.nan_to_num(diff[np.ix_(order, order)])
    limit = float(np.nanpercentile(np.abs(ordered), 99.5)) or 1.0
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    image = ax.imshow(ordered, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    if labelled:
        _mark_networks(ax, np.asarray(networks)[order])
    else:
        ax.set_xlabel("parcel (atlas order; the atlas has no network labels)", fontsize=8)
        ax.set_ylabel("parcel (atlas order)", fontsize=8)
    n_pos, n_neg = int(positive_rows.sum()), int((~positive_rows).sum())
    ax.set_title(f"mean Fisher-z FC: {positive} (n={n_pos}) minus others (n={n_neg})", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="Δz")
    return save(fig, out_png)


def _mark_networks(ax, nets: np.ndarray) -> None:
    """Lines between the network blocks of an ordered matrix and the networks' names as ticks."""
    bounds = [i for i in range(1, len(nets)) if nets[i] != nets[i - 1]]
    for b in bounds:
        ax.axhline(b - 0.5, color="black", lw=0.6)
        ax.axvline(b - 0.5, color="black", lw=0.6)
    starts = [0, *bounds]
    ends = [*bounds, len(nets)]
    centres = [(s + e - 1) / 2 for s, e in zip(starts, ends, strict=True)]
    names = [str(nets[s]) for s in starts]
    ax.set_xticks(centres, names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(centres, names, fontsize=8)
    for tick, name in zip(ax.get_xticklabels(), names, strict=True):
        tick.set_color(_network_color(name))
    for tick, name in zip(ax.get_yticklabels(), names, strict=True):
        tick.set_color(_network_color(name))


def _finite_mean(stack: np.ndarray) -> np.ndarray:
    """Mean over the first axis of the finite values; NaN where there is none (a parcel missing
    from every run), without numpy's "Mean of empty slice" warning."""
    finite = np.isfinite(stack)
    count = finite.sum(axis=0)
    total = np.where(finite, stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@never_raises
def routing_figure(routing: Mapping[str, Any], out_png: str | Path) -> str:
    """MoE routing shares by class (M3D-BFS): per MoE, stacked mean share of tokens per expert
    for each class, averaged over fusion blocks, test samples and folds."""
    plt = _plt()
    records = pd.DataFrame((routing or {}).get("records") or [])
    if records.empty:
        return message_figure("No routing tables.", out_png)
    moes = list(dict.fromkeys(records["moe"]))
    fig, axes = plt.subplots(1, len(moes), figsize=(3.0 * len(moes), 3.0), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, moe in zip(axes[0], moes, strict=True):
        frame = records[records["moe"] == moe]
        table = frame.pivot_table(index="label", columns="expert", values="share", aggfunc="mean")
        bottom = np.zeros(len(table))
        for e in table.columns:
            values = table[e].fillna(0).to_numpy()
            ax.bar(
                table.index.astype(str),
                values,
                bottom=bottom,
                color=cmap(int(e) % 10),
                label=f"expert {e}",
            )
            bottom += values
        ax.set_title(f"{moe} MoE", fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of tokens")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False, fontsize=8)
    fig.tight_layout()
    return save(fig, out_png)


# --------------------------------------------------------------------------- QC


@never_raises
def fd_distribution_figure(
    qc: pd.DataFrame, out_png: str | Path, fd_threshold: float | None = None
) -> str:
    """Mean framewise displacement of every fMRI run, included and excluded."""
    plt = _plt()
    fmri = qc[qc["modality"] == "fmri"] if "modality" in qc else qc.iloc[0:0]
    fd = pd.to_numeric(fmri.get("mean_fd", pd.Series(dtype=float)), errors="coerce")
    fd = fd.where(np.isfinite(fd))
    if fd.notna().sum() == 0:
        return message_figure(
            "No framewise displacement recorded (no fMRI runs with confounds).", out_png
        )
    fig, ax = plt.subplots(figsize=(5.5, 2.8))
    included = fmri["status"] == "included"
    bins = np.linspace(0, float(fd.max()) * 1.05 + 1e-6, 25)
    ax.hist(fd[included].dropna(), bins=bins, color="#3b5bdb", alpha=0.8, label="included")
    if (~included & fd.notna()).any():
        ax.hist(fd[~included].dropna(), bins=bins, color="#b42318", alpha=0.8, label="excluded")
    if fd_threshold:
        ax.axvline(
            fd_threshold,
            color="black",
            ls="--",
            lw=1,
            label=f"censoring threshold ({fd_threshold} mm, per volume)",
        )
    missing = int((~included & fd.isna()).sum())
    if missing:
        ax.set_title(
            f"{missing} excluded run(s) have no FD in the QC table and are not shown",
            fontsize=8,
            color="#b42318",
        )
    ax.set_xlabel("mean FD of the run (mm)")
    ax.set_ylabel("runs")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, out_png)


@never_raises
def exclusions_figure(qc: pd.DataFrame, out_png: str | Path) -> str:
    """Excluded samples by modality and reason."""
    plt = _plt()
    excluded = qc[qc["status"] != "included"]
    if excluded.empty:
        return message_figure("No sample was excluded.", out_png)
    reasons = excluded["reason"].fillna("").astype(str).map(_reason_key)
    table = excluded.assign(reason_key=reasons).groupby(["reason_key", "modality"]).size()
    table = table.unstack(fill_value=0)
    fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.45 * len(table)))
    left = np.zeros(len(table))
    colors = {"fmri": "#3b5bdb", "eeg": "#e69422", "sc": "#00760e"}
    for modality in table.columns:
        values = table[modality].to_numpy()
        ax.barh(
            [textwrap.fill(r, 60) for r in table.index],
            values,
            left=left,
            color=colors.get(modality, "#667085"),
            label=modality,
        )
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("excluded samples")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, out_png)


def _reason_key(reason: str) -> str:
    """A reason without its file name and run-specific durations, so like reasons group."""
    import re

    text = re.sub(r"^\S+\.(tsv|json|nii\.gz|edf|bdf|vhdr|set|csv|npy|mat):\s*", "", reason.strip())
    text = re.sub(r"only \d+(\.\d+)? s\b", "only N s", text)
    return text or "(no reason recorded)"
