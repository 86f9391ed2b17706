"""Tests of the EEG branch: reading, channel handling, envelopes, leakage correction, sources."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest

from brainfuse.benchmarks.eeg import synthetic_atlas
from brainfuse.core.errors import InputError
from brainfuse.modalities.eeg import source as eeg_source
from brainfuse.modalities.eeg.channels import infer_channel_type, normalise_channel_name
from brainfuse.modalities.eeg.params import default_eeg_params, resolve_params
from brainfuse.modalities.eeg.process import process_eeg
from brainfuse.modalities.eeg.recording import load_recording
from brainfuse.modalities.eeg.segment import segment
from brainfuse.modalities.eeg.spectral import _local_power, band_envelopes

SHARED = Path(__file__).parents[1].parent / "shared/data"
EEG_DATA = SHARED / "eeg"
NILEARN_DATA = SHARED / "nilearn_data"

CHANNELS_32 = (
    "Fp1 Fp2 AF3 AF4 F7 F3 Fz F4 F8 FC5 FC1 FC2 FC6 T7 C3 Cz C4 T8 CP5 CP1 CP2 CP6 P7 P3 Pz P4 "
    "P8 PO3 PO4 O1 Oz O2"
).split()
SFREQ = 100.0
FAST = {"envelope_sfreq": 2.0, "window_length": 10, "notch": []}


@pytest.fixture(scope="module")
def atlas():
    """Schaefer-100 from the shared data when present, else a synthetic 100-parcel atlas."""
    if (NILEARN_DATA / "schaefer_2018").exists():
        from brainfuse.core.atlas import load_atlas

        return load_atlas("Schaefer100", data_dir=str(NILEARN_DATA))
    return synthetic_atlas(100)


def _noise(rng: np.random.Generator, n_channels: int, n: int) -> np.ndarray:
    """Independent 1/f-like noise, unit variance per channel."""
    x = np.cumsum(rng.standard_normal((n_channels, n)), axis=1)
    x -= np.linspace(x[:, :1], x[:, -1:], n, axis=1)[..., 0]
    x = np.diff(x, axis=1, prepend=0) + 0.1 * x / np.sqrt(n)
    return x / x.std(axis=1, keepdims=True)


def _write_edf(path: Path, data: np.ndarray, names: list[str], sfreq: float = SFREQ) -> Path:
    raw = mne.io.RawArray(data, mne.create_info(names, sfreq, "eeg"), verbose=False)
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose=False)
    return path


def _recording(tmp_path: Path, names=None, seconds: float = 20.0, seed: int = 0) -> Path:
    names = list(names or CHANNELS_32)
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    t = np.arange(n) / SFREQ
    data = 10 * _noise(rng, len(names), n) + 5 * np.sin(2 * np.pi * 10 * t)
    return _write_edf(tmp_path / "sub-01_task-rest_eeg.edf", data * 1e-6, names)


def _alpha(rng: np.random.Generator, n: int, freq: float = 10.0) -> np.ndarray:
    """Narrow-band (freq +- 1 Hz) Gaussian signal."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SFREQ)
    spec[np.abs(f - freq) > 1.0] = 0
    x = np.fft.irfft(spec, n)
    return x / x.std()


