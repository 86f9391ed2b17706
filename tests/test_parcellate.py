"""Parcellation: equality with NiftiLabelsMasker, coverage, data types, caching, bad inputs."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import brainfuse.modalities.fmri.parcellate as parcellate_module
from brainfuse.core.atlas import Atlas, load_atlas
from brainfuse.core.errors import InputError
from brainfuse.modalities.fmri.parcellate import (
    CoverageWarning,
    SpaceMismatchWarning,
    atlas_grid_cache_clear,
    atlas_grid_cache_info,
    atlas_on_grid,
    parcellate,
)

NILEARN_DATA = Path("/work/shared/data/nilearn_data")
SHAPE = (20, 24, 20)
N_VOLUMES = 30
# MNI-like: 2 mm, x flipped, origin off the corner, so world<->voxel maps are not trivial
AFFINE = np.array(
    [[-2.0, 0, 0, 20.0], [0, 2.0, 0, -26.0], [0, 0, 2.0, -18.0], [0, 0, 0, 1]], dtype=np.float64
)
BOLD_NAME = "sub-01_task-rest_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"


def _toy_atlas() -> Atlas:
    """Twelve block parcels inside an ellipsoid, with label values out of order in the table."""
    i, j, k = np.indices(SHAPE)
    centre = (np.asarray(SHAPE) - 1) / 2
    brain = ((i - centre[0]) / 9.0) ** 2 + ((j - centre[1]) / 11.0) ** 2 + (
        (k - centre[2]) / 9.0
    ) ** 2 <= 1.0
    block = (i // 7) + 3 * (j // 12) + 6 * (k // 10)
    values = np.where(brain, 100 + 7 * block, 0).astype(np.int32)
    present = sorted(set(np.unique(values).tolist()) - {0}, reverse=True)
    labels = tuple(f"7Networks_LH_Vis_{v}" for v in present)
    return Atlas(
        name="Toy",
        img=nib.Nifti1Image(values, AFFINE),
        label_values=tuple(present),
        labels=labels,
        networks=tuple("Vis" for _ in labels),
        space="MNI152NLin6Asym",
    )


@pytest.fixture(scope="module")
def toy_atlas() -> Atlas:
    return _toy_atlas()


@pytest.fixture(autouse=True)
def _fresh_cache():
    atlas_grid_cache_clear()
    yield
    atlas_grid_cache_clear()


def _signal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1000 + 50 * rng.standard_normal(shape)).astype(np.float32)


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, tr: float = 2.0) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    nib.save(img, path)
    return path


def _masker_signals(bold: Path, atlas: Atlas, mask: Path | None = None) -> dict[int, np.ndarray]:
    """NiftiLabelsMasker's signal per label value (only the labels it returns)."""
    from nilearn.maskers import NiftiLabelsMasker

    masker = NiftiLabelsMasker(
        labels_img=atlas.img,
        mask_img=None if mask is None else str(mask),
        strategy="mean",
        resampling_target="data",
        reports=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = masker.fit_transform(str(bold))
    ids = {col: value for col, value in masker.region_ids_.items() if col != "background"}
    return {int(value): signals[:, col] for col, value in ids.items()}


def _assert_matches(result, atlas: Atlas, reference: dict[int, np.ndarray]) -> None:
    for node, value in enumerate(atlas.label_values):
        column = result.timeseries[:, node]
        if value in reference:
            np.testing.assert_allclose(column, reference[value], rtol=2e-7, atol=0)
        else:  # nilearn found no voxel of it: ours is a NaN column with zero coverage
            assert np.isnan(column).all()
            assert result.coverage[node] == 0


@pytest.mark.parametrize("chunk_bytes", [None, 3 * 4 * int(np.prod(SHAPE)) + 5])
def test_matches_nilearn(tmp_path, toy_atlas, monkeypatch, chunk_bytes):
    if chunk_bytes is not None:  # several chunks, the last one short
        monkeypatch.setattr(parcellate_module, "_CHUNK_BYTES", chunk_bytes)
    bold = _write(tmp_path / BOLD_NAME, _signal((*SHAPE, N_VOLUMES)))
    result = parcellate(bold, toy_atlas)
    assert result.timeseries.shape == (N_VOLUMES, toy_atlas.n_nodes)
    assert result.timeseries.dtype == np.float32
    assert result.tr == pytest.approx(2.0)
    assert result.warnings == []
    np.testing.assert_array_equal(result.coverage, 1.0)
    reference = _masker_signals(bold, toy_atlas)
    assert len(reference) == toy_atlas.n_nodes
    _assert_matches(result, toy_atlas, reference)


def test_matches_nilearn_with_mask(tmp_path, toy_atlas):
    data = _signal((*SHAPE, N_VOLUMES), seed=1)
    bold = _write(tmp_path / BOLD_NAME, data)
    labels = np.asarray(toy_atlas.img.dataobj)
    mask = np.ones(SHAPE, dtype=np.uint8)
    mask[:, :, :6] = 0  # cuts the lower parcels partly
    mask[labels == toy_atlas.label_values[0]] = 0  # and removes one parcel entirely
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, AFFINE), mask_path)

    result = parcellate(bold, toy_atlas, mask_path=mask_path, min_coverage=0.0)
    reference = _masker_signals(bold, toy_atlas, mask_path)
    assert toy_atlas.label_values[0] not in reference
    _assert_matches(result, toy_atlas, reference)

    flat_labels = labels.ravel(order="F")
    for node, value in enumerate(toy_atlas.label_values):
        in_parcel = flat_labels == value
        expected = (mask.ravel(order="F")[in_parcel] != 0).mean()
        assert result.coverage[node] == pytest.approx(expected)


