"""Durations as written in workflows: ``"250ms"``, ``"30s"``, ``"1h30m"`` or a number of seconds."""

from __future__ import annotations

import re
from typing import Any

from airun_nb.errors import SpecError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, *, path: str) -> float:
    """``"1s"``, ``"250ms"``, ``"5m"``, ``"1h30m"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise SpecError(f"expected a duration such as '30s' or '5m', got {value!r}", path=path)
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise SpecError(
                f"a duration must be a finite number of seconds, got {value}", path=path
            )
        if value < 0:
            raise SpecError("a duration cannot be negative", path=path)
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNITS[u] for n, u in parts)
    raise SpecError(f"expected a duration such as '30s' or '5m', got {value!r}", path=path)
