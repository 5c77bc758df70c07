"""A step's fingerprint: the code and notebook values a step depends on (see
:mod:`airun_nb.engine.fingerprint`), with its ``cache:`` control applied."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from airun_nb.engine.fingerprint import Fingerprint, Fingerprinter, value_part
from airun_nb.engine.reasons import cache_control, json_of, value_changes
from airun_nb.engine.state import StepState


def of_step(st: StepState, prints: Fingerprinter) -> Fingerprint | None:
    """The fingerprint of a ``call`` or ``python`` step (None for other kinds);
    ``cache: {version: ...}`` stands in for the code."""
    version = cache_control(st).get("version")
    if version is not None:
        return Fingerprint({"cache version": [str(version), str(version)]})
    if st.spec.kind == "call" and st.fn is not None:
        return prints.of_function(st.fn, str(st.spec.body).strip())
    if st.spec.kind == "python":
        return prints.of_code(str(st.spec.body), bound=frozenset(st.spec.bindings))
    if st.spec.kind == "sql":  # notebook DataFrames it queries by name
        names = set(_IDENT.findall(str(st.spec.body)))
        return prints.of_names({n for n in names if _is_table(prints.namespace.get(n))})
    return None


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _is_table(value: Any) -> bool:
    return isinstance(value, (pd.DataFrame, pa.Table))


def values_changed(states: Mapping[str, StepState], row: Mapping[str, Any]) -> bool:
    """Whether the values a stored step read differ from the notebook's now."""
    st = states.get(row["step_id"])
    if st is None or not row.get("fingerprint"):
        return False
    ours = (st.fingerprint or {}).get("components") or {}
    return bool(value_changes(json_of(row["fingerprint"]).get("components"), ours))


def refresh_values(
    states: Mapping[str, StepState], namespace: Mapping[str, Any]
) -> list[StepState]:
    """Take the values the steps read again, as the notebook has them now (at the end of a
    run); return the steps whose values changed meanwhile."""
    prints = Fingerprinter(namespace)
    out = []
    for st in states.values():
        comps = (st.fingerprint or {}).get("components")
        if not comps or not value_part(comps):
            continue
        fresh = of_step(st, prints)
        if fresh is None:
            continue
        values = {k: v for k, v in value_part(fresh.components).items() if k in comps}
        if any(comps.get(k) != v for k, v in values.items()):
            st.fingerprint = {**(st.fingerprint or {}), "components": {**comps, **values}}
            out.append(st)
    return out
