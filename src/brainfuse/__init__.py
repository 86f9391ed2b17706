"""brainfuse: BIDS derivatives to multi-modal brain-network models and reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainfuse")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
