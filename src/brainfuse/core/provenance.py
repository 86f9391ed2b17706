"""Hashes that tie outputs to the configuration that made them, and the derivative's description."""

from __future__ import annotations

import hashlib
import json

from brainfuse.core import atomic


def config_hash(config: dict) -> str:
    """Stable short hash of a configuration mapping (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_description(config: dict, out: str) -> None:
    """BIDS-derivative ``dataset_description.json``: brainfuse, its version and the config hash."""
    from brainfuse import __version__

    atomic.write_json(
        out,
        {
            "Name": "brainfuse outputs",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "brainfuse",
                    "Version": __version__,
                    "CodeURL": "https://github.com/brainfuse/brainfuse",
                }
            ],
            "ConfigHash": config_hash(config),
        },
    )