def _modulation(rng: np.random.Generator, n: int) -> np.ndarray:
    """Slow positive amplitude modulation: log-normal, band-limited to 0.02-0.5 Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SFREQ)
    spec[(f < 0.02) | (f > 0.5)] = 0
    x = np.fft.irfft(spec, n)
    return np.exp(0.5 * x / x.std())


# --------------------------------------------------------------------------------------------
# Channel names and types


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("EEG Fp1-REF", "Fp1"),
        ("Fp1.", "Fp1"),
        ("FP1", "Fp1"),
        ("fp1", "Fp1"),
        ("Fcz.", "FCz"),
        ("Cz..", "Cz"),
        ("EEG O1-LE", "O1"),
        ("eeg_Pz", "Pz"),
        ("Fp1-F7", None),  # bipolar derivation: no single position
        ("A1-A2", None),  # reference pair
        ("X1", None),
    ],
)
def test_normalise_channel_name(name, expected):
    montage = ["Fp1", "FCz", "Cz", "O1", "Pz", "F7", "A1", "A2"]
    assert normalise_channel_name(name, montage) == expected


def test_old_1020_names_fall_back_to_1010():
    assert normalise_channel_name("EEG T3-REF", ["T7", "T8"]) == "T7"
    assert normalise_channel_name("T3", ["T3", "T7"]) == "T3"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ECG", "ecg"),
        ("EKG1", "ecg"),
        ("EOG left", "eog"),
        ("HEOG", "eog"),
        ("LOC", "eog"),
        ("EMG chin", "emg"),
        ("Status", "stim"),
        ("TRIGGER", "stim"),
        ("Resp", "misc"),
        ("SpO2", "misc"),
        ("A1-A2", "misc"),
        ("Fp1-F7", "misc"),
        ("Fp1", None),
        ("EEG Fp1-REF", None),
        ("POz", None),
        ("TP7", None),
    ],
)
def test_infer_channel_type(name, expected):
    assert infer_channel_type(name) == expected


def test_non_eeg_channels_are_typed_and_never_used(tmp_path):
    eeg = ["Fp1.", "FP2", "EEG F3-REF", "Fz", "F4", "C3", "Cz", "C4", "P3", "Pz", "P4", "O1"]
    other = ["ECG", "EOG left", "HEOG", "EMG chin", "A1-A2", "Fp1-F7"]
    names = eeg + other
    data = 1e-5 * _noise(np.random.default_rng(1), len(names), int(8 * SFREQ))
    path = _write_edf(tmp_path / "x_eeg.edf", data, names)
    rec = load_recording(path, FAST)
    assert rec.eeg_names == [
        "Fp1",
        "Fp2",
        "F3",
        "Fz",
        "F4",
        "C3",
        "Cz",
        "C4",
        "P3",
        "Pz",
        "P4",
        "O1",
    ]
    assert rec.qc["dropped"]["ecg"] == ["ECG"]
    assert sorted(rec.qc["dropped"]["eog"]) == ["EOG left", "HEOG"]
    assert rec.qc["dropped"]["emg"] == ["EMG chin"]
    assert sorted(rec.qc["dropped"]["misc"]) == ["A1-A2", "Fp1-F7"]
    assert rec.qc["match_rate"] == 1.0 and rec.qc["n_eeg"] == len(eeg)
    assert set(rec.raw.copy().pick("eeg").ch_names) == set(rec.eeg_names)


def test_channels_tsv_types_and_bads(tmp_path):
    names = CHANNELS_32[:16] + ["X9"]
    data = 1e-5 * _noise(np.random.default_rng(2), len(names), int(8 * SFREQ))
    path = _write_edf(tmp_path / "sub-01_eeg.edf", data, names)
    rows = ["name\ttype\tunits\tstatus"]
    rows += [f"{n}\tEEG\tV\t{'bad' if n == 'Cz' else 'good'}" for n in CHANNELS_32[:16]]
    rows += ["X9\tMISC\tV\tgood"]
    tsv = tmp_path / "sub-01_channels.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    rec = load_recording(path, FAST, channels_tsv=tsv)
    assert rec.bads == ["Cz"]
    assert "Cz" not in rec.good_names and len(rec.good_names) == 15
    assert rec.qc["dropped"] == {"misc": ["X9"]}  # an unknown name is fine when typed MISC


def test_flat_channel_becomes_bad(tmp_path):
    data = 1e-5 * _noise(np.random.default_rng(3), 12, int(8 * SFREQ))
    data[4] = 0.0
    path = _write_edf(tmp_path / "x_eeg.edf", data, CHANNELS_32[:12])
    rec = load_recording(path, FAST)
    assert rec.bads == [CHANNELS_32[4]] and rec.qc["flat_channels"] == [CHANNELS_32[4]]


def test_electrodes_tsv_positions_in_eeglab_coordinates(tmp_path):
    names = CHANNELS_32
    path = _recording(tmp_path, names, seconds=8)
    montage = mne.channels.make_standard_montage(
        "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    )
    head = eeg_source.template_head()
    ref = {
        n: p
        for n, p in zip(montage.ch_names, montage.get_positions()["ch_pos"].values(), strict=True)
    }
    rows = ["name\tx\ty\tz"]
    for n in names:
        x, y, z = ref[n] * 1000  # mm, RAS -> EEGLAB's ALS (x anterior, y left)
        rows.append(f"{n}\t{y:.3f}\t{-x:.3f}\t{z:.3f}")
    (tmp_path / "sub-01_electrodes.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "sub-01_coordsystem.json").write_text(
        json.dumps({"EEGCoordinateSystem": "EEGLAB", "EEGCoordinateUnits": "mm"})
    )
    with_tsv = load_recording(path, FAST, electrodes_tsv=tmp_path / "sub-01_electrodes.tsv")
    standard = load_recording(path, FAST)
    assert with_tsv.qc["positions"] == "electrodes.tsv (EEGLAB)"
    for n in names:
        a = with_tsv.positions[n] - head.centre
        b = standard.positions[n] - head.centre
        angle = np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        assert angle < 12, (n, angle)  # same electrode, up to the two sphere fits


def test_unknown_channel_names_raise_with_match_rate(tmp_path):
    names = [f"Chan{i}" for i in range(14)] + ["Cz", "Pz"]
    data = 1e-5 * _noise(np.random.default_rng(4), len(names), int(8 * SFREQ))
    path = _write_edf(tmp_path / "x_eeg.edf", data, names)
    with pytest.raises(InputError) as info:
        load_recording(path, FAST)
    assert "2 of 16" in info.value.reason and "12%" in info.value.reason
    assert info.value.path == str(path)


# --------------------------------------------------------------------------------------------
# Reading


def test_truncated_file_raises(tmp_path):
    path = _recording(tmp_path, seconds=8)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(InputError, match="truncated") as info:
        process_eeg(path, None, dict(FAST, level="sensor"))
    assert info.value.path == str(path)


def test_garbage_and_missing_files_raise(tmp_path):
    bad = tmp_path / "bad_eeg.edf"
    bad.write_bytes(b"not an EDF file at all")
    with pytest.raises(InputError):
        process_eeg(bad, None, dict(FAST, level="sensor"))
    with pytest.raises(InputError, match="does not exist"):
        process_eeg(tmp_path / "missing_eeg.edf", None, dict(FAST, level="sensor"))


def test_shorter_than_one_window_raises(tmp_path):
    path = _recording(tmp_path, seconds=8)
    with pytest.raises(InputError, match="one window of 200"):
        process_eeg(path, None, dict(FAST, level="sensor", window_length=200))


def test_brainvision_and_bdf_are_read(tmp_path):
    names = ["FP1", "fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Cz", "Pz"]
    data = 10 * _noise(np.random.default_rng(5), len(names), int(12 * SFREQ))
    stem = tmp_path / "sub-01_task-rest_eeg"
    stem.with_suffix(".eeg").write_bytes(data.T.astype("<f4").tobytes())
    channels = "\n".join(f"Ch{i + 1}={n},,1,µV" for i, n in enumerate(names))
    stem.with_suffix(".vhdr").write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={stem.name}.eeg\nMarkerFile={stem.name}.vmrk\nDataFormat=BINARY\n"
        f"DataOrientation=MULTIPLEXED\nNumberOfChannels={len(names)}\n"
        f"SamplingInterval={int(1e6 / SFREQ)}\n[Binary Infos]\nBinaryFormat=IEEE_FLOAT_32\n"
        f"[Channel Infos]\n{channels}\n",
        encoding="utf-8",
    )
    stem.with_suffix(".vmrk").write_text(
        "Brain Vision Data Exchange Marker File, Version 1.0\n[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={stem.name}.eeg\n[Marker Infos]\nMk1=New Segment,,1,1,0\n",
        encoding="utf-8",
    )
    result = process_eeg(stem.with_suffix(".vhdr"), None, dict(FAST, level="sensor"))
    assert result.node_names[:2] == ["Fp1", "Fp2"] and result.envelopes.shape[1] == 12

    raw = mne.io.RawArray(data * 1e-6, mne.create_info(names, SFREQ, "eeg"), verbose=False)
    bdf = tmp_path / "sub-01_task-rest_eeg.bdf"
    mne.export.export_raw(bdf, raw, fmt="bdf", verbose=False)
    result = process_eeg(bdf, None, dict(FAST, level="sensor"))
    assert result.envelopes.shape == (5, 12, 24)


# --------------------------------------------------------------------------------------------
# Envelopes and segments


def test_envelope_of_a_sinusoid_is_its_amplitude():
    t = np.arange(int(30 * SFREQ)) / SFREQ
    amplitude = np.where(t < 15, 2.0, 4.0)
    x = (amplitude * np.sin(2 * np.pi * 10 * t))[None]
    env, aec, power, _ = band_envelopes(x, SFREQ, dict(FAST, orthogonalise=False))
    alpha = env[2, 0]
    assert alpha.shape == (60,)
    assert np.allclose(alpha[4:26], 2.0, rtol=0.02) and np.allclose(alpha[34:56], 4.0, rtol=0.02)
    # Envelope sample i is centred on t = i / envelope_sfreq: the step is at sample 30.
    assert alpha[29] < 3.0 < alpha[31]
    assert power[2, 0] == pytest.approx(np.log10(np.mean((amplitude**2) / 2)), abs=0.01)
    # No alpha in delta, away from the transients of the recording's ends and of the step.
    assert max(env[0, 0, 2:26].max(), env[0, 0, 34:-2].max()) < 0.01 * alpha.max()


def test_segment_windows():
    env = np.arange(2 * 3 * 25, dtype=np.float32).reshape(2, 3, 25)
    windows = segment(env, length=10)
    assert windows.shape == (2, 2, 3, 10)
    np.testing.assert_array_equal(windows[1], env[:, :, 10:20])
    with pytest.raises(InputError, match="shorter than one window"):
        segment(env, length=26)


def test_local_power_matches_explicit_hann_windows():
    rng = np.random.default_rng(6)
    k, n_env = 7, 9
    y = rng.standard_normal((3, (n_env + 1) * k)) + 1j * rng.standard_normal((3, (n_env + 1) * k))
    w = np.sin(np.pi * np.arange(2 * k) / (2 * k)) ** 2
    explicit = np.array(
        [[np.sum(w * np.abs(y[i, e * k : e * k + 2 * k]) ** 2) / k for e in range(n_env)]
         for i in range(3)]
    )  # fmt: skip
    np.testing.assert_allclose(_local_power(y.astype(np.complex64), k), explicit, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Leakage correction


def test_symmetric_orthogonalisation_removes_zero_lag_correlation():
    rng = np.random.default_rng(7)
    sources = rng.standard_normal((3, 5000))
    sources -= sources.mean(axis=1, keepdims=True)  # band-limited signals have zero mean
    mixing = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.2], [0.3, 0.2, 1.0]])
    mixed = mixing @ sources
    assert abs(np.corrcoef(mixed)[0, 1]) > 0.5
    orth = eeg_source.symmetric_orthogonalise(mixed)
    off = np.corrcoef(orth)[~np.eye(3, dtype=bool)]
    assert np.max(np.abs(off)) < 1e-8
    # Closest orthogonal set: each output stays its own source's best estimate.
    assert all(np.corrcoef(orth[i], sources[i])[0, 1] > 0.95 for i in range(3))
    with pytest.raises(ValueError, match="rank"):
        eeg_source.symmetric_orthogonalise(np.vstack([mixed, mixed[:1] + mixed[1:2]]))


def test_orthogonalisation_removes_leakage_between_two_parcels():
    """Two independent sources, leaked into each other's parcel at zero lag."""
    rng = np.random.default_rng(0)
    n = int(120 * SFREQ)
    s = np.array([_alpha(rng, n) * _modulation(rng, n) for _ in range(2)])
    s /= s.std(axis=1, keepdims=True)
    parcels = np.array([[1.0, 0.6], [0.6, 1.0]]) @ s
    params = dict(FAST, orthogonalise=False)
    truth = band_envelopes(s, SFREQ, params)[1][2, 0, 1]
    leaky = band_envelopes(parcels, SFREQ, params)[1][2, 0, 1]
    env, corrected, _, qc = band_envelopes(parcels, SFREQ, dict(params, orthogonalise=True))
    assert qc["orthogonalisation"] == "symmetric"
    assert leaky > truth + 0.4
    assert corrected[2, 0, 1] == pytest.approx(truth, abs=0.05)


