"""Benchmark of the EEG branch against MNE reading + band-pass filtering the same file.

Writes one synthetic 64-channel (10-10 names), 5-minute, 500 Hz EDF to a temporary directory,
times :func:`brainfuse.modalities.eeg.process.process_eeg` at source level on it and
``mne.io.read_raw`` +
``raw.filter(l_freq, h_freq)`` with the same band edges, and prints the ratio as the last line,
``mne_ratio=<ours/(read+filter)>``. Both are timed as the best of ``--repeats`` runs in this
process (the machine may be shared), i.e. per recording once the montage's forward model and
inverse kernel exist; the first ``process_eeg`` call, which also builds them, is reported
separately as the cold time, and with ``--cache-dir`` so is a run that finds them only on disk
(a new Snakemake job after the first).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import mne
import nibabel as nib
import numpy as np

from brainfuse.core.atlas import Atlas, load_atlas
from brainfuse.modalities.eeg import source as eeg_source
from brainfuse.modalities.eeg.params import default_eeg_params
from brainfuse.modalities.eeg.process import process_eeg

# 64 channels of the 10-10 system (BioSemi-64 layout), all in MNE's standard_1005 montage.
CHANNELS_64 = (
    "Fp1 AF7 AF3 F1 F3 F5 F7 FT7 FC5 FC3 FC1 C1 C3 C5 T7 TP7 CP5 CP3 CP1 P1 P3 P5 P7 P9 PO7 PO3 "
    "O1 Iz Oz POz Pz CPz Fpz Fp2 AF8 AF4 AFz Fz F2 F4 F6 F8 FT8 FC6 FC4 FC2 FCz Cz C2 C4 C6 T8 TP8 "
    "CP6 CP4 CP2 P2 P4 P6 P8 P10 PO8 PO4 O2"
).split()


def make_recording(
    path: str | Path,
    n_channels: int = 64,
    duration_s: float = 300.0,
    sfreq: float = 500.0,
    seed: int = 0,
) -> Path:
    """Write a synthetic resting-state-like EEG recording as EDF.

    Channels carry independent 1/f noise plus a shared 10 Hz rhythm, slowly amplitude-modulated,
    strongest over occipital sites; amplitudes are tens of microvolts.
    """
    rng = np.random.default_rng(seed)
    names = list(CHANNELS_64[:n_channels])
    n = int(round(duration_s * sfreq))
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spectrum = rng.standard_normal((n_channels, len(freqs))) + 1j * rng.standard_normal(
        (n_channels, len(freqs))
    )
    spectrum /= np.sqrt(np.maximum(freqs, 0.5))
    noise = np.fft.irfft(spectrum, n=n, axis=1)
    noise /= noise.std(axis=1, keepdims=True)
    t = np.arange(n) / sfreq
    modulation = 1 + 0.5 * np.sin(2 * np.pi * 0.05 * t + rng.uniform(0, 2 * np.pi))
    alpha = np.sin(2 * np.pi * 10 * t) * modulation
    occipital = np.array([1.5 if name.startswith(("O", "PO", "Iz")) else 0.3 for name in names])
    data = (10 * noise + 20 * occipital[:, None] * alpha) * 1e-6
    raw = mne.io.RawArray(data, mne.create_info(names, sfreq, "eeg"), verbose=False)
    path = Path(path)
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose=False)
    return path


def synthetic_atlas(n_parcels: int = 100) -> Atlas:
    """A Schaefer-sized stand-in atlas on the MNI152 2 mm grid, for use without atlas files.

    A cortex-like ellipsoidal shell split into ``n_parcels`` angular parcels (half per
    hemisphere); networks are ``"NA"``.
    """
    affine = np.array(
        [[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]], dtype=float
    )
    shape = (91, 109, 91)
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk)
    centre = np.array([0.0, -18.0, 15.0])
    axes = np.array([68.0, 88.0, 68.0])
    rel = (xyz - centre) / axes
    radius = np.linalg.norm(rel, axis=1)
    shell = (radius > 0.8) & (radius < 1.0) & (xyz[:, 2] > -40)
    per_hemi = n_parcels // 2
    golden = np.pi * (3 - np.sqrt(5))
    k = np.arange(per_hemi)
    z = 1 - 2 * (k + 0.5) / per_hemi
    seeds = np.column_stack(
        [np.abs(np.sqrt(1 - z**2) * np.cos(golden * k)), np.sqrt(1 - z**2) * np.sin(golden * k), z]
    )
    labels = np.zeros(len(xyz), np.int32)
    direction = rel[shell] / radius[shell, None]
    hemi = direction[:, 0] < 0  # left hemisphere: parcels 1..per_hemi
    mirrored = direction.copy()
    mirrored[hemi, 0] *= -1  # seeds cover the right hemisphere; mirror the left onto them
    nearest = np.argmax(mirrored @ seeds.T, axis=1)
    labels[shell] = np.where(hemi, nearest + 1, nearest + 1 + per_hemi)
    data = labels.reshape(shape)
    present = np.unique(data[data > 0])
    values = tuple(int(v) for v in present)
    names = tuple(
        f"Synthetic_{'LH' if v <= per_hemi else 'RH'}_{(v - 1) % per_hemi + 1}" for v in values
    )
    return Atlas(
        name=f"Synthetic{len(values)}",
        img=nib.Nifti1Image(data, affine),
        label_values=values,
        labels=names,
        networks=tuple("NA" for _ in values),
        space="MNI152NLin6Asym",
    )


def _best_of(repeats: int, func) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last printed line is ``mne_ratio=<value>``."""
    parser = argparse.ArgumentParser(prog="brainfuse bench eeg", description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--sfreq", type=float, default=500.0, help="Hz (default 500)")
    parser.add_argument("--channels", type=int, default=64, help="at most 64 (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument(
        "--atlas-data-dir",
        default=None,
        help="nilearn data directory holding Schaefer 2018 (default: nilearn's own lookup); "
        "a synthetic 100-parcel atlas is used when it cannot be loaded",
    )
    parser.add_argument("--level", choices=("source", "sensor"), default="source")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="on-disk forward/kernel cache (eeg.cache_dir); also times a run that, like a new "
        "Snakemake job, starts with empty memory caches but a filled disk cache",
    )
    args = parser.parse_args(argv)
    mne.set_log_level("ERROR")
    params = dict(default_eeg_params(), level=args.level)
    # Shorter test runs keep working: one window must fit in the recording.
    fits = int(args.duration * params["envelope_sfreq"])
    params["window_length"] = max(2, min(params["window_length"], fits))
    params["cache_dir"] = args.cache_dir

    atlas = None
    if args.level == "source":
        try:
            atlas = load_atlas("Schaefer100", data_dir=args.atlas_data_dir)
        except Exception as exc:  # no atlas files and no network: the timing does not depend on it
            print(f"atlas: Schaefer100 unavailable ({type(exc).__name__}); using a synthetic atlas")
            atlas = synthetic_atlas(100)

    with tempfile.TemporaryDirectory(prefix="brainfuse-bench-eeg-") as tmp:
        path = make_recording(
            Path(tmp) / "sub-bench_task-rest_eeg.edf",
            n_channels=min(args.channels, 64),
            duration_s=args.duration,
            sfreq=args.sfreq,
        )

        def reference() -> None:
            raw = mne.io.read_raw(path, preload=True, verbose=False)
            raw.filter(params["l_freq"], params["h_freq"], verbose=False)

        def ours():
            return process_eeg(path, atlas, params)

        reference()  # import and first-call overheads are not what we compare
        eeg_source.clear_caches()
        start = time.perf_counter()
        result = ours()
        cold = time.perf_counter() - start
        disk = None
        if args.cache_dir:
            eeg_source.clear_caches()
            start = time.perf_counter()
            ours()
            disk = time.perf_counter() - start
        ref = _best_of(args.repeats, reference)
        warm = _best_of(args.repeats, ours)

    shape = "x".join(str(s) for s in result.envelopes.shape)
    print(
        f"recording: {min(args.channels, 64)} ch, {args.duration:g} s, {args.sfreq:g} Hz EDF; "
        f"atlas {atlas.name if atlas else '-'}; level {args.level}; inverse {params['inverse']}"
    )
    print(f"envelopes: {shape} at {result.envelope_sfreq:g} Hz")
    print(f"orthogonalisation: {result.qc.get('orthogonalisation')}")
    print(f"stages (last run): {result.qc.get('timing_s')}")
    print(f"mne read+filter: {ref:.3f} s (best of {args.repeats})")
    print(f"process_eeg cold (builds forward + inverse): {cold:.3f} s, ratio {cold / ref:.2f}")
    if disk is not None:
        print(f"process_eeg with disk cache only: {disk:.3f} s, ratio {disk / ref:.2f}")
    print(f"process_eeg warm: {warm:.3f} s (best of {args.repeats})")
    print(f"mne_ratio={warm / ref:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
