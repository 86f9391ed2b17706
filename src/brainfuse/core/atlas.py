"""Load the parcellation atlas: Schaefer via nilearn's fetcher, or a labelled NIfTI (+ labels).

Network labels come only from the atlas: Schaefer's Yeo-7 networks (named in its labels) or the
``network`` column of a custom label table. An atlas without them has no networks, and the report
then shows parcels in atlas order and claims no network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

YEO7_NETWORKS = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")


@dataclass(frozen=True)
class Atlas:
    """A labelled volumetric atlas with a fixed node order.

    Attributes
    ----------
    name : str
        Short identifier used in BIDS names (``atlas-<name>``), e.g. ``Schaefer100``.
    img : nibabel.Nifti1Image
        Integer label image; 0 is background.
    label_values : tuple of int
        Image value of each node, in node order.
    labels : tuple of str
        Node names in node order (no background).
    networks : tuple of str
        Network of each node, in node order: Yeo-7 for Schaefer, the ``network`` column of a
        custom label table; empty when the atlas has no network labels.
    space : str
        Template space of the image, e.g. ``MNI152NLin6Asym`` (FSL MNI152).
    """

    name: str
    img: nib.Nifti1Image
    label_values: tuple[int, ...]
    labels: tuple[str, ...]
    networks: tuple[str, ...]
    space: str

    @property
    def n_nodes(self) -> int:
        return len(self.labels)

    @property
    def has_networks(self) -> bool:
        """Whether every node has a network label (``networks`` is empty otherwise)."""
        return len(self.networks) == self.n_nodes > 0

    def centroids(self) -> np.ndarray:
        """Centre of mass of each parcel in world (mm) coordinates, shape (n_nodes, 3)."""
        data = np.asarray(self.img.dataobj).astype(np.int64)
        out = np.full((self.n_nodes, 3), np.nan)
        for i, value in enumerate(self.label_values):
            ijk = np.argwhere(data == value)
            if len(ijk):
                out[i] = nib.affines.apply_affine(self.img.affine, ijk.mean(axis=0))
        return out


def schaefer_networks(labels: Sequence[str]) -> tuple[str, ...]:
    """Yeo-7 network of each Schaefer label (``7Networks_LH_Vis_1`` -> ``Vis``).

    Returns an empty tuple unless every label is a Schaefer 7-network label, so that an atlas
    whose names merely contain a word like ``Vis`` gets no networks.
    """
    networks = []
    for label in labels:
        parts = re.split(r"[_-]", label)
        found = [p for p in parts[1:] if p in YEO7_NETWORKS]
        if parts[0] != "7Networks" or not found:
            return ()
        networks.append(found[0])
    return tuple(networks)


def known_networks(networks: Sequence[str] | None, n_nodes: int) -> tuple[str, ...]:
    """Network labels as a cache's metadata gives them, or ``()`` where they say nothing.

    Caches written before atlases could lack networks hold ``"NA"`` for every parcel of a
    non-Schaefer atlas; that, a missing entry or a length other than ``n_nodes`` means none.
    """
    networks = [str(n) for n in networks or []]
    if len(networks) != n_nodes or all(n in ("", "NA") for n in networks):
        return ()
    return tuple(networks)


def network_word(networks: Sequence[str]) -> str:
    """How the report names these network labels: ``"Yeo-7 network"`` when they are Yeo-7's,
    ``"network"`` for any other set, ``""`` when there are none."""
    if not networks:
        return ""
    return "Yeo-7 network" if set(networks) <= set(YEO7_NETWORKS) else "network"


def load_atlas(
    name: str = "Schaefer100",
    path: str | None = None,
    labels_path: str | None = None,
    data_dir: str | None = None,
    space: str | None = None,
) -> Atlas:
    """Load the atlas described by the ``atlas`` section of the config.

    Parameters
    ----------
    name : str
        ``Schaefer<N>`` (N in 100..1000, 7 networks) is fetched with nilearn when ``path`` is not
        given; any other name requires ``path``.
    path : str, optional
        Labelled NIfTI image (integer values, 0 = background).
    labels_path : str, optional
        TSV/CSV table with ``index`` and ``name`` columns and optionally ``network`` (a BIDS
        ``dseg.tsv`` or a nilearn LUT), or a FreeSurfer/CBIG colour table (index, name, R, G, B
        per line). Without it, the parcels are the image's nonzero values in ascending order,
        named by their value (``"1"``, ``"2"``, ...), and the atlas has no networks.
    data_dir : str, optional
        Where nilearn looks for (and would download) the Schaefer files; ``NILEARN_DATA`` is used
        when unset.
    space : str, optional
        Template space of the image; Schaefer's FSL MNI152 files are ``MNI152NLin6Asym``.
    """
    if path is None:
        match = re.fullmatch(r"Schaefer(\d+)", name)
        if match is None:
            raise ValueError(
                f"atlas.name={name!r}: only Schaefer<N> can be fetched; give atlas.path"
            )
        from nilearn.datasets import fetch_atlas_schaefer_2018

        fetched = fetch_atlas_schaefer_2018(
            n_rois=int(match.group(1)),
            yeo_networks=7,
            resolution_mm=2,
            data_dir=data_dir,
            verbose=0,
        )
        img = nib.load(fetched["maps"])
        names = [str(x) for x in fetched["labels"]]
        if names and names[0].lower() == "background":
            names = names[1:]
        values = list(range(1, len(names) + 1))
        networks = schaefer_networks(names)
        space = space or "MNI152NLin6Asym"
    else:
        img = nib.load(path)
        space = space or "unknown"
        if labels_path is None:
            # no label table: each nonzero image value is a parcel, named by its value so that
            # numeric table headers (AFNI's "#1 #2 ...") match it
            values = sorted(int(v) for v in np.unique(np.asarray(img.dataobj)) if v != 0)
            if not values:
                raise ValueError(f"atlas {name}: {path} has no nonzero (parcel) values")
            names = [str(v) for v in values]
            networks: tuple[str, ...] = ()
        else:
            values, names, networks = _read_label_table(Path(labels_path))
            networks = networks or schaefer_networks(names)
    img = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int32), img.affine, img.header)
    present = set(np.unique(np.asarray(img.dataobj)).tolist())
    missing = [n for v, n in zip(values, names, strict=True) if v not in present]
    if missing:
        raise ValueError(
            f"atlas {name}: labels {missing[:5]} are in the table but not in the image"
        )
    return Atlas(
        name=name,
        img=img,
        label_values=tuple(int(v) for v in values),
        labels=tuple(names),
        networks=networks,
        space=space,
    )


def _read_label_table(path: Path) -> tuple[list[int], list[str], tuple[str, ...]]:
    """Image values, names and (from a ``network`` column, else empty) networks of a table."""
    text = path.read_text().strip().splitlines()
    first = re.split(r"[\t,]", text[0])
    if "index" in first and "name" in first:
        table = pd.read_csv(path, sep=None, engine="python", keep_default_na=False)
        table = table[table["index"].astype(int) != 0]
        names = table["name"].astype(str).tolist()
        networks: tuple[str, ...] = ()
        if "network" in table:
            networks = tuple(table["network"].astype(str).str.strip())
            blank = [n for n, net in zip(names, networks, strict=True) if not net]
            if blank:
                raise ValueError(
                    f"{path}: the 'network' column is empty for labels {blank[:5]} "
                    "(give every parcel a network, or leave the column out)"
                )
        return table["index"].astype(int).tolist(), names, networks
    values, names = [], []
    for line in text:
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) != 0:
            values.append(int(fields[0]))
            names.append(fields[1])
    if not values:
        raise ValueError(f"{path}: no 'index'/'name' columns and no '<index> <name>' lines")
    return values, names, ()


@lru_cache(maxsize=4)
def _cached_atlas(name: str, path: str | None, labels: str | None, data_dir: str | None) -> Atlas:
    return load_atlas(name=name, path=path, labels_path=labels, data_dir=data_dir)


def atlas_from_config(cfg: dict) -> Atlas:
    """The atlas named by the config's ``atlas`` section (loaded once per process)."""
    return _cached_atlas(cfg["name"], cfg.get("path"), cfg.get("labels"), cfg.get("data_dir"))
