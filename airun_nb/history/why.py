"""Why each step of a run replayed or ran, as a DataFrame (``airun_nb.why``), and a plan shown
the same way before anything runs (``%%workflow --dry-run``)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from airun_nb.errors import RunNotFound
from airun_nb.store.opening import open_store

if TYPE_CHECKING:
    from airun_nb.engine.planner import Plan

_Db = str | os.PathLike[str] | None
COLUMNS = ["step", "decision", "reason", "changed", "status", "replayed_from"]


def why(run_id: str, db: _Db = None) -> pd.DataFrame:
    """One row per step of ``run_id``: replayed or ran, why, and what changed.

    ``changed`` lists the components that differ from the step it was compared with:
    ``function load_sales``, ``helper normalize``, ``global THRESHOLD 0.5 → 0.7``,
    ``pandas 2.2.3 → 3.0.0``, ``param n 60 → 80``, ``upstream clean``.
    """
    store = open_store(db)
    found = store.query_dicts(
        "SELECT run_id, forked_from, forked_step, seeded_from FROM runs WHERE run_id = ?", [run_id]
    )
    if not found:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    rows = store.query_dicts(
        """SELECT step_id, status, attempts, replayed_from, reason, fingerprint
           FROM steps WHERE run_id = ? ORDER BY position""",
        [run_id],
    )
    out = []
    for r in rows:
        info = _json(r.get("fingerprint"))
        if r.get("replayed_from"):
            decision = "replayed"
        elif r["status"] in ("pending", "waiting") or not (r.get("attempts") or 0):
            decision = "skipped" if r["status"] == "skipped" else "not run"
        else:
            decision = "ran"
        reason = (
            info.get("why") or r.get("reason") or ("not run before" if decision == "ran" else "")
        )
        out.append(
            {
                "step": r["step_id"],
                "decision": decision,
                "reason": reason,
                "changed": list(info.get("changed") or []),
                "status": r["status"],
                "replayed_from": r.get("replayed_from"),
            }
        )
    return _typed(pd.DataFrame(out, columns=COLUMNS))


def plan_frame(plan: Plan) -> pd.DataFrame:
    """A plan, before it runs: one row per step with what will happen and why."""
    out = [
        {
            "step": e.step_id,
            "decision": "replay" if e.action == "replay" else "run",
            "reason": e.reason,
            "changed": list(e.changed),
            "status": "planned",
            "replayed_from": None,
        }
        for e in plan.entries
    ]
    return _typed(pd.DataFrame(out, columns=COLUMNS))


def plan_text(plan: Plan) -> str:
    """The plan in words: its head line and one line per step."""
    lines = [_head(plan), "(dry run: nothing was executed or written)"]
    width = max((len(e.step_id) for e in plan.entries), default=4)
    for e in plan.entries:
        verb = "replay" if e.action == "replay" else "run   "
        tail = f"  [{'; '.join(e.changed)}]" if e.changed else ""
        lines.append(f"  {e.step_id:<{width}}  {verb}  {e.reason}{tail}")
    return "\n".join(lines)


def _head(plan: Plan) -> str:
    if plan.mode == "fork":
        return f"fork of {plan.source_run} from step '{plan.forked_step}'"
    if plan.mode == "seeded":
        return f"new run, reusing unchanged steps of {plan.source_run}"
    if plan.mode == "resume":
        return f"resumes run {plan.run_id}"
    return f"new run of {len(plan.entries)} steps"


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for col in ("step", "decision", "reason", "status", "replayed_from"):
        df[col] = df[col].astype("string")
    return df


def _json(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
