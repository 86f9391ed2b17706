"""Load the parcellation atlas: Schaefer via nilearn's fetcher, or a labelled NIfTI + labels."""

from __future__ import annotations

import re
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
        Network of each node (Yeo-7 for Schaefer, ``"NA"`` where unknown).
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

    def centroids(self) -> np.ndarray:
        """Centre of mass of each parcel in world (mm) coordinates, shape (n_nodes, 3)."""
        data = np.asarray(self.img.dataobj).astype(np.int64)
        out = np.full((self.n_nodes, 3), np.nan)
        for i, value in enumerate(self.label_values):
            ijk = np.argwhere(data == value)
            if len(ijk):
                out[i] = nib.affines.apply_affine(self.img.affine, ijk.mean(axis=0))
        return out


def network_of(label: str) -> str:
    """Yeo-7 network named in a Schaefer label such as ``7Networks_LH_Vis_1``."""
    parts = re.split(r"[_-]", label)
    for part in parts:
        if part in YEO7_NETWORKS:
            return part
    return "NA"


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
        given; any other name requires ``path`` and ``labels_path``.
    path : str, optional
        Labelled NIfTI image.
    labels_path : str, optional
        TSV/CSV table with ``index`` and ``name`` columns (a BIDS ``dseg.tsv`` or a nilearn LUT), or
        a FreeSurfer/CBIG colour table (index, name, R, G, B per line).
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
        space = space or "MNI152NLin6Asym"
    else:
        if labels_path is None:
            raise ValueError(
                "atlas.path is set but atlas.labels is missing: a label table is required"
            )
        img = nib.load(path)
        values, names = _read_label_table(Path(labels_path))
        space = space or "unknown"
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
        networks=tuple(network_of(n) for n in names),
        space=space,
    )


def _read_label_table(path: Path) -> tuple[list[int], list[str]]:
    text = path.read_text().strip().splitlines()
    first = re.split(r"[\t,]", text[0])
    if "index" in first and "name" in first:
        table = pd.read_csv(path, sep=None, engine="python")
        table = table[table["index"] != 0]
        return table["index"].astype(int).tolist(), table["name"].astype(str).tolist()
    values, names = [], []
    for line in text:
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) != 0:
            values.append(int(fields[0]))
            names.append(fields[1])
    if not values:
        raise ValueError(f"{path}: no 'index'/'name' columns and no '<index> <name>' lines")
    return values, names


@lru_cache(maxsize=4)
def _cached_atlas(name: str, path: str | None, labels: str | None, data_dir: str | None) -> Atlas:
    return load_atlas(name=name, path=path, labels_path=labels, data_dir=data_dir)


def atlas_from_config(cfg: dict) -> Atlas:
    """The atlas named by the config's ``atlas`` section (loaded once per process)."""
    return _cached_atlas(cfg["name"], cfg.get("path"), cfg.get("labels"), cfg.get("data_dir"))