def test_resampled_grid_matches_nilearn(tmp_path, toy_atlas):
    """A 3 mm BOLD grid shifted by half a voxel: the atlas is resampled, as nilearn does."""
    affine = np.array([[-3.0, 0, 0, 21.5], [0, 3.0, 0, -27.5], [0, 0, 3.0, -19.5], [0, 0, 0, 1]])
    bold = _write(tmp_path / BOLD_NAME, _signal((14, 16, 14, 12), seed=2), affine)
    result = parcellate(bold, toy_atlas, min_coverage=0.0)
    _assert_matches(result, toy_atlas, _masker_signals(bold, toy_atlas))


def test_cropped_field_of_view(tmp_path, toy_atlas):
    """Parcels outside the grid become NaN columns; parcels cut by its edge get partial coverage."""
    crop = (slice(0, 20), slice(0, 10), slice(0, 20))  # keeps y < 10 only
    affine = AFFINE.copy()
    bold = _write(tmp_path / BOLD_NAME, _signal((20, 10, 20, N_VOLUMES), seed=3), affine)
    with pytest.warns(CoverageWarning):
        result = parcellate(bold, toy_atlas)

    assert result.timeseries.shape == (N_VOLUMES, toy_atlas.n_nodes)
    labels = np.asarray(toy_atlas.img.dataobj)
    inside = labels[crop]
    reference = _masker_signals(bold, toy_atlas)
    for node, value in enumerate(toy_atlas.label_values):
        share = (inside == value).sum() / (labels == value).sum()
        assert result.coverage[node] == pytest.approx(share)
        column = result.timeseries[:, node]
        if share < 0.5:
            assert np.isnan(column).all()
        else:
            np.testing.assert_allclose(column, reference[value], rtol=2e-7)
    assert (result.coverage == 0).any() and ((result.coverage > 0) & (result.coverage < 1)).any()
    assert any("coverage below 0.5" in w for w in result.warnings)


