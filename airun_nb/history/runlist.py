"""The run list of ``airun runs``: read through DuckDB alone and laid out as a text table.

A terminal command should answer at once, so this path imports neither pandas nor pyarrow nor
the engine: filtering, the newest-N limit, the timestamp text and the durations are computed in
SQL, and the table is right-aligned columns as ``DataFrame.to_string(index=False)`` lays them.
"""

from __future__ import annotations

import os
from typing import Any

from airun_nb.store.opening import open_store

COLUMNS = (
    "run_id",
    "workflow",
    "status",
    "launched_by",
    "created_at",
    "duration",
    "steps",
    "failed_step",
)


def rows(
    db: str | os.PathLike[str] | None, workflow: str | None = None, limit: int = 20
) -> list[tuple[Any, ...]]:
    """The newest ``limit`` runs (of ``workflow``), oldest first, as display values."""
    where, params = ("WHERE r.workflow = ?", [workflow]) if workflow else ("", [])
    found = open_store(db, create=False).query(
        f"""
        SELECT run_id, workflow, status, launched_by, created_at, duration, steps, failed_step
        FROM (
            SELECT r.run_id, r.workflow, r.status, r.launched_by,
                   strftime(r.created_at, '%Y-%m-%d %H:%M:%S') AS created_at,
                   epoch(r.finished_at) - epoch(r.started_at) AS duration,
                   count(s.step_id) AS steps, r.failed_step, r.created_at AS created
            FROM runs r LEFT JOIN steps s USING (run_id) {where}
            GROUP BY ALL
            ORDER BY created DESC NULLS FIRST, r.run_id DESC
            LIMIT ?
        )
        ORDER BY created NULLS LAST, run_id
        """,
        [*params, max(limit, 0)],
    )
    return [
        (*r[:5], "" if r[5] is None else f"{r[5]:.2f}s", r[6], "" if r[7] is None else r[7])
        for r in found
    ]


def text(db: str | os.PathLike[str] | None, workflow: str | None = None, limit: int = 20) -> str:
    """``airun runs`` as printed."""
    found = rows(db, workflow, limit)
    if not found:
        return "(no runs)"
    cells = [list(COLUMNS), *([("" if v is None else str(v)) for v in r] for r in found)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    steps = COLUMNS.index("steps")  # a number: pandas keeps a sign's place beside its header
    widths[steps] = max(widths[steps], len(COLUMNS[steps]) + 1)
    return "\n".join(
        " ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells
    )
