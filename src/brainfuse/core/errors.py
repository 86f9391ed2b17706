"""Errors naming the offending file and the reason, so a bad input becomes a recorded exclusion."""

from __future__ import annotations

import os


class InputError(Exception):
    """An input file that cannot be used: the run/recording is excluded and recorded in QC.

    Parameters
    ----------
    path : str or PathLike
        The file at fault.
    reason : str
        Why it cannot be used, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(ValueError):
    """A configuration value that cannot work, found while the config is read (before any job).

    The message names the key (e.g. ``methods.logreg_fc.stages``) and what would be valid.
    """