def test_zero_signal_voxels_lower_coverage(tmp_path, toy_atlas):
    """Voxels that are zero throughout (outside the acquired slab) are not covered."""
    data = _signal((*SHAPE, N_VOLUMES), seed=4)
    data[:, :, 10:] = 0
    data[9, 11, 12, 5] = 1.0  # one non-zero value in one volume is enough to count as signal
    bold = _write(tmp_path / BOLD_NAME, data)
    with pytest.warns(CoverageWarning):
        result = parcellate(bold, toy_atlas)
    labels = np.asarray(toy_atlas.img.dataobj)
    has_signal = np.zeros(SHAPE, dtype=bool)
    has_signal[:, :, :10] = True
    has_signal[9, 11, 12] = True
    for node, value in enumerate(toy_atlas.label_values):
        expected = has_signal[labels == value].mean()
        assert result.coverage[node] == pytest.approx(expected)
        assert np.isnan(result.timeseries[:, node]).all() == (expected < 0.5)


def test_real_atlas_on_coarse_grid(tmp_path):
    if not (NILEARN_DATA / "schaefer_2018").is_dir():
        pytest.skip("Schaefer files not available offline")
    atlas = load_atlas(data_dir=str(NILEARN_DATA))
    affine = np.array([[-4.0, 0, 0, 70.0], [0, 4.0, 0, -90.0], [0, 0, 4.0, -30.0], [0, 0, 0, 1]])
    bold = _write(tmp_path / BOLD_NAME, _signal((36, 30, 14, 8), seed=5), affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoverageWarning)
        result = parcellate(bold, atlas, min_coverage=0.0)
    assert result.timeseries.shape == (8, 100)
    reference = _masker_signals(bold, atlas)
    _assert_matches(result, atlas, reference)
    # the grid stops at z = 22 mm: dorsal parcels lie partly or wholly above it
    assert (result.coverage < 1).any() and (result.coverage == 1).any()


@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "endian", "suffix"),
    [
        (np.int16, 0.5, 10.0, "<", ".nii.gz"),
        (np.int16, 2.0, 0.0, ">", ".nii.gz"),
        (np.uint8, 1.0, 0.0, "<", ".nii"),
        (np.float64, 1.0, 0.0, ">", ".nii"),
        (np.float32, 1.0, 0.0, "<", ".nii"),
    ],
)
def test_data_types_and_scaling(tmp_path, toy_atlas, dtype, slope, inter, endian, suffix):
    rng = np.random.default_rng(6)
    high = 200 if dtype == np.uint8 else 3000
    raw = rng.integers(1, high, size=(*SHAPE, 7)).astype(dtype)
    header = nib.Nifti1Header(endianness=endian)
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(raw, AFFINE, header)
    img.header.set_slope_inter(slope, inter)
    path = tmp_path / f"sub-01_bold{suffix}"
    nib.save(img, path)

    loaded = nib.load(path)
    assert loaded.header.endianness == endian
    assert loaded.dataobj.slope == slope and loaded.dataobj.inter == inter
    scaled = np.asarray(loaded.dataobj, dtype=np.float64)
    labels = np.asarray(toy_atlas.img.dataobj)

    result = parcellate(path, toy_atlas)
    for node, value in enumerate(toy_atlas.label_values):
        expected = scaled[labels == value].mean(axis=0)
        np.testing.assert_allclose(result.timeseries[:, node], expected, rtol=1e-6)
    _assert_matches(result, toy_atlas, _masker_signals(path, toy_atlas))


def test_scaled_zero_counts_as_no_signal(tmp_path, toy_atlas):
    """With scl_inter, the stored value that decodes to 0 is the absent signal, not stored 0."""
    raw = np.full((*SHAPE, 4), 100, dtype=np.int16)
    raw[:, :, 10:] = -20  # -20 * 0.5 + 10 == 0
    img = nib.Nifti1Image(raw, AFFINE)
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "sub-01_bold.nii.gz"
    nib.save(img, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoverageWarning)
        result = parcellate(path, toy_atlas, min_coverage=0.0)
    labels = np.asarray(toy_atlas.img.dataobj)
    for node, value in enumerate(toy_atlas.label_values):
        assert result.coverage[node] == pytest.approx(
            (labels[:, :, :10] == value).sum() / (labels == value).sum()
        )


