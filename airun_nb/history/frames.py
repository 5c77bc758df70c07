"""The history of every run as pandas DataFrames with real timestamp and duration dtypes.

Every function takes the same filters, applied in DuckDB: ``workflow=`` (the runs of that
workflow), ``status=`` (one status or several: the run's status for ``runs``/``events``/``audit``,
the step's, attempt's or gate's own status for the others), ``since=`` / ``until=`` (at or
after / before that time: a datetime, a Timestamp or an ISO string; naive times are UTC) and
``limit=`` (the newest N rows, still shown oldest first). A store path that does not exist is
refused (:class:`~airun_nb.errors.StoreError`), never created.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airun_nb.errors import QueryError, RunNotFound
from airun_nb.history.steptable import StoredRun, shown_status_sql, view_of_rows
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["approvals", "attempts", "audit", "events", "runs", "steps"]

_Db = str | os.PathLike[str] | None
_Status = str | Sequence[str] | None


def _store(db: _Db) -> Backend:
    """The store to read: an existing one only (a typo in a path is an error, not a new file)."""
    return open_store(db, create=False)


def _frame(
    store: Backend,
    sql: str,
    params: Sequence[Any] = (),
    duration: tuple[str, str] | None = None,
    run: str | None = None,
    rows: tuple[str, str, list[Any]] | None = None,
) -> pd.DataFrame:
    """The query's rows as a frame, dtypes from Arrow (UTC timestamps, string text). ``run``:
    the query keeps that run's rows only, of every table it reads; ``rows``: (table, condition
    on its own columns with ``%s`` marks, parameters) that the query keeps no other row of that
    table than (a team store then fetches no other rows)."""
    from airun_nb.history.relation import (  # pandas and pyarrow: only when a frame is asked for
        arrow_of,
        to_frame,
    )

    return to_frame(arrow_of(store, sql, params, run=run, rows=rows), duration)


def _utc(value: Any, what: str) -> datetime:
    """``since=`` / ``until=`` as a naive UTC datetime (the store's timestamps are UTC)."""
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise QueryError(f"history: {what}={value!r} is not a date or time") from None
    if ts is pd.NaT:
        raise QueryError(f"history: {what}={value!r} is not a date or time")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    stamp: datetime = ts.to_pydatetime()
    return stamp


@dataclass
class _Filter:
    """The WHERE clause of one history table's filters (column names as the query spells them)."""

    run: str | None = None
    workflow: str | None = None
    status: _Status = None
    since: Any = None
    until: Any = None
    limit: int | None = None

    def where(
        self, *, run_col: str, workflow_col: str, status_col: str | None, time_col: str
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.run:
            clauses.append(f"{run_col} = ?")
            params.append(self.run)
        if self.workflow:
            clauses.append(f"{workflow_col} = ?")
            params.append(self.workflow)
        if self.status:
            wanted = (
                [self.status] if isinstance(self.status, str) else [str(x) for x in self.status]
            )
            clauses.append(f"{status_col} IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        if self.since is not None:
            clauses.append(f"{time_col} >= ?")
            params.append(_utc(self.since, "since"))
        if self.until is not None:
            clauses.append(f"{time_col} < ?")
            params.append(_utc(self.until, "until"))
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params

    def own(
        self, table: str, *, status_col: str | None, time_col: str, pending: bool = False
    ) -> tuple[str, str, list[Any]] | None:
        """The filters on ``table``'s own columns (a status, a time, an open gate) as a
        condition a team store applies to the rows it fetches of it (None: no such filter)."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.status and status_col:
            wanted = (
                [self.status] if isinstance(self.status, str) else [str(x) for x in self.status]
            )
            clauses.append(f"{status_col} IN ({', '.join('%s' for _ in wanted)})")
            params.extend(wanted)
        if pending:
            clauses.append(f"{status_col} = 'open'")
        if self.since is not None:
            clauses.append(f"{time_col} >= %s")
            params.append(_utc(self.since, "since"))
        if self.until is not None:
            clauses.append(f"{time_col} < %s")
            params.append(_utc(self.until, "until"))
        return (table, " AND ".join(clauses), params) if clauses else None

    def newest(
        self, sql: str, params: list[Any], time_col: str, order: str
    ) -> tuple[str, list[Any]]:
        """``sql`` cut to the newest ``limit`` rows by ``time_col``, then ordered by ``order``."""
        if self.limit is None:
            return f"SELECT * FROM ({sql}) ORDER BY {order}", params
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise QueryError(f"history: limit={self.limit!r} is not a whole number >= 0")
        return (
            f"SELECT * FROM ({sql} ORDER BY {time_col} DESC NULLS FIRST LIMIT ?) ORDER BY {order}",
            [*params, self.limit],
        )


def runs(
    db: _Db = None,
    *,
    workflow: str | None = None,
    status: _Status = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """One row a run, oldest first (``since``/``until``: when the run was created)."""
    f = _Filter(None, workflow, status, since, until, limit)
    where, params = f.where(
        run_col="r.run_id",
        workflow_col="r.workflow",
        status_col="r.status",
        time_col="r.created_at",
    )
    sql, params = f.newest(
        f"""
        SELECT r.run_id, r.workflow, r.status, r.launched_by, r.created_at, r.started_at,
               r.finished_at, count(s.step_id) AS steps,
               count(*) FILTER (WHERE s.status = 'completed') AS completed_steps,
               r.failed_step, r.error, r.seeded_from, r.params, r.owner_pid, r.copied_from,
               r.origin_launcher
        FROM runs r LEFT JOIN steps s USING (run_id) {where}
        GROUP BY ALL
        """,
        params,
        "created_at",
        "created_at, run_id",
    )
    return _frame(_store(db), sql, params, duration=("started_at", "finished_at"))


def steps(
    run: str | None = None,
    db: _Db = None,
    *,
    workflow: str | None = None,
    status: _Status = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """One row a step (of one run, or of every run), in workflow order.

    ``workflow=`` keeps the steps of that workflow's runs, ``status=`` (one or several) the
    steps in that status, ``since=`` / ``until=`` the steps that started at or after / before
    that time, ``limit=`` the steps that started last. Filters run in DuckDB.
    """
    f = _Filter(run, workflow, status, since, until, limit)
    where, params = f.where(
        run_col="s.run_id",
        workflow_col="r.workflow",
        status_col="s.status",
        time_col="s.started_at",
    )
    view = shown_status_sql("s.status", "s.replayed_from", "s.comp_status", "r.status", "s.error")
    sql, params = f.newest(
        f"""
        SELECT s.run_id, s.step_id, s.kind, s.status, {view} AS view, s.attempts, s.started_at,
               s.finished_at, s.finish_seq, s.replayed_from, s.reason, s.error, s.output_kind,
               s.output_table, s.compensation, s.comp_status, s.comp_attempts, s.comp_error,
               s.comp_finished_at, s.def_hash, s.code_hash, s.eff_hash, s.position
        FROM steps s LEFT JOIN runs r ON r.run_id = s.run_id {where}
        """,
        params,
        "started_at",
        "run_id, position",
    )
    rows = f.own("steps", status_col="status", time_col="started_at")
    df = _frame(_store(db), sql, params, ("started_at", "finished_at"), run, rows)
    return df.drop(columns=["position"])


def attempts(
    run: str | None = None,
    db: _Db = None,
    *,
    workflow: str | None = None,
    status: _Status = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """One row an attempt of a step (or of its compensation)."""
    f = _Filter(run, workflow, status, since, until, limit)
    where, params = f.where(
        run_col="a.run_id",
        workflow_col="r.workflow",
        status_col="a.status",
        time_col="a.started_at",
    )
    sql, params = f.newest(
        f"""SELECT a.run_id, a.step_id, a.phase, a.attempt, a.status, a.started_at,
                   a.finished_at, a.error, a.pid, a.traceback
            FROM attempts a LEFT JOIN runs r ON r.run_id = a.run_id {where}""",
        params,
        "started_at",
        "started_at, run_id, step_id, attempt",
    )
    rows = f.own("attempts", status_col="status", time_col="started_at")
    return _frame(_store(db), sql, params, ("started_at", "finished_at"), run, rows)


def events(
    run: str | None = None,
    db: _Db = None,
    *,
    workflow: str | None = None,
    status: _Status = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Every recorded event (run transitions, invalidations, retries, failures...);
    ``status=`` keeps the events of runs in that status."""
    f = _Filter(run, workflow, status, since, until, limit)
    where, params = f.where(
        run_col="e.run_id", workflow_col="r.workflow", status_col="r.status", time_col="e.ts"
    )
    sql, params = f.newest(
        f"""SELECT e.ts, e.run_id, e.step_id, e.kind, e.detail
            FROM events e LEFT JOIN runs r ON r.run_id = e.run_id {where}""",
        params,
        "ts",
        "ts",
    )
    rows = f.own("events", status_col=None, time_col="ts")
    return _frame(_store(db), sql, params, run=run, rows=rows)


def stored_run(run_id: str, db: _Db = None) -> StoredRun:
    """A run's step table as the store has it (``airun show`` / ``%workflow show``)."""
    store = _store(db)
    found = store.query_dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if not found:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    rows = store.query_dicts(
        "SELECT * EXCLUDE (output_blob) FROM steps WHERE run_id = ? ORDER BY position", [run_id]
    )
    return StoredRun(view_of_rows(found[0], rows, tracebacks(run_id, db)))


def tracebacks(run_id: str, db: _Db = None) -> dict[str, str]:
    """The traceback of each step's last failed attempt (``%workflow traceback``)."""
    rows = _store(db).query(
        """SELECT step_id, traceback FROM attempts
           WHERE run_id = ? AND traceback IS NOT NULL ORDER BY started_at""",
        [run_id],
    )
    return {str(step): str(tb) for step, tb in rows}


def approvals(
    run: str | None = None,
    db: _Db = None,
    *,
    pending: bool = False,
    workflow: str | None = None,
    status: _Status = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """One row a gate: its message, approvers, deadline and the decision (who, how, when);
    ``pending=True`` keeps the open gates, ``since=`` / ``until=`` go by when a gate opened."""
    f = _Filter(run, workflow, status, since, until, limit)
    where, params = f.where(
        run_col="run_id", workflow_col="workflow", status_col="status", time_col="opened_at"
    )
    if pending:
        where = f"{where} AND status = 'open'" if where else "WHERE status = 'open'"
    sql, params = f.newest(
        f"""SELECT run_id, gate_id, workflow, status, decision, actor, channel, comment,
                   message, approvers, launched_by, opened_at, deadline, decided_at, on_timeout,
                   preview_text, option, form, votes
            FROM approvals {where}""",
        params,
        "opened_at",
        "opened_at",
    )
    rows = f.own("approvals", status_col="status", time_col="opened_at", pending=pending)
    df = _frame(_store(db), sql, params, run=run, rows=rows)
    df["waited"] = df["decided_at"] - df["opened_at"]
    return df


def audit(
    run: str | None = None,
    db: _Db = None,
    *,
    workflow: str | None = None,
    status: _Status = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """The audit trail: every policy decision, human decision, capability execution, undo and
    compensation, oldest first, with secrets already redacted; ``status=`` keeps the entries of
    runs in that status. ``copied_from`` names the store that recorded a row copied in by
    ``airun pull``/``push`` (empty for rows recorded here)."""
    f = _Filter(run, workflow, status, since, until, limit)
    where, params = f.where(
        run_col="a.run_id", workflow_col="r.workflow", status_col="r.status", time_col="a.ts"
    )
    sql, params = f.newest(
        f"""SELECT a.ts, a.kind, a.principal, a.run_id, a.step_id, a.capability, a.decision,
                   a.risk, a.rule, a.arguments, a.result, a.undo_ref, a.copied_from
            FROM audit a LEFT JOIN runs r ON r.run_id = a.run_id {where}""",
        params,
        "ts",
        "ts",
    )
    rows = f.own("audit", status_col=None, time_col="ts")
    return _frame(_store(db), sql, params, run=run, rows=rows)
