"""Conventions shared by the demo's generators: BIDS names, sites, groups and random streams."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from brainfuse.core.atlas import Atlas

BIDS_VERSION = "1.9.0"

SPACE = "MNI152NLin6Asym"

TASK = "rest"

GROUPS = ("control", "patient")

SITES = ("siteA", "siteB", "siteC")

# Relative site sizes: unequal, as in multi-site studies (24 subjects: 10, 8 and 6).
SITE_SHARES = (5, 4, 3)

# Independent random streams: (seed, stream, subject, run) keys a SeedSequence, so one subject's
# data do not depend on how many subjects are generated or in which order.
(
    S_PARTICIPANTS,
    S_FMRI_GROUP,
    S_FMRI_RUN,
    S_EEG_GROUP,
    S_EEG_SUB,
    S_SC_GROUP,
    S_SC_SUB,
    S_SITE,
) = range(1, 9)


@functools.lru_cache(maxsize=4)
def parcel_centroids(atlas: Atlas) -> np.ndarray:
    """Parcel centroids, computed once per atlas (several models need them)."""
    cent = atlas.centroids()
    cent.setflags(write=False)
    return cent


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread inside the block (the demo's small products run faster so)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up (threadpoolctl comes with scikit-learn)
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of ``seed`` and ``keys`` (stream, subject, run), independent of others."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]))


def hemispheres(atlas: Atlas) -> np.ndarray:
    """'L'/'R' per parcel, from the label (``_LH_``/``_RH_``) or else the centroid's x sign."""
    cent = parcel_centroids(atlas)
    out = []
    for label, xyz in zip(atlas.labels, cent, strict=True):
        if re.search(r"(^|[_-])(LH|lh|L)([_-]|$)", label):
            out.append("L")
        elif re.search(r"(^|[_-])(RH|rh|R)([_-]|$)", label):
            out.append("R")
        else:
            out.append("L" if xyz[0] < 0 else "R")
    return np.array(out)


def map_subjects(
    fn: Callable[[tuple[int, SimpleNamespace]], Any], participants: pd.DataFrame, n_jobs: int
) -> dict[str, Any]:
    """``fn((index, row))`` for every participants row, in ``n_jobs`` processes, BLAS
    single-threaded; the results by ``participant_id``.

    Every subject draws from its own seeded stream (keyed by its index), so the files written
    are the same for any ``n_jobs``; ``fn`` must pickle (a module-level function or a partial of
    one), and each row comes as a namespace of plain values.
    """
    records = participants.to_dict("records")
    items = [(s, SimpleNamespace(**row)) for s, row in enumerate(records)]
    if n_jobs <= 1 or len(items) <= 1:
        with single_threaded_blas():
            results = [fn(item) for item in items]
    else:
        from joblib import Parallel, delayed

        calls = (delayed(_single_threaded)(fn, item) for item in items)
        results = Parallel(n_jobs=min(n_jobs, len(items)))(calls)
    return {row.participant_id: r for (_, row), r in zip(items, results, strict=True)}


def _single_threaded(fn: Callable[[Any], Any], item: Any) -> Any:
    with single_threaded_blas():
        return fn(item)