def test_grid_cache_resamples_once_per_grid(tmp_path, toy_atlas, monkeypatch):
    calls = []
    original = parcellate_module._resample_labels

    def counting(img, shape, affine):
        calls.append(tuple(shape))
        return original(img, shape, affine)

    monkeypatch.setattr(parcellate_module, "_resample_labels", counting)
    affine = np.array([[-3.0, 0, 0, 21.5], [0, 3.0, 0, -27.5], [0, 0, 3.0, -19.5], [0, 0, 0, 1]])
    run1 = _write(tmp_path / "sub-01_run-1_bold.nii.gz", _signal((14, 16, 14, 3), 7), affine)
    run2 = _write(tmp_path / "sub-01_run-2_bold.nii.gz", _signal((14, 16, 14, 5), 8), affine)
    first = parcellate(run1, toy_atlas)
    resamples_after_first = len(calls)
    assert resamples_after_first >= 1
    parcellate(run2, toy_atlas)
    assert len(calls) == resamples_after_first
    info = atlas_grid_cache_info()
    assert (info.misses, info.hits) == (1, 1)

    # another grid is another entry; the same grid again is the same object
    other = _write(tmp_path / "sub-02_bold.nii.gz", _signal((*SHAPE, 3), 9))
    parcellate(other, toy_atlas)
    assert atlas_grid_cache_info().misses == 2
    assert atlas_on_grid(toy_atlas, (14, 16, 14), affine) is atlas_on_grid(
        toy_atlas, (14, 16, 14), affine.copy()
    )
    assert first.timeseries.shape[1] == toy_atlas.n_nodes


def test_truncated_gzip_names_the_file(tmp_path, toy_atlas):
    bold = _write(tmp_path / BOLD_NAME, _signal((*SHAPE, N_VOLUMES), 10))
    blob = bold.read_bytes()
    bold.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError) as info:
        parcellate(bold, toy_atlas)
    assert info.value.path == str(bold)
    assert str(bold) in str(info.value) and "truncated" in str(info.value)


def test_corrupt_gzip_is_input_error(tmp_path, toy_atlas):
    bold = _write(tmp_path / BOLD_NAME, _signal((*SHAPE, N_VOLUMES), 11))
    blob = bytearray(bold.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(64)
    bold.write_bytes(bytes(blob))
    with pytest.raises(InputError) as info:
        parcellate(bold, toy_atlas)
    assert info.value.path == str(bold)


def test_truncated_uncompressed_reports_volumes(tmp_path, toy_atlas):
    bold = _write(tmp_path / "sub-01_bold.nii", _signal((*SHAPE, 10), 12))
    blob = bold.read_bytes()
    bold.write_bytes(blob[: len(blob) - 4 * int(np.prod(SHAPE)) * 3 - 7])
    with pytest.raises(InputError, match=r"after 6 of 10 volumes"):
        parcellate(bold, toy_atlas)


def test_concatenated_gzip_members(tmp_path, toy_atlas):
    plain = _write(tmp_path / "sub-01_bold.nii", _signal((*SHAPE, 6), 13))
    blob = plain.read_bytes()
    bold = tmp_path / "sub-01_bold.nii.gz"
    cut = len(blob) // 3
    bold.write_bytes(gzip.compress(blob[:cut]) + gzip.compress(blob[cut:]) + bytes(16))
    ours = parcellate(bold, toy_atlas).timeseries
    np.testing.assert_array_equal(ours, parcellate(plain, toy_atlas).timeseries)


def test_space_mismatch_warns(tmp_path, toy_atlas):
    name = "sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
    bold = _write(tmp_path / name, _signal((*SHAPE, 4), 14))
    with pytest.warns(SpaceMismatchWarning, match="MNI152NLin2009cAsym"):
        result = parcellate(bold, toy_atlas)
    assert len(result.warnings) == 1 and "MNI152NLin6Asym" in result.warnings[0]

    same = _write(tmp_path / BOLD_NAME, _signal((*SHAPE, 4), 14))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parcellate(same, toy_atlas).warnings == []


@pytest.mark.parametrize("problem", ["3d", "nan", "mask_grid", "mask_empty", "header"])
def test_unusable_inputs(tmp_path, toy_atlas, problem):
    data = _signal((*SHAPE, 4), 15)
    mask = None
    if problem == "3d":
        bold = _write(tmp_path / BOLD_NAME, data[..., 0])
    elif problem == "nan":
        labels = np.asarray(toy_atlas.img.dataobj)
        i, j, k = np.argwhere(labels == toy_atlas.label_values[2])[0]
        data[i, j, k, 2] = np.nan
        bold = _write(tmp_path / BOLD_NAME, data)
    elif problem == "header":
        bold = tmp_path / BOLD_NAME
        bold.write_bytes(gzip.compress(b"not a nifti header"))
    else:
        bold = _write(tmp_path / BOLD_NAME, data)
        mask = tmp_path / "mask.nii.gz"
        if problem == "mask_grid":
            nib.save(nib.Nifti1Image(np.ones((10, 12, 10), np.uint8), AFFINE), mask)
        else:
            nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), mask)
    with pytest.raises(InputError) as info:
        parcellate(bold, toy_atlas, mask_path=mask)
    assert info.value.path == str(mask if problem.startswith("mask") else bold)


