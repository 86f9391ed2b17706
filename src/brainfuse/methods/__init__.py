"""Methods: the catalog of every method, scikit-learn baselines, torch training, fusion and SSL."""

# The catalog merges the torch registries when imported; loading it first keeps that order.
from brainfuse.methods import catalog  # noqa: F401
