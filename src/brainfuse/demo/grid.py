"""The demo's BOLD voxel grid: the atlas field of view resampled to the BOLD voxel size."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainfuse.core.atlas import Atlas


@dataclass(frozen=True)
class BoldGrid:
    """The coarse BOLD grid and the atlas resampled onto it.

    Attributes
    ----------
    affine : ndarray (4, 4)
        Voxel-to-MNI affine: the atlas's axes, scaled to ``voxel_size``, same first-voxel centre.
    shape : tuple of int
        Spatial shape.
    mask : ndarray of bool
        Brain mask: labelled voxels dilated by one voxel.
    node : ndarray of int
        For each mask voxel (C order), the node index (0-based, atlas order) or -1 in the
        unlabelled rim.
    coords : ndarray (n_mask, 3)
        World coordinates (mm) of the mask voxels.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    mask: np.ndarray
    node: np.ndarray
    coords: np.ndarray


def make_bold_grid(atlas: Atlas, voxel_size: float) -> BoldGrid:
    """Resample the atlas labels with nearest neighbour onto a ``voxel_size`` grid.

    The grid keeps the atlas's orientation and first-voxel centre, so with a voxel size that is
    a multiple of the atlas's, every BOLD voxel centre is an atlas voxel centre and any
    nearest-neighbour resampling of the atlas (as the pipeline does) gives the same labels.
    """
    aff = np.asarray(atlas.img.affine, dtype=float)
    zooms = np.linalg.norm(aff[:3, :3], axis=0)
    affine = aff.copy()
    affine[:3, :3] = aff[:3, :3] * (voxel_size / zooms)
    shape = tuple(
        int(np.ceil(s * z / voxel_size)) for s, z in zip(atlas.img.shape[:3], zooms, strict=True)
    )
    ijk = np.indices(shape).reshape(3, -1).T
    src = nib.affines.apply_affine(np.linalg.inv(aff) @ affine, ijk)
    src = np.rint(src).astype(int)
    inside = np.all((src >= 0) & (src < np.array(atlas.img.shape[:3])), axis=1)
    data = np.asarray(atlas.img.dataobj)
    values = np.zeros(len(ijk), dtype=np.int64)
    values[inside] = data[tuple(src[inside].T)]
    lut = np.full(max(int(values.max()), max(atlas.label_values)) + 1, -1, dtype=np.int64)
    lut[list(atlas.label_values)] = np.arange(atlas.n_nodes)
    node_vol = lut[np.maximum(values, 0)].reshape(shape)
    node_vol[values.reshape(shape) <= 0] = -1
    mask = ndimage.binary_dilation(node_vol >= 0, iterations=1)
    mask_ijk = np.argwhere(mask)
    return BoldGrid(
        affine=affine,
        shape=shape,  # type: ignore[arg-type]
        mask=mask,
        node=node_vol[mask],
        coords=nib.affines.apply_affine(affine, mask_ijk),
    )
