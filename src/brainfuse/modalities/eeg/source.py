"""EEG source model on atlas parcels: offline template head model, inverse, parcels, leakage.

Head model (why a sphere)
-------------------------
The pipeline must run with no network, so nothing may be fetched (``mne.datasets.fetch_fsaverage``
is out). MNE's own package data ships fsaverage's scalp surface (``fsaverage-head.fif``), its
inner skull and the fsaverage head<->MRI transform (``fsaverage-trans.fif``) -- but no outer
skull, so a proper 3-layer BEM cannot be built from it, and a 1-layer BEM is only valid for
MEG. We therefore use a **multi-shell sphere model** (MNE's Berg-Scherg approximation with the
standard relative radii 0.90/0.92/0.97/1.00 and conductivities 0.33/1.0/0.004/0.33 S/m for
brain/CSF/skull/scalp), fitted to the template:

* the sphere's centre and radius are a least-squares fit to fsaverage's scalp vertices above
  the pre-auricular plane (head frame z > 0), where a sphere is a good description of the skull;
* electrodes (standard montage or ``*_electrodes.tsv``) are placed on that outer sphere along
  their direction from the centre, since the spherical EEG forward assumes electrodes on the
  outer surface (MNE uses their raw positions otherwise);
* sources form a **volume source space restricted to the atlas's parcels**: the atlas voxels on a
  regular sub-grid (``source_spacing_mm``, default 8 mm: ~2000 sources, >= 5 per Schaefer-100
  parcel; a parcel with no grid voxel gets its voxel nearest its centre of mass), mapped from
  MNI152 mm to fsaverage (MNI305) mm with FreeSurfer's published affine, then to the head frame
  with ``fsaverage-trans.fif``. The ~6 % of grid voxels of the dorsal cortex that fall outside the
  brain sphere (the head is not a sphere) are pulled radially to 5 mm inside it, rather than
  dropped, so that every parcel keeps its sources.

Each source belongs to the parcel of its voxel, so parcel time courses come out in the atlas's
node order, the order used by the fMRI branch. The forward is the same for every recording with
the same electrode set, so it is cached in memory and, when ``cache_dir`` is given, on disk.

MNE checks source positions against the inner sphere in MRI coordinates even for sphere models,
which are defined in head coordinates; with fsaverage's 4 cm head->MRI offset that silently
drops about 30 % of the sources. We therefore move the whole geometry (electrodes, sphere,
sources) rigidly into fsaverage MRI coordinates and use an identity MRI->head transform; the
forward written to the cache then has MNI305 source positions and can be given back as
``forward:`` (:func:`load_forward`).

Inverse
-------
``eLORETA``, ``dSPM``, ``sLORETA`` and ``MNE`` use :mod:`mne.minimum_norm` with free orientation
and an **ad hoc diagonal noise covariance** (:func:`mne.make_ad_hoc_cov`): resting-state data has
no baseline from which to estimate noise, and with a diagonal covariance the minimum-norm kernels
depend only on the regularisation ``lambda2 = 1 / snr**2``. ``LCMV`` uses
:func:`mne.beamformer.make_lcmv` with the recording's broadband data covariance (5 % Tikhonov
regularisation, unit-noise-gain, max-power orientation). Either way the inverse is reduced to a
linear kernel (sources x channels, average-reference projection folded in) once per recording and
applied by matrix product; for parcels it collapses further to a (parcels x channels) matrix.

Parcel time courses
-------------------
For free-orientation kernels each source is first reduced to its dominant orientation (first
eigenvector of its 3x3 source covariance under the data covariance, as ``stc.project("pca")``).
Within a parcel, ``mean_flip`` averages the sources after flipping those anti-correlated with the
parcel's first principal component (the majority keeps its sign); ``pca`` takes the first
principal component scaled to source units and signed to agree with ``mean_flip``.

Leakage correction
------------------
Symmetric orthogonalisation (Colclough et al. 2015) finds the orthonormal set of time courses
closest to the parcel time courses and so removes every zero-lag correlation, including those
caused by the inverse's spatial leakage. It needs the data to have rank >= the number of parcels,
which EEG with fewer channels than parcels (e.g. 64 channels, average reference: rank 63 < 100)
cannot meet; the closest orthonormal set would then be filled with arbitrary signals. In that case
the AEC is computed with pairwise orthogonalisation instead (:func:`pairwise_orthogonalised_aec`:
node j's band-limited signal is regressed on node i's within each envelope window, both directions
averaged, in the spirit of Hipp et al. 2012), and the envelopes themselves are left uncorrected;
``qc['orthogonalisation']`` says which was done. Pairwise methods cannot remove the "ghost"
couplings that symmetric mixing of two real sources creates (Palva et al. 2018); only the
symmetric method does.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import mne
import nibabel as nib
import numpy as np

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import atomic_path

__all__ = [
    "INVERSE_METHODS",
    "PARCEL_MODES",
    "HeadModel",
    "TemplateHead",
    "atlas_source_points",
    "clear_caches",
    "data_rank",
    "fit_sphere",
    "hann_half_weights",
    "inverse_kernel",
    "load_forward",
    "pairwise_orthogonalised_aec",
    "parcel_weights",
    "project_to_sphere",
    "symmetric_orthogonalisation_matrix",
    "symmetric_orthogonalise",
    "template_forward",
    "template_head",
]

# FreeSurfer's affine from MNI152 RAS (mm) to MNI305 RAS (mm), i.e. fsaverage's MRI space
# (https://surfer.nmr.mgh.harvard.edu/fswiki/CoordinateSystems, section 8b).
MNI152_TO_MNI305 = np.array(
    [
        [1.0022, 0.0071, -0.0177, 0.0528],
        [-0.0146, 0.9990, 0.0027, -1.5519],
        [0.0129, 0.0094, 1.0027, -1.2012],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
RELATIVE_RADII = (0.90, 0.92, 0.97, 1.0)
SIGMAS = (0.33, 1.0, 0.004, 0.33)
SOURCE_MARGIN_M = 0.005
INVERSE_METHODS = ("eLORETA", "dSPM", "sLORETA", "MNE", "LCMV")
PARCEL_MODES = ("mean_flip", "pca")
_CACHE_VERSION = "brainfuse-eeg-fwd-v1"


# ---------------------------------------------------------------------------------------------
# Template head


@dataclass(frozen=True)
class TemplateHead:
    """The offline template head: a sphere fitted to fsaverage's scalp, in MNE head coordinates.

    Attributes
    ----------
    centre : ndarray, shape (3,)
        Sphere centre in head coordinates (m).
    radius : float
        Scalp radius (m).
    mri_head_t : mne.transforms.Transform
        fsaverage MRI (surface RAS, = MNI305) -> head transform.
    """

    centre: np.ndarray
    radius: float
    mri_head_t: mne.transforms.Transform

    @property
    def brain_radius(self) -> float:
        return RELATIVE_RADII[0] * self.radius


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points`` (n, 3): |p|^2 = 2 p.c + (r^2 - |c|^2) is linear."""
    design = np.column_stack([2 * points, np.ones(len(points))])
    coef, *_ = np.linalg.lstsq(design, np.sum(points**2, axis=1), rcond=None)
    centre = coef[:3]
    return centre, float(np.sqrt(coef[3] + centre @ centre))