def test_nan_outside_parcels_is_ignored(tmp_path, toy_atlas):
    data = _signal((*SHAPE, 4), 16)
    data[0, 0, 0, :] = np.nan  # a corner voxel: background
    bold = _write(tmp_path / BOLD_NAME, data)
    assert np.isfinite(parcellate(bold, toy_atlas).timeseries).all()


def test_tr_in_milliseconds(tmp_path, toy_atlas):
    img = nib.Nifti1Image(_signal((*SHAPE, 3), 17), AFFINE)
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 800.0
    path = tmp_path / "sub-01_bold.nii.gz"
    nib.save(img, path)
    assert parcellate(path, toy_atlas).tr == pytest.approx(0.8)


def test_reader_thread_stops_when_consumer_stops(tmp_path):
    import threading

    bold = _write(tmp_path / "sub-01_bold.nii.gz", _signal((*SHAPE, 12), 18))
    volume_bytes = 4 * int(np.prod(SHAPE))
    chunks = parcellate_module._iter_volume_chunks(bold, 352, volume_bytes, 12, 2)
    first, n, buffer = next(chunks)
    assert (first, n) == (0, 2) and len(buffer) == 2 * volume_bytes
    chunks.close()
    assert not any(t.name == "brainfuse-parcellate-read" for t in threading.enumerate())


def test_benchmark_smoke(capsys):
    if not (NILEARN_DATA / "schaefer_2018").is_dir():
        pytest.skip("Schaefer files not available offline")
    from brainfuse.benchmarks import parcellation as bench_parcellation

    argv = ["--volumes", "3", "--repeats", "1", "--atlas-data-dir", str(NILEARN_DATA)]
    assert bench_parcellation.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    fields = dict(item.split("=") for item in last.split())
    assert list(fields) == ["read_ratio", "nilearn_speedup", "max_abs_diff", "peak_mem_ratio"]
    assert float(fields["max_abs_diff"]) < 1e-3


def test_header_extension_moves_the_data(tmp_path, toy_atlas):
    data = _signal((*SHAPE, 5), 19)
    plain = _write(tmp_path / "sub-01_run-1_bold.nii.gz", data)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 1000))
    extended = tmp_path / "sub-01_run-2_bold.nii.gz"
    nib.save(img, extended)
    assert nib.load(extended).dataobj.offset > nib.load(plain).dataobj.offset
    np.testing.assert_array_equal(
        parcellate(extended, toy_atlas).timeseries, parcellate(plain, toy_atlas).timeseries
    )