def test_pairwise_orthogonalisation_reduces_single_source_leakage():
    """One source leaking into two parcels that otherwise carry independent activity."""
    rng = np.random.default_rng(1)
    n = int(120 * SFREQ)
    source, a, b = (_alpha(rng, n) * _modulation(rng, n) for _ in range(3))
    parcels = np.array([source + a, 0.7 * source + b])
    params = dict(FAST, orthogonalise=False)
    truth = band_envelopes(np.array([a, b]), SFREQ, params)[1][2, 0, 1]
    leaky = band_envelopes(parcels, SFREQ, params)[1][2, 0, 1]
    _, corrected, _, qc = band_envelopes(parcels, SFREQ, dict(params, orthogonalise="pairwise"))
    assert qc["orthogonalisation"].startswith("pairwise")
    assert leaky - truth > 0.2
    assert abs(corrected[2, 0, 1] - truth) < 0.5 * (leaky - truth)


def test_pairwise_aec_matches_explicit_windowed_regression():
    rng = np.random.default_rng(8)
    k, n_env, n = 6, 40, 4
    y = rng.standard_normal((n, (n_env + 1) * k)) + 1j * rng.standard_normal((n, (n_env + 1) * k))
    y[1] += 0.8 * y[0]
    w = np.sin(np.pi * np.arange(2 * k) / (2 * k)) ** 2
    amp = np.zeros((n, n_env))
    resid = np.zeros((n, n, n_env))
    for e in range(n_env):
        seg = y[:, e * k : e * k + 2 * k]
        amp[:, e] = np.sqrt(np.sum(w * np.abs(seg) ** 2, axis=1) / k)
        for i in range(n):
            for j in range(n):
                beta = np.sum(w * np.real(seg[j] * np.conj(seg[i]))) / np.sum(
                    w * np.abs(seg[i]) ** 2
                )
                resid[i, j, e] = np.sqrt(np.sum(w * np.abs(seg[j] - beta * seg[i]) ** 2) / k)
    corr = np.array([[np.corrcoef(amp[i], resid[i, j])[0, 1] if i != j else 1.0
                      for j in range(n)] for i in range(n)])  # fmt: skip
    expected = (corr + corr.T) / 2
    got = eeg_source.pairwise_orthogonalised_aec(y.astype(np.complex64), k, n_env, chunk=16)
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_aec_recovers_planted_envelope_coupling_at_sensor_level(tmp_path):
    """Two channels share a slow alpha amplitude modulation; all others are independent."""
    names = CHANNELS_32[:24]
    rng = np.random.default_rng(9)
    n = int(90 * SFREQ)
    t = np.arange(n) / SFREQ
    shared = _modulation(rng, n)
    # Constant-amplitude carriers at distinct frequencies: the envelope is the modulation alone.
    carriers = [
        np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in np.linspace(9, 12, 24)
    ]
    modulations = [shared if i in (3, 17) else _modulation(rng, n) for i in range(len(names))]
    data = np.array([c * m for c, m in zip(carriers, modulations, strict=True)])
    data = data / data.std(axis=1, keepdims=True) + 0.3 * _noise(rng, len(names), n)
    path = _write_edf(tmp_path / "sub-01_eeg.edf", 1e-5 * data, names)
    result = process_eeg(path, None, dict(FAST, level="sensor"))
    assert result.qc["orthogonalisation"].startswith("pairwise")  # rank 23 < 24 channels
    alpha = result.aec[result.bands.index("alpha")]
    i, j = result.node_names.index(names[3]), result.node_names.index(names[17])
    others = np.abs(alpha[np.triu_indices(len(names), 1)])
    assert alpha[i, j] > 0.8
    assert np.sort(others)[-2] < 0.5 and np.median(others) < 0.15


