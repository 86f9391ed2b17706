"""Hashes that tie outputs to the configuration that made them."""

from __future__ import annotations

import hashlib
import json


def config_hash(config: dict) -> str:
    """Stable short hash of a configuration mapping (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
