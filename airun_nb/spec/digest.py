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


def _odd_keys(obj: Any) -> bool:
    """Whether a mapping inside ``obj`` has a key that is not a str (JSON would spell it apart
    from ``str(key)``, or sort it otherwise)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                if type(k) is not str:
                    return True
                if type(v) is not str and isinstance(v, (dict, list, tuple)):
                    stack.append(v)
        elif isinstance(o, (list, tuple)):
            stack.extend(v for v in o if type(v) is not str and isinstance(v, (dict, list, tuple)))
    return False


_encoder = json.JSONEncoder(sort_keys=True, default=repr, separators=(",", ":"))
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _encode(obj: Any) -> str:
    """``json.dumps(obj, sort_keys=True, default=repr, separators=(",", ":"))``, without
    building an encoder per call where the C encoder is there."""
    if _c_make_encoder is None or isinstance(obj, str):  # pragma: no cover - a build without it
        return _encoder.encode(obj)
    enc = _c_make_encoder(
        {},
        repr,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
    return "".join(enc(obj, 0))


def canonical(obj: Any) -> str:
    """The canonical JSON of ``obj``: keys sorted, as strings, no spaces (what is hashed)."""
    return _encode(_strkeys(obj) if _odd_keys(obj) else obj)


def of_canonical(data: str) -> str:
    """The digest of an already canonical JSON text."""
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def digest(obj: Any) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``obj`` (keys sorted, as strings)."""
    return of_canonical(canonical(obj))


_hash = digest