# --------------------------------------------------------------------------------------------
# Source level


def test_source_level_output_shapes(tmp_path, atlas):
    path = _recording(tmp_path, seconds=20)
    result = process_eeg(path, atlas, FAST)
    n_bands, n_nodes, n_times = 5, atlas.n_nodes, 40
    assert result.level == "source" and result.bands == list(default_eeg_params()["bands"])
    assert result.node_names == list(atlas.labels)
    assert result.envelopes.shape == (n_bands, n_nodes, n_times)
    assert result.aec.shape == (n_bands, n_nodes, n_nodes)
    assert result.band_power.shape == (n_bands, n_nodes)
    for array in (result.envelopes, result.aec, result.band_power):
        assert array.dtype == np.float32 and np.all(np.isfinite(array))
    assert np.all(result.envelopes >= 0)
    np.testing.assert_allclose(result.aec, result.aec.transpose(0, 2, 1), atol=1e-6)
    np.testing.assert_allclose(np.diagonal(result.aec, axis1=1, axis2=2), 1.0)
    assert result.envelope_sfreq == 2.0
    qc = result.qc
    assert qc["n_channels"] == qc["n_eeg"] == qc["matched"] == 32 and qc["match_rate"] == 1.0
    assert qc["inverse"] == "eLORETA" and qc["forward"] == "template-sphere"
    assert qc["min_sources_per_node"] >= 1 and qc["n_used"] == 32
    json.dumps(qc)  # the pipeline stores it
    assert segment(result.envelopes, 10).shape == (4, n_bands, n_nodes, 10)