@functools.lru_cache(maxsize=1)
def template_head() -> TemplateHead:
    """Fit the template sphere to fsaverage's scalp from MNE's package data (no download)."""
    data_dir = Path(mne.__file__).parent / "data" / "fsaverage"
    head_mri_t = mne.read_trans(data_dir / "fsaverage-trans.fif", verbose=False)
    mri_head_t = mne.transforms.invert_transform(head_mri_t)
    scalp = mne.read_bem_surfaces(data_dir / "fsaverage-head.fif", verbose=False)[0]
    rr = mne.transforms.apply_trans(mri_head_t, scalp["rr"])
    # Below the pre-auricular plane the face and neck are far from spherical.
    centre, radius = fit_sphere(rr[rr[:, 2] > 0])
    return TemplateHead(centre=centre, radius=radius, mri_head_t=mri_head_t)


def project_to_sphere(positions: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Move each position along its direction from ``centre`` onto the sphere of ``radius``."""
    rel = np.asarray(positions, float) - centre
    norm = np.linalg.norm(rel, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("an electrode position coincides with the sphere centre")
    return centre + rel / norm * radius


# ---------------------------------------------------------------------------------------------
# Source space from the atlas


def _node_lookup(atlas: Atlas, data: np.ndarray) -> np.ndarray:
    """Node index of every voxel (-1 outside the atlas's labelled nodes)."""
    values = np.asarray(atlas.label_values, dtype=np.int64)
    order = np.argsort(values)
    flat = data.ravel().astype(np.int64)
    pos = np.clip(np.searchsorted(values[order], flat), 0, len(values) - 1)
    hit = values[order][pos] == flat
    return np.where(hit, order[pos], -1).reshape(data.shape)


def atlas_source_points(atlas: Atlas, spacing_mm: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Atlas voxels on a regular sub-grid: MNI positions (mm) and their node index.

    Parameters
    ----------
    atlas : Atlas
        Labelled volume in an MNI152 space.
    spacing_mm : float
        Approximate grid spacing; rounded to a whole number of voxels.

    Returns
    -------
    mni_mm : ndarray, shape (n_sources, 3)
    node : ndarray of int, shape (n_sources,)
        Index into ``atlas.labels`` of the parcel holding each source. Every node has at least
        one source: a parcel the grid misses contributes its voxel nearest its centre of mass.
    """
    data = np.asarray(atlas.img.dataobj)
    node = _node_lookup(atlas, data)
    voxel = np.linalg.norm(atlas.img.affine[:3, :3], axis=0)
    step = max(1, int(round(spacing_mm / float(voxel.mean()))))
    grid = np.zeros(data.shape, bool)
    grid[::step, ::step, ::step] = True
    ijk = np.argwhere(grid & (node >= 0))
    nodes = node[tuple(ijk.T)]
    missing = np.setdiff1d(np.arange(atlas.n_nodes), nodes)
    extra = []
    for n in missing:
        vox = np.argwhere(node == n)
        if not len(vox):
            raise ValueError(f"atlas {atlas.name}: parcel {atlas.labels[n]} has no voxels")
        extra.append(vox[np.argmin(np.linalg.norm(vox - vox.mean(axis=0), axis=1))])
    if extra:
        ijk = np.vstack([ijk, np.array(extra)])
        nodes = np.concatenate([nodes, missing])
    return nib.affines.apply_affine(atlas.img.affine, ijk), nodes.astype(np.int64)


def _mni_to_mni305(atlas: Atlas, mni_mm: np.ndarray) -> np.ndarray:
    if atlas.space.lower().startswith(("mni305", "fsaverage")):
        return mni_mm
    # MNI152 variants (and unknown spaces, which are almost always MNI152 in practice).
    return nib.affines.apply_affine(MNI152_TO_MNI305, mni_mm)


def _atlas_digest(atlas: Atlas) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(np.asarray(atlas.img.dataobj)).tobytes())
    h.update(np.asarray(atlas.img.affine, float).tobytes())
    h.update(repr((atlas.label_values, atlas.space)).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Forward models


@dataclass
class HeadModel:
    """An EEG forward model whose sources are assigned to atlas nodes.

    Attributes
    ----------
    fwd : mne.Forward
        Free- or fixed-orientation EEG forward.
    node_of_source : ndarray of int, shape (n_sources,)
        Atlas node of each source (-1: not in any parcel; such sources are ignored).
    n_nodes : int
    description : str
        ``template-sphere`` or the user forward's path, for QC.
    key : str
        Cache key of the forward (electrodes + atlas + spacing).
    qc : dict
    """

    fwd: mne.Forward
    node_of_source: np.ndarray
    n_nodes: int
    description: str
    key: str
    qc: dict = field(default_factory=dict)


class _LRU:
    """A small thread-safe LRU cache: forwards/kernels are large, so keep only a few."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_FORWARDS = _LRU(4)
_KERNELS = _LRU(8)


def clear_caches() -> None:
    """Forget cached forwards and inverse kernels (for tests and benchmarks)."""
    _FORWARDS.clear()
    _KERNELS.clear()


def _eeg_info(ch_names: list[str], positions: np.ndarray) -> mne.Info:
    info = mne.create_info(list(ch_names), 1000.0, "eeg")
    montage = mne.channels.make_dig_montage(
        ch_pos=dict(zip(ch_names, np.asarray(positions, float), strict=True)), coord_frame="head"
    )
    info.set_montage(montage)
    return info


def _write_forward(path: Path, fwd: mne.Forward) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix="-fwd.fif") as tmp:
        mne.write_forward_solution(tmp, fwd, overwrite=True, verbose=False)


def template_forward(
    ch_names: list[str],
    positions: np.ndarray,
    atlas: Atlas,
    spacing_mm: float = 8.0,
    cache_dir: str | os.PathLike | None = None,
) -> HeadModel:
    """EEG forward of the template sphere for these electrodes and the atlas's parcels.

    Parameters
    ----------
    ch_names : list of str
        EEG channel names.
    positions : ndarray, shape (n_channels, 3)
        Electrode positions in head coordinates (m) on the template's outer sphere
        (see :func:`project_to_sphere`).
    atlas : Atlas
    spacing_mm : float
        Source grid spacing.
    cache_dir : path, optional
        Directory for an on-disk copy of the forward (``-fwd.fif``), reused across processes.

    Returns
    -------
    HeadModel
    """
    head = template_head()
    positions = np.asarray(positions, float)
    h = hashlib.sha1(_CACHE_VERSION.encode())
    h.update(repr(list(ch_names)).encode())
    h.update(np.round(positions * 1e4).astype(np.int64).tobytes())
    h.update(_atlas_digest(atlas).encode())
    h.update(repr((float(spacing_mm), mne.__version__.split(".")[:2])).encode())
    key = h.hexdigest()[:16]
    disk = Path(cache_dir) / f"eeg-template-{key}-fwd.fif" if cache_dir else None
    cached = _FORWARDS.get(key)
    if cached is not None:
        if disk is not None and not disk.exists():
            _write_forward(disk, cached.fwd)
            cached.qc["forward_file"] = str(disk)
        return cached

    mni, node = atlas_source_points(atlas, spacing_mm)
    mri = _mni_to_mni305(atlas, mni) / 1000.0
    rr = mne.transforms.apply_trans(head.mri_head_t, mri)
    rel = rr - head.centre
    radius = np.linalg.norm(rel, axis=1)
    limit = head.brain_radius - SOURCE_MARGIN_M
    n_moved = int(np.sum(radius > limit))
    rr = head.centre + rel * np.minimum(1.0, limit / radius)[:, None]

    fwd = None
    if disk is not None and disk.exists():
        try:
            fwd = mne.read_forward_solution(disk, verbose=False)
        except Exception:  # a stale or damaged cache entry is simply rebuilt
            fwd = None
    if fwd is None:
        # The whole geometry is moved rigidly into fsaverage MRI (MNI305) coordinates and the
        # forward computed with an identity MRI->head transform: MNE checks sources against the
        # sphere in MRI coordinates, and the written -fwd.fif then holds MNI305 source positions,
        # so that it can be reused as a user-supplied forward (load_forward).
        head_mri_t = mne.transforms.invert_transform(head.mri_head_t)
        to_mri = mne.transforms.apply_trans
        src = mne.setup_volume_source_space(
            pos=dict(rr=to_mri(head_mri_t, rr), nn=np.tile([0.0, 0.0, 1.0], (len(rr), 1))),
            verbose=False,
        )
        sphere = mne.make_sphere_model(
            r0=tuple(to_mri(head_mri_t, head.centre[None])[0]),
            head_radius=head.radius,
            relative_radii=RELATIVE_RADII,
            sigmas=SIGMAS,
            verbose=False,
        )
        fwd = mne.make_forward_solution(
            _eeg_info(list(ch_names), to_mri(head_mri_t, positions)),
            trans=mne.transforms.Transform("mri", "head"),
            src=src,
            bem=sphere,
            meg=False,
            eeg=True,
            mindist=0.0,
            verbose=False,
        )
        if disk is not None:
            _write_forward(disk, fwd)
        model_path = str(disk) if disk is not None else None
    else:
        model_path = str(disk)
    if fwd["nsource"] != len(rr):
        # The sphere check dropped sources: keep the node labels of those that remain.
        kept = np.concatenate([s["vertno"] for s in fwd["src"]])
        node = node[kept]
    model = HeadModel(
        fwd=fwd,
        node_of_source=node,
        n_nodes=atlas.n_nodes,
        description="template-sphere",
        key=key,
        qc={
            "n_sources": int(fwd["nsource"]),
            "sources_moved_inside": n_moved,
            "min_sources_per_node": int(np.bincount(node, minlength=atlas.n_nodes).min()),
            "sphere_radius_mm": round(head.radius * 1000, 1),
            "forward_file": model_path,
        },
    )
    _FORWARDS.put(key, model)
    return model


def load_forward(path: str | os.PathLike, atlas: Atlas, max_dist_mm: float = 6.0) -> HeadModel:
    """A user-supplied ``-fwd.fif`` with its sources assigned to atlas nodes.

    Source positions are taken to be in a template MRI space (MNI305/fsaverage or MNI152, as the
    atlas's space): the atlas can only label sources whose MRI coordinates are MNI-like. A source
    outside every parcel takes the nearest parcel voxel within ``max_dist_mm``, else it is
    ignored. Every atlas node must receive at least one source.
    """
    from scipy.spatial import cKDTree

    path = Path(path)
    key = f"user:{path.resolve()}:{path.stat().st_mtime_ns}:{_atlas_digest(atlas)}"
    cached = _FORWARDS.get(key)
    if cached is not None:
        return cached
    fwd = mne.read_forward_solution(path, verbose=False)
    fwd = mne.pick_types_forward(fwd, meg=False, eeg=True)
    head_mri_t = mne.transforms.invert_transform(fwd["mri_head_t"])
    rr = []
    for s in fwd["src"]:
        pts = s["rr"][s["vertno"]]
        if s["coord_frame"] == mne.io.constants.FIFF.FIFFV_COORD_HEAD:
            pts = mne.transforms.apply_trans(head_mri_t, pts)
        rr.append(pts)
    mri_mm = np.concatenate(rr) * 1000.0
    if not atlas.space.lower().startswith(("mni305", "fsaverage")):
        mri_mm = nib.affines.apply_affine(np.linalg.inv(MNI152_TO_MNI305), mri_mm)
    data = np.asarray(atlas.img.dataobj)
    node_img = _node_lookup(atlas, data)
    labelled = np.argwhere(node_img >= 0)
    tree = cKDTree(nib.affines.apply_affine(atlas.img.affine, labelled))
    dist, idx = tree.query(mri_mm)
    node = node_img[tuple(labelled[idx].T)]
    node = np.where(dist <= max_dist_mm, node, -1)
    counts = np.bincount(node[node >= 0], minlength=atlas.n_nodes)
    if np.any(counts == 0):
        empty = [atlas.labels[i] for i in np.flatnonzero(counts == 0)[:5]]
        raise ValueError(
            f"forward {path}: no source lies in atlas parcels {empty} "
            f"({int(np.sum(counts == 0))} empty); is the source space in MNI/fsaverage space?"
        )
    model = HeadModel(
        fwd=fwd,
        node_of_source=node,
        n_nodes=atlas.n_nodes,
        description=str(path),
        key=key,
        qc={
            "n_sources": int(fwd["nsource"]),
            "sources_outside_atlas": int(np.sum(node < 0)),
            "min_sources_per_node": int(counts.min()),
        },
    )
    _FORWARDS.put(key, model)
    return model


# ---------------------------------------------------------------------------------------------
# Inverse


def _save_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _identity_evoked(info: mne.Info) -> mne.EvokedArray:
    """An evoked whose data is the identity: applying a linear inverse to it yields the kernel."""
    evoked = mne.EvokedArray(np.eye(len(info.ch_names)), info, nave=1, verbose=False)
    evoked.set_eeg_reference("average", projection=True, verbose=False)
    return evoked


def inverse_kernel(
    model: HeadModel,
    ch_names: list[str],
    method: str = "eLORETA",
    snr: float = 3.0,
    data_cov: np.ndarray | None = None,
    n_samples: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Linear inverse kernel for these channels, average-reference projection included.

    Parameters
    ----------
    model : HeadModel
    ch_names : list of str
        Good EEG channels, in the order of the data the kernel will multiply.
    method : str
        ``eLORETA``, ``dSPM``, ``sLORETA``, ``MNE`` or ``LCMV``.
    snr : float
        Assumed SNR of the minimum-norm methods (``lambda2 = 1 / snr**2``).
    data_cov : ndarray, shape (n_channels, n_channels), optional
        Data covariance (average referenced); required by ``LCMV``.
    n_samples : int, optional
        Degrees of freedom of ``data_cov``.
    cache_dir : path, optional
        Directory for on-disk copies of data-independent kernels (all but LCMV).

    Returns
    -------
    ndarray, shape (n_sources, n_orient, n_channels)
        ``n_orient`` is 3 for free-orientation minimum-norm inverses, 1 for fixed orientation and
        for LCMV (max-power orientation).
    """
    if method not in INVERSE_METHODS:
        raise ValueError(f"inverse={method!r}: choose one of {INVERSE_METHODS}")
    key = (model.key, tuple(ch_names), method, float(snr))
    disk = None
    if method != "LCMV" and cache_dir is not None:
        digest = hashlib.sha1(repr((_CACHE_VERSION, mne.__version__, key)).encode())
        disk = Path(cache_dir) / f"eeg-kernel-{digest.hexdigest()[:16]}.npy"
    if method != "LCMV":
        cached = _KERNELS.get(key)
        if cached is None and disk is not None and disk.exists():
            try:
                cached = np.load(disk)
            except (OSError, ValueError):  # damaged cache entry: rebuild
                cached = None
            if cached is not None and cached.shape[2] == len(ch_names):
                _KERNELS.put(key, cached)
            else:
                cached = None
        if cached is not None:
            if disk is not None and not disk.exists():
                _save_array(disk, cached)
            return cached
    fwd = mne.pick_channels_forward(model.fwd, include=list(ch_names), ordered=True, verbose=False)
    if fwd["sol"]["data"].shape[0] != len(ch_names):
        missing = sorted(set(ch_names) - set(fwd["info"].ch_names))
        raise ValueError(f"forward {model.description} lacks channels {missing[:10]}")
    positions = np.array([ch["loc"][:3] for ch in fwd["info"]["chs"]])
    evoked = _identity_evoked(_eeg_info(list(ch_names), positions))
    noise_cov = mne.make_ad_hoc_cov(evoked.info, verbose=False)
    fixed = fwd["source_ori"] == mne.io.constants.FIFF.FIFFV_MNE_FIXED_ORI
    if method == "LCMV":
        if data_cov is None:
            raise ValueError("LCMV needs the data covariance")
        cov = mne.Covariance(
            data_cov, list(ch_names), [], evoked.info["projs"], n_samples or 1, verbose=False
        )
        filters = mne.beamformer.make_lcmv(
            evoked.info,
            fwd,
            cov,
            reg=0.05,
            noise_cov=noise_cov,
            pick_ori=None if fixed else "max-power",
            weight_norm="unit-noise-gain",
            verbose=False,
        )
        kernel = mne.beamformer.apply_lcmv(evoked, filters, verbose=False).data[:, None, :]
        return kernel
    inv = mne.minimum_norm.make_inverse_operator(
        evoked.info,
        fwd,
        noise_cov,
        loose=0.0 if fixed else 1.0,
        fixed=bool(fixed),
        # eLORETA compensates depth itself and ignores the prior.
        depth=None if method == "eLORETA" else 0.8,
        verbose=False,
    )
    stc = mne.minimum_norm.apply_inverse(
        evoked,
        inv,
        lambda2=1.0 / snr**2,
        method=method,
        pick_ori=None if fixed else "vector",
        verbose=False,
    )
    kernel = stc.data[:, None, :] if fixed else stc.data
    _KERNELS.put(key, kernel)
    if disk is not None:
        _save_array(disk, kernel)
    return kernel


def parcel_weights(
    kernel: np.ndarray,
    node_of_source: np.ndarray,
    n_nodes: int,
    data_cov: np.ndarray,
    mode: str = "mean_flip",
) -> np.ndarray:
    """Collapse a source kernel into one signed time-course weight vector per atlas node.

    Parameters
    ----------
    kernel : ndarray, shape (n_sources, n_orient, n_channels)
    node_of_source : ndarray of int, shape (n_sources,)
        Node of each source; negative values are ignored.
    n_nodes : int
    data_cov : ndarray, shape (n_channels, n_channels)
        Covariance of the (filtered, average-referenced) data: orientations, sign flips and
        principal components are those of the data's source activity.
    mode : {"mean_flip", "pca"}

    Returns
    -------
    ndarray, shape (n_nodes, n_channels)
        Node time courses are ``weights @ data``.
    """
    if mode not in PARCEL_MODES:
        raise ValueError(f"parcel_mode={mode!r}: choose one of {PARCEL_MODES}")
    if kernel.shape[1] > 1:
        # Dominant orientation of each source: first eigenvector of K_s C K_s^T (3 x 3).
        kc = np.einsum("soc,cd->sod", kernel, data_cov)
        src_cov = np.einsum("sod,spd->sop", kc, kernel)
        _, vecs = np.linalg.eigh(src_cov)
        scalar = np.einsum("so,soc->sc", vecs[:, :, -1], kernel)
    else:
        scalar = kernel[:, 0, :]
    weights = np.zeros((n_nodes, kernel.shape[2]))
    for n in range(n_nodes):
        rows = scalar[node_of_source == n]
        if not len(rows):
            raise ValueError(f"node {n} has no sources")
        cov = rows @ data_cov @ rows.T
        _, vecs = np.linalg.eigh(cov)
        first = vecs[:, -1]
        flips = np.where(first >= 0, 1.0, -1.0)
        if flips.sum() < 0:
            # Keep the majority's sign so that the parcel sign is reproducible.
            flips, first = -flips, -first
        mean_flip = flips @ rows / len(rows)
        if mode == "mean_flip":
            weights[n] = mean_flip
        else:
            pca = first @ rows / np.sqrt(len(rows))
            weights[n] = pca if pca @ data_cov @ mean_flip >= 0 else -pca
    return weights


# ---------------------------------------------------------------------------------------------
# Leakage correction


def data_rank(gram: np.ndarray, rtol: float = 1e-8) -> int:
    """Numerical rank of a symmetric positive semi-definite Gram matrix."""
    eig = np.linalg.eigvalsh(gram)
    return int(np.sum(eig > rtol * max(float(eig[-1]), np.finfo(float).tiny)))


def symmetric_orthogonalisation_matrix(
    gram: np.ndarray, max_iter: int = 200, tol: float = 1e-10
) -> np.ndarray:
    """Linear map of Colclough et al.'s (2015) symmetric orthogonalisation, from the Gram matrix.

    For time courses ``Z`` (time x nodes) with ``Z.T @ Z = gram``, the closest set of mutually
    orthogonal time courses ``O D`` (``O`` orthonormal, ``D`` diagonal magnitudes) minimising
    ``||Z - O D||_F`` is ``Z @ A``. Because ``A`` only depends on the Gram matrix, it also
    orthogonalises analytic (complex) band-limited signals when ``gram`` is the real part of
    their Gram matrix, which is the Gram matrix of the real band-limited signals (up to a factor).

    Parameters
    ----------
    gram : ndarray, shape (n_nodes, n_nodes)
        Must have full rank.
    max_iter, tol : int, float
        Alternating least-squares iterations on ``D`` and their relative convergence tolerance.

    Returns
    -------
    ndarray, shape (n_nodes, n_nodes), symmetric
    """
    gram = np.asarray(gram, float)
    n = len(gram)
    rank = data_rank(gram)
    if rank < n:
        raise ValueError(
            f"symmetric orthogonalisation needs data rank >= number of nodes ({rank} < {n})"
        )
    d = np.sqrt(np.diag(gram))
    previous = np.inf
    for _ in range(max_iter):
        # Z D = U S V^T  =>  D G D = V S^2 V^T and O = Z D V S^-1 V^T.
        evals, v = np.linalg.eigh(d[:, None] * gram * d[None, :])
        s_inv = 1.0 / np.sqrt(np.clip(evals, np.finfo(float).tiny, None))
        p = (v * s_inv) @ v.T  # V S^-1 V^T
        zt_o = gram @ (d[:, None] * p)  # Z^T O
        d = np.diag(zt_o).copy()
        # ||Z - O D||^2 = tr(G) - 2 tr(D Z^T O) + tr(D^2)
        err = np.trace(gram) - 2 * d @ np.diag(zt_o) + d @ d
        if abs(previous - err) <= tol * max(abs(err), np.trace(gram) * 1e-12):
            break
        previous = err
    evals, v = np.linalg.eigh(d[:, None] * gram * d[None, :])
    p = (v / np.sqrt(np.clip(evals, np.finfo(float).tiny, None))) @ v.T
    return d[:, None] * p * d[None, :]


def symmetric_orthogonalise(data: np.ndarray) -> np.ndarray:
    """Symmetrically orthogonalise node time courses (Colclough et al. 2015).

    Parameters
    ----------
    data : ndarray, shape (n_nodes, n_times)
        Band-limited real time courses, or analytic signals (complex).

    Returns
    -------
    ndarray, same shape: mutually uncorrelated at zero lag, each as close as possible to its input.
    """
    data = np.asarray(data)
    gram = np.real(data @ data.conj().T)
    return symmetric_orthogonalisation_matrix(gram) @ data


def hann_half_weights(k: int) -> np.ndarray:
    """Rising half of a periodic Hann window of length ``2k`` (falling half = 1 - rising)."""
    return np.sin(np.pi * np.arange(k) / (2 * k)) ** 2


def _windows(analytic: np.ndarray, k: int, start: int, stop: int) -> np.ndarray:
    """Windows ``start..stop`` as real arrays (windows, nodes, 4k): [Re | Im] x sqrt(Hann).

    Window ``e`` spans samples ``e*k .. e*k + 2k``; with ``W W^T / k`` it gives the local
    cross-power matrix ``Re(sum_t w(t) y(t) y(t)^H) / k`` in one matrix product.
    """
    # 1/k folded in, so that W W^T is the local mean cross-power directly.
    taper = np.sqrt(np.concatenate([hann_half_weights(k), 1.0 - hann_half_weights(k)]) / k)
    taper = np.tile(taper, 2).astype(np.float32)
    seg = analytic[:, start * k : (stop + 1) * k]
    n, length = seg.shape
    shape = (n, stop - start + 1, k)
    halves = np.concatenate(
        [seg.real.reshape(shape), seg.imag.reshape(shape)], axis=2
    )  # (nodes, half-windows, [Re | Im] of k samples)
    out = np.empty((stop - start, n, 4 * k), np.float32)
    out[:, :, 0:k] = halves[:, :-1, 0:k].transpose(1, 0, 2)
    out[:, :, k : 2 * k] = halves[:, 1:, 0:k].transpose(1, 0, 2)
    out[:, :, 2 * k : 3 * k] = halves[:, :-1, k:].transpose(1, 0, 2)
    out[:, :, 3 * k :] = halves[:, 1:, k:].transpose(1, 0, 2)
    out *= taper
    return out


def pairwise_orthogonalised_aec(
    analytic: np.ndarray, k: int, n_env: int, chunk: int = 32
) -> np.ndarray:
    """Envelope correlation after pairwise orthogonalisation within each envelope window.

    For each ordered pair ``(i, j)`` and each envelope window, the band-limited signal of node
    ``j`` is regressed on node ``i`` with a real (zero-lag) coefficient fitted in that window,
    ``y_j - beta_ij(e) y_i``; the envelope of the residual is correlated with node ``i``'s, and
    the two directions are averaged. Like Hipp et al.'s (2012) instantaneous orthogonalisation,
    and unlike one regression over the whole recording (Brookes et al. 2012), this follows the
    time-varying mixing of leaked activity: in simulations of one source leaking into two
    parcels it removes as much spurious AEC as Hipp's method, while a global regression removes
    almost none. It is exact and cheap here because, with envelopes defined as local RMS
    amplitudes (Hann windows of ``2k`` samples every ``k``), the residual power of every pair is
    ``P_j - L_ij^2 / P_i`` from the window's cross-power matrix ``L``: one small matrix product per
    window instead of a Hilbert transform per pair.

    Parameters
    ----------
    analytic : ndarray, shape (n_nodes, (n_env + 1) * k), complex
        Analytic signals starting one half-window before the first envelope sample.
    k : int
        Samples per envelope sample (half a window).
    n_env : int
        Number of envelope samples.
    chunk : int
        Envelope samples processed at once; small enough that the (chunk, n, n) work arrays stay
        in cache.

    Returns
    -------
    ndarray, shape (n_nodes, n_nodes)
        Symmetric, unit diagonal.
    """
    n = analytic.shape[0]
    # Correlations do not depend on each node's scale; unit power keeps squared cross-powers of
    # tiny source units (~1e-40) out of float32's subnormal range, where arithmetic is ~100x slower.
    mean_power = np.mean(
        analytic.real.astype(float) ** 2 + analytic.imag.astype(float) ** 2, axis=1
    )
    scale = (1.0 / np.sqrt(np.where(mean_power > 0, mean_power, 1.0))).astype(np.float32)
    sum_a = np.zeros(n)
    sum_p = np.zeros(n)
    sum_b = np.zeros((n, n))
    sum_bb = np.zeros((n, n))
    sum_ab = np.zeros((n, n))
    work = np.empty((chunk, n, n), np.float32)
    for start in range(0, n_env, chunk):
        stop = min(n_env, start + chunk)
        win = _windows(analytic, k, start, stop)
        win *= scale[None, :, None]
        local = win @ win.transpose(0, 2, 1)  # (e, n, n) local mean cross-power
        power = np.einsum("eii->ei", local).copy()
        floor = np.float32(np.finfo(np.float32).tiny)
        amp = np.sqrt(power)
        # Residual power of y_j regressed on y_i in the window: P_j - L_ij^2 / P_i.
        orth = np.square(local, out=work[: stop - start])
        orth /= np.maximum(power, floor)[:, :, None]
        np.subtract(power[:, None, :], orth, out=orth)
        np.maximum(orth, 0.0, out=orth)
        # float32 sums over one chunk are exact enough; the running totals are float64.
        sum_bb += orth.sum(axis=0)
        np.sqrt(orth, out=orth)
        sum_a += amp.sum(axis=0)
        sum_p += power.sum(axis=0)
        sum_b += orth.sum(axis=0)
        # sum_e amp[e, i] * orth[e, i, j] as one batched matrix-vector product over i.
        sum_ab += (amp.T[:, None, :] @ orth.transpose(1, 0, 2))[:, 0, :]
    mean_a = sum_a / n_env
    mean_b = sum_b / n_env
    cov = sum_ab / n_env - mean_a[:, None] * mean_b
    var_a = sum_p / n_env - mean_a**2
    var_b = sum_bb / n_env - mean_b**2
    denom = np.sqrt(np.clip(var_a[:, None] * var_b, 0.0, None))
    corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 1e-30)
    aec = (corr + corr.T) / 2
    np.fill_diagonal(aec, 1.0)
    return aec
