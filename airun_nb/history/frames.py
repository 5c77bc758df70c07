"""The history of every run as pandas DataFrames with real timestamp and duration dtypes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airun_nb.errors import QueryError, RunNotFound
from airun_nb.history.steptable import StoredRun, shown_status_sql, view_of_rows
from airun_nb.store.database import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["approvals", "attempts", "audit", "events", "runs", "steps"]

_Db = str | os.PathLike[str] | None


def _frame(
    store: Store, sql: str, params: Sequence[Any] = (), duration: tuple[str, str] | None = None
) -> pd.DataFrame:
    """The query's rows as a frame, dtypes from Arrow (UTC timestamps, string text)."""
    from airun_nb.history.relation import (  # pandas and pyarrow: only when a frame is asked for
        arrow_of,
        to_frame,
    )

    return to_frame(arrow_of(store, sql, params), duration)


def _utc(value: Any, what: str) -> datetime:
    """``since=`` / ``until=`` as a naive UTC datetime (the store's timestamps are UTC)."""
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise QueryError(f"steps: {what}={value!r} is not a date or time") from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    stamp: datetime = ts.to_pydatetime()
    return stamp


def runs(db: _Db = None) -> pd.DataFrame:
    """One row a run, oldest first."""
    return _frame(
        Store.open(db),
        """
        SELECT r.run_id, r.workflow, r.status, r.launched_by, r.created_at, r.started_at,
               r.finished_at, count(s.step_id) AS steps,
               count(*) FILTER (WHERE s.status = 'completed') AS completed_steps,
               r.failed_step, r.error, r.seeded_from, r.params, r.owner_pid
        FROM runs r LEFT JOIN steps s USING (run_id)
        GROUP BY ALL ORDER BY r.created_at, r.run_id
        """,
        duration=("started_at", "finished_at"),
    )


def steps(
    run: str | None = None,
    db: _Db = None,
    *,
    workflow: str | None = None,
    status: str | Sequence[str] | None = None,
    since: Any = None,
    until: Any = None,
) -> pd.DataFrame:
    """One row a step (of one run, or of every run), in workflow order.

    ``workflow=`` keeps the steps of that workflow's runs, ``status=`` (one or several) the
    steps in that status, ``since=`` / ``until=`` the steps that started at or after / before
    that time (a datetime, a Timestamp or an ISO string; naive times are UTC). Filters run in
    DuckDB.
    """
    clauses, params = _step_filters(run, workflow, status, since, until)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    view = shown_status_sql("s.status", "s.replayed_from", "s.comp_status", "r.status", "s.error")
    return _frame(
        Store.open(db),
        f"""
        SELECT s.run_id, s.step_id, s.kind, s.status, {view} AS view, s.attempts, s.started_at,
               s.finished_at, s.finish_seq, s.replayed_from, s.reason, s.error, s.output_kind,
               s.output_table, s.compensation, s.comp_status, s.comp_attempts, s.comp_error,
               s.comp_finished_at, s.def_hash, s.code_hash, s.eff_hash
        FROM steps s LEFT JOIN runs r ON r.run_id = s.run_id {where}
        ORDER BY s.run_id, s.position
        """,
        params,
        duration=("started_at", "finished_at"),
    )


def _step_filters(
    run: str | None,
    workflow: str | None,
    status: str | Sequence[str] | None,
    since: Any,
    until: Any,
) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if run:
        clauses.append("s.run_id = ?")
        params.append(run)
    if workflow:
        clauses.append("r.workflow = ?")
        params.append(workflow)
    if status:
        wanted = [status] if isinstance(status, str) else [str(x) for x in status]
        clauses.append(f"s.status IN ({', '.join('?' for _ in wanted)})")
        params.extend(wanted)
    if since is not None:
        clauses.append("s.started_at >= ?")
        params.append(_utc(since, "since"))
    if until is not None:
        clauses.append("s.started_at < ?")
        params.append(_utc(until, "until"))
    return clauses, params


def attempts(run: str | None = None, db: _Db = None) -> pd.DataFrame:
    """One row an attempt of a step (or of its compensation)."""
    where, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    return _frame(
        Store.open(db),
        f"""SELECT run_id, step_id, phase, attempt, status, started_at, finished_at, error, pid,
                   traceback
            FROM attempts {where} ORDER BY started_at, run_id, step_id, attempt""",
        params,
        duration=("started_at", "finished_at"),
    )


def events(run: str | None = None, db: _Db = None) -> pd.DataFrame:
    """Every recorded event (run transitions, invalidations, retries, failures...)."""
    where, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    return _frame(
        Store.open(db),
        f"SELECT ts, run_id, step_id, kind, detail FROM events {where} ORDER BY ts",
        params,
    )


def stored_run(run_id: str, db: _Db = None) -> StoredRun:
    """A run's step table as the store has it (``airun show`` / ``%workflow show``)."""
    store = Store.open(db)
    found = store.query_dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if not found:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    rows = store.query_dicts(
        "SELECT * EXCLUDE (output_blob) FROM steps WHERE run_id = ? ORDER BY position", [run_id]
    )
    return StoredRun(view_of_rows(found[0], rows, tracebacks(run_id, db)))


def tracebacks(run_id: str, db: _Db = None) -> dict[str, str]:
    """The traceback of each step's last failed attempt (``%workflow traceback``)."""
    rows = Store.open(db).query(
        """SELECT step_id, traceback FROM attempts
           WHERE run_id = ? AND traceback IS NOT NULL ORDER BY started_at""",
        [run_id],
    )
    return {str(step): str(tb) for step, tb in rows}


def approvals(run: str | None = None, db: _Db = None, *, pending: bool = False) -> pd.DataFrame:
    """One row a gate: its message, approvers, deadline and the decision (who, how, when), the
    option and form values decided (secret fields redacted) and the votes (JSON, one per
    person, with channel and identity)."""
    clauses, params = [], []
    if run:
        clauses.append("run_id = ?")
        params.append(run)
    if pending:
        clauses.append("status = 'open'")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    df = _frame(
        Store.open(db),
        f"""SELECT run_id, gate_id, workflow, status, decision, actor, channel, comment,
                   message, approvers, launched_by, opened_at, deadline, decided_at, on_timeout,
                   preview_text, option, form, votes
            FROM approvals {where} ORDER BY opened_at""",
        params,
    )
    df["waited"] = df["decided_at"] - df["opened_at"]
    return df


def audit(run: str | None = None, db: _Db = None) -> pd.DataFrame:
    """The audit trail: every policy decision, human decision, capability execution, undo and
    compensation, oldest first, with secrets already redacted."""
    where, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    return _frame(
        Store.open(db),
        f"""SELECT ts, kind, principal, run_id, step_id, capability, decision, risk, rule,
                   arguments, result, undo_ref
            FROM audit {where} ORDER BY ts""",
        params,
    )
