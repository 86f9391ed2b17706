"""Cutting EEG envelopes into fixed-length windows for the models."""

from __future__ import annotations

import os

import numpy as np

from brainfuse.core.errors import InputError


def segment(
    envelopes: np.ndarray, length: int = 200, path: str | os.PathLike | None = None
) -> np.ndarray:
    """Cut envelopes into non-overlapping windows (a trailing remainder is dropped).

    Parameters
    ----------
    envelopes : ndarray, shape (n_bands, n_nodes, n_times)
    length : int
        Window length in envelope samples.
    path : path, optional
        Recording named in the error.

    Returns
    -------
    ndarray, shape (n_windows, n_bands, n_nodes, length)

    Raises
    ------
    InputError
        Fewer than ``length`` samples.
    """
    envelopes = np.asarray(envelopes)
    n_bands, n_nodes, n_times = envelopes.shape
    n_windows = n_times // length
    if n_windows < 1:
        raise InputError(
            path or "<envelopes>",
            f"{n_times} envelope samples are shorter than one window of {length}",
        )
    cut = envelopes[:, :, : n_windows * length].reshape(n_bands, n_nodes, n_windows, length)
    return np.ascontiguousarray(cut.transpose(2, 0, 1, 3))
