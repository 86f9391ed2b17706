"""Haufe activation patterns of the linear (scikit-learn) baselines.

The classifier's weights ``w`` are turned into activation patterns with the Haufe
transformation, ``a = cov(X) w / var(X w)`` (Haufe et al. 2014, NeuroImage 87:96-110),
computed on the data the model was fitted on (the fold's training and validation subjects:
the baselines refit on both after choosing ``C``). ``X`` is what the classifier reads: the
tangent-space vectors for ``*_tangent``, the standardised features for the EEG baselines.
Raw weights of correlated features reflect noise cancellation as much as signal; patterns
show where the class difference is. Patterns are expressed per SD of each feature
(:func:`standardized_pattern`), so that edges of different variance compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brainfuse.explain.blocks import FoldBlock


def haufe_pattern(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Activation pattern of a linear model: ``cov(X) w / var(X w)``.

    Parameters
    ----------
    x : ndarray
        (n_samples, n_features) inputs of the linear decision function (after any fitted
        transformation), the data the model was trained on.
    w : ndarray
        (n_features,) weights.

    Returns
    -------
    ndarray
        (n_features,) pattern; never forms the feature covariance (``X_c^T (X_c w) / (n-1)``).
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64).ravel()
    xc = x - x.mean(axis=0)
    s = xc @ w
    n = max(len(x) - 1, 1)
    pattern = xc.T @ s / n
    var_s = float(s @ s / n)
    return pattern / var_s if var_s > 0 else pattern


def standardized_pattern(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The Haufe pattern in units of each feature's SD: ``haufe_pattern(x, w) / sd(x)``.

    This is the pattern of the same decision function written on z-scored features (weights
    ``w * sd``), so features of different variance (strong and weak SC edges, or variable and
    stable FC edges) are compared on one scale; each entry is proportional to the correlation
    of the feature with the decision value. Constant features get 0.
    """
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1])
    pattern = haufe_pattern(x, w)
    return np.where(sd > 0, pattern / np.where(sd > 0, sd, 1.0), 0.0)


def vector_to_matrix(vector: np.ndarray, n: int, order: str = "triu") -> np.ndarray:
    """Symmetric (N, N) matrix (zero diagonal) from an off-diagonal vector.

    ``order="triu"`` is :func:`brainfuse.methods.baselines.estimators.upper_triangle`'s order;
    ``"tril"`` is
    nilearn's ``sym_matrix_to_vec(discard_diagonal=True)`` order (tangent-space vectors).
    """
    i, j = np.triu_indices(n, 1) if order == "triu" else np.tril_indices(n, -1)
    out = np.zeros((n, n))
    out[i, j] = vector
    out[j, i] = vector
    return out


def _pipeline_parts(model) -> tuple[Any, Any | None]:
    """(classifier, fitted transformer before it or None) of a baseline's model."""
    steps = getattr(model, "steps", None)
    if steps is None:
        return model, None
    if len(steps) == 1:
        return steps[-1][1], None
    return steps[-1][1], model[:-1]


#: Baseline features whose weights map onto parcels, edges or bands.
ATTRIBUTED_FEATURES = ("fc", "sc", "tangent", "eeg")


def linear_blocks(
    model, x_fit: np.ndarray, features: str, n_nodes: int, n_bands: int = 1
) -> dict[str, FoldBlock] | None:
    """Haufe patterns of a fitted baseline mapped to its input blocks (None: no weights).

    Parameters
    ----------
    model : estimator or Pipeline
        The fold's ``model.bin``.
    x_fit : ndarray
        The raw features the model was fitted on (``FEATURES[features]`` rows).
    features : str
        ``fc``, ``sc``, ``tangent``, ``eeg`` (see :data:`brainfuse.methods.catalog.FEATURES`).
    n_nodes, n_bands : int
        N and, for ``eeg``, the number of bands.
    """
    classifier, transform = _pipeline_parts(model)
    coef = getattr(classifier, "coef_", None)
    if coef is None:
        return None
    w = np.asarray(coef, dtype=np.float64).ravel()
    z = transform.transform(list(x_fit) if features == "tangent" else x_fit) if transform else x_fit
    pattern = standardized_pattern(np.asarray(z, dtype=np.float64), w)

    def edge_block(vec: np.ndarray, order: str = "triu") -> FoldBlock:
        signed = vector_to_matrix(vec, n_nodes, order)[None]
        return FoldBlock(np.abs(signed), signed)

    if features in ("fc", "sc"):
        return {features: edge_block(pattern)}
    if features == "tangent":
        return {"fc": edge_block(pattern, "tril")}
    if features == "eeg":
        n_power = n_bands * n_nodes
        power = pattern[:n_power].reshape(n_bands, n_nodes)
        n_edges = n_nodes * (n_nodes - 1) // 2
        aec = np.stack(
            [
                vector_to_matrix(
                    pattern[n_power + b * n_edges : n_power + (b + 1) * n_edges], n_nodes
                )
                for b in range(n_bands)
            ]
        )
        return {
            "band_power": FoldBlock(np.abs(power), power),
            "aec": FoldBlock(np.abs(aec), aec),
        }
    raise ValueError(f"no attribution for baseline features {features!r}")
