"""Why a step replays or runs, in words, and what differs from the stored step it is compared
with: its definition, the components of its code fingerprint, the params, its upstream steps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airun_nb.engine.fingerprint import UNTRACKED, changes, code_part, value_part
from airun_nb.engine.state import (
    DONE_STEP,
    S_COMPLETED,
    S_FAILED,
    S_INTERRUPTED,
    S_RUNNING,
    S_SKIPPED,
    S_WAITING,
    StepState,
)
from airun_nb.store import outputs


def explain(
    st: StepState,
    row: Mapping[str, Any] | None,
    states: Mapping[str, StepState],
    params: Mapping[str, Any],
    prior_params: Any,
    mode: str,
) -> tuple[str | None, list[str]]:
    """Why ``st`` must run (None: it can replay), and what differs from ``row``."""
    s = st.spec
    if row is None:
        return "not run yet", []
    status = row["status"]
    if status not in (S_COMPLETED, S_SKIPPED):
        return _unfinished(row), []
    changed: list[str] = []
    if row.get("def_hash") != s.def_hash:
        changed.append("definition")
    code_changed = row.get("code_hash") != st.code_hash
    stored = (
        json_of(row.get("fingerprint")).get("components")
        if code_changed or mode in ("seeded", "fork")
        else None
    )
    ours = (st.fingerprint or {}).get("components") or {}
    if code_changed:
        what = changes(code_part(stored), code_part(ours)) if stored is not None else []
        changed.extend(what or [f"function {s.body}" if s.kind == "call" else "code"])
    values = value_changes(stored, ours) if mode in ("seeded", "fork") else []
    changed.extend(values)
    if prior_params is not None and prior_params != params:
        changed.extend(_param_changes(prior_params, params))
    again = [n for n in s.needs if states[n].status not in DONE_STEP or not states[n].replayed]
    if mode in ("seeded", "fork") or row.get("eff_hash") != st.eff_hash:
        changed.extend(f"upstream {n}" for n in again)
    else:
        again = []
    if row.get("eff_hash") == st.eff_hash and not again and not values:
        if status == S_COMPLETED and not outputs.storable(row):
            return "its output could not be stored", changed
        return None, changed
    if "definition" in changed:
        return "definition changed", changed
    code = [c for c in changed if c != "definition" and not c.startswith(("param ", "upstream "))]
    if code:
        return ", ".join(c if "→" in c else f"{c} changed" for c in code), changed
    if any(c.startswith("param ") for c in changed):
        return "params changed", changed
    if again:
        return f"upstream '{again[0]}' runs again", changed
    return "inputs changed", changed


def _unfinished(row: Mapping[str, Any]) -> str:
    status = row["status"]
    if status == S_WAITING:
        return "waiting for approval"
    if status == S_RUNNING:
        return f"was in flight when its process died (attempt {row.get('attempts')})"
    if status == S_INTERRUPTED:
        return "was interrupted"
    if status == S_FAILED:
        return "failed before"
    return "not run yet"


def finished_here(row: Mapping[str, Any] | None) -> bool:
    """The stored step finished (completed or skipped) and its output can be loaded."""
    return row is not None and row["status"] in DONE_STEP and outputs.storable(row)


def not_reusable(row: Mapping[str, Any], source: str | None) -> str:
    if row.get("comp_status") == "done":
        return f"undone by the rollback of {source}"
    if row["status"] in DONE_STEP:
        return "its output could not be stored"
    return f"not finished in {source} ({_unfinished(row)})"


def _param_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, None) != new.get(key, None) or (key in old) != (key in new):
            a = repr(old[key]) if key in old else "(unset)"
            b = repr(new[key]) if key in new else "(unset)"
            out.append(f"param {key} {a} → {b}")
    return out


def cache_control(st: StepState) -> dict[str, Any]:
    """A step's ``cache:`` control as a mapping: {"mode": ...} or {"version": ...}."""
    value = getattr(st.spec, "cache", None)
    if value is None:
        return {}
    if isinstance(value, str):
        return {"mode": value}
    return dict(value)


def json_of(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def untracked(st: StepState) -> list[str]:
    comps = (st.fingerprint or {}).get("components") or {}
    return sorted(k.split(" ", 1)[-1] for k, v in comps.items() if v and v[0] == UNTRACKED)


def value_changes(stored: Mapping[str, Any] | None, ours: Mapping[str, Any]) -> list[str]:
    """Globals and closure values that differ from the ones stored with a finished run (taken
    when it finished, so what its own steps did to them does not count)."""
    if stored is None:
        return []
    return changes(value_part(stored), value_part(ours))


def overridden(
    st: StepState,
    row: Mapping[str, Any] | None,
    mode: str,
    forced: set[str],
    fork_step: str | None,
    source: str | None,
    plain: tuple[str | None, list[str]],
) -> tuple[str | None, list[str], str]:
    """A fork and the step's ``cache:`` control over the plain decision: (why it runs or None,
    what changed, why it replays)."""
    reason, changed = plain
    replay_why = "unchanged"
    sid = st.id
    if forced and row is not None and sid not in forced:
        reusable = row["status"] in DONE_STEP and outputs.storable(row)
        if mode == "fork":
            reusable = reusable and row.get("comp_status") != "done"
            reason = None if reusable else not_reusable(row, source)
        elif reusable and row.get("replayed_from"):
            reason = None  # resuming a fork: what it reused stays reused
        replay_why = f"before the fork point '{fork_step}'"
    elif mode == "fork" and sid in forced:
        reason = (
            "the fork point" if sid == fork_step else f"downstream of the fork point '{fork_step}'"
        )
    elif mode in ("seeded", "fork") and row is not None and row["status"] in DONE_STEP:
        policy = cache_control(st).get("mode")
        if policy == "recompute":
            reason, changed = "cache: recompute", changed or ["cache: recompute"]
        elif policy == "ignore" and outputs.storable(row):
            reason, replay_why = None, "cache: ignore"
    return reason, changed, replay_why


def reuse(st: StepState, row: Mapping[str, Any]) -> bool:
    """A step reused from another run: it is not this run's to undo, and its hashes and
    fingerprint are the stored ones. True when its hash differs from the one planned."""
    st.replayed_from = row.get("replayed_from") or row["run_id"]
    st.comp_status = st.comp_error = None
    st.comp_attempts = 0
    st.code_hash = row.get("code_hash") or ""
    st.fingerprint = json_of(row.get("fingerprint"))
    if row.get("eff_hash") and row["eff_hash"] != st.eff_hash:
        st.eff_hash = row["eff_hash"]
        return True
    return False