@pytest.mark.parametrize(("inverse", "mode"), [("dSPM", "pca"), ("LCMV", "mean_flip")])
def test_other_inverses_and_parcel_modes(tmp_path, atlas, inverse, mode):
    path = _recording(tmp_path, seconds=10)
    result = process_eeg(path, atlas, dict(FAST, inverse=inverse, parcel_mode=mode))
    assert result.envelopes.shape == (5, atlas.n_nodes, 20)
    assert np.all(np.isfinite(result.aec)) and result.qc["inverse"] == inverse


def test_sensor_level_interpolates_bad_channels(tmp_path):
    path = _recording(tmp_path, seconds=10)
    rows = ["name\ttype\tstatus"] + [
        f"{n}\tEEG\t{'bad' if n == 'C3' else 'good'}" for n in CHANNELS_32
    ]
    tsv = tmp_path / "sub-01_channels.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    result = process_eeg(path, None, dict(FAST, level="sensor"), channels_tsv=tsv)
    assert result.node_names == CHANNELS_32 and result.qc["interpolated"] == ["C3"]
    assert result.envelopes.shape == (5, 32, 20) and result.aec.shape == (5, 32, 32)


def test_disk_cache_and_user_supplied_forward(tmp_path, atlas):
    path = _recording(tmp_path, seconds=10)
    cache = tmp_path / "cache"
    first = process_eeg(path, atlas, dict(FAST, cache_dir=str(cache)))
    forward_file = Path(first.qc["forward_file"])
    assert forward_file.exists() and len(list(cache.glob("eeg-kernel-*.npy"))) == 1
    eeg_source.clear_caches()
    again = process_eeg(path, atlas, dict(FAST, cache_dir=str(cache)))
    np.testing.assert_allclose(again.envelopes, first.envelopes, rtol=1e-5)
    # The cached template holds MNI305 source positions, so it also works as `forward:`.
    user = process_eeg(path, atlas, dict(FAST, forward=str(forward_file)))
    assert user.qc["forward"] == str(forward_file)
    assert user.envelopes.shape == first.envelopes.shape
    assert np.all(np.isfinite(user.envelopes)) and np.all(user.envelopes > 0)


