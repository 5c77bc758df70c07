"""Stable short digests of workflow definitions (what decides whether a step's result is reused)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _strkeys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _strkeys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strkeys(v) for v in obj]
    return obj


def digest(obj: Any) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``obj`` (keys sorted, as strings)."""
    data = json.dumps(_strkeys(obj), sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


_hash = digest
