"""Runs a front end launched and may have to continue: which wait at a gate, which may go on.

A front end that starts runs on someone's behalf (``airun mcp``) marks them with its ``source``
and continues them when a person has decided their gates, as a live kernel does. These are the
reads it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airun_nb.store.backend import Backend


def waiting(store: Backend, *, source: str, launched_by: str) -> list[str]:
    """Runs from ``source`` launched by ``launched_by`` that wait at a gate, oldest first."""
    rows = store.query(
        "SELECT run_id FROM runs WHERE status = 'waiting' AND source = ? AND launched_by = ? "
        "ORDER BY created_at",
        [source, launched_by],
    )
    return [str(r[0]) for r in rows]


def continuable(store: Backend, run_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Of ``run_ids``: those waiting with no gate left open (a person decided: they may go on),
    and those that no longer wait at all (finished, cancelled, continued elsewhere)."""
    if not run_ids:
        return [], []
    marks = ", ".join("?" for _ in run_ids)
    rows = store.query(
        f"""SELECT r.run_id, r.status,
                   (SELECT count(*) FROM approvals a
                     WHERE a.run_id = r.run_id AND a.status = 'open') AS open_gates
            FROM runs r WHERE r.run_id IN ({marks})""",
        list(run_ids),
    )
    found = {str(r[0]): (str(r[1]), int(r[2] or 0)) for r in rows}
    ready = [r for r in run_ids if found.get(r, ("", 0))[0] == "waiting" and not found[r][1]]
    gone = [r for r in run_ids if found.get(r, ("", 0))[0] != "waiting"]
    return ready, gone


def status(store: Backend, run_id: str) -> str | None:
    """A run's status, or None when the store has no such run."""
    rows = store.query("SELECT status FROM runs WHERE run_id = ?", [run_id])
    return str(rows[0][0]) if rows else None


def launcher(store: Backend, run_id: str) -> tuple[str | None, str | None] | None:
    """(launched_by, source) of a run, or None when the store has no such run."""
    rows = store.query("SELECT launched_by, source FROM runs WHERE run_id = ?", [run_id])
    return (rows[0][0], rows[0][1]) if rows else None


def outputs(store: Backend, run_id: str) -> dict[str, dict[str, Any]]:
    """How each step's output is stored (kind, inline JSON, table name), by step id."""
    rows = store.query_dicts(
        "SELECT step_id, output_kind, output_json, output_table FROM steps WHERE run_id = ?",
        [run_id],
    )
    return {str(r["step_id"]): r for r in rows}