def test_synthetic_atlas_covers_every_parcel():
    fake = synthetic_atlas(100)
    assert fake.n_nodes == 100 and len(set(fake.labels)) == 100
    _, node = eeg_source.atlas_source_points(fake, 8.0)
    assert set(node.tolist()) == set(range(100))


def test_template_head_and_source_space(atlas):
    head = eeg_source.template_head()
    assert 0.085 < head.radius < 0.105
    mni, node = eeg_source.atlas_source_points(atlas, 8.0)
    assert set(node.tolist()) == set(range(atlas.n_nodes))
    assert np.all(np.abs(mni) < 120)


def test_invalid_parameters_are_config_errors():
    with pytest.raises(ValueError, match="inverse"):
        resolve_params({"inverse": "beamformer"})
    with pytest.raises(ValueError, match="bands"):
        resolve_params({"bands": {"alpha": [13, 8]}})


@pytest.mark.skipif(
    not (EEG_DATA / "S001R01.edf").exists() or not (EEG_DATA / "S001R02.edf").exists(),
    reason=f"PhysioNet EEG sample not found under {EEG_DATA}",
)
def test_eyes_closed_raise_visual_alpha(atlas):
    if not (NILEARN_DATA / "schaefer_2018").exists():
        pytest.skip(f"Schaefer atlas files not found under {NILEARN_DATA}")
    # 61 s at 160 Hz: 2 Hz envelopes give 122 samples, so a 100-sample window fits.
    params = {"envelope_sfreq": 2.0, "window_length": 100}
    eyes_open = process_eeg(EEG_DATA / "S001R01.edf", atlas, params)
    eyes_closed = process_eeg(EEG_DATA / "S001R02.edf", atlas, params)
    assert eyes_open.qc["match_rate"] == 1.0 and eyes_open.qc["matched"] == 64
    visual = np.array([net == "Vis" for net in atlas.networks])
    alpha = eyes_open.bands.index("alpha")
    open_alpha = eyes_open.envelopes[alpha][visual].mean()
    closed_alpha = eyes_closed.envelopes[alpha][visual].mean()
    assert closed_alpha > 1.3 * open_alpha
    assert segment(eyes_closed.envelopes, 100).shape == (1, 5, atlas.n_nodes, 100)
