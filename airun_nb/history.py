"""The history of every run as pandas DataFrames with real timestamp and duration dtypes."""

from __future__ import annotations

import os

import pandas as pd

from .errors import RunNotFound
from .runview import StoredRun, shown_status, view_of_rows
from .store import Store

_Db = str | os.PathLike[str] | None


def _frame(
    df: pd.DataFrame, time_cols: tuple[str, ...], duration: tuple[str, str] | None
) -> pd.DataFrame:
    for col in time_cols:
        if col in df:
            df[col] = pd.to_datetime(df[col]).dt.tz_localize("UTC")
    if duration is not None:
        start, end = duration
        df["duration"] = df[end] - df[start]
    for col in df.columns:
        if pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):
            # One text dtype whatever the data (all-NULL columns come back as object).
            df[col] = df[col].astype("string")
    return df


def runs(db: _Db = None) -> pd.DataFrame:
    """One row a run, oldest first."""
    df = Store.open(db).query_df(
        """
        SELECT r.run_id, r.workflow, r.status, r.launched_by, r.created_at, r.started_at,
               r.finished_at, count(s.step_id) AS steps,
               count(*) FILTER (WHERE s.status = 'completed') AS completed_steps,
               r.failed_step, r.error, r.seeded_from, r.params, r.owner_pid
        FROM runs r LEFT JOIN steps s USING (run_id)
        GROUP BY ALL ORDER BY r.created_at, r.run_id
        """
    )
    return _frame(df, ("created_at", "started_at", "finished_at"), ("started_at", "finished_at"))


def steps(run: str | None = None, db: _Db = None) -> pd.DataFrame:
    """One row a step (of one run, or of every run), in workflow order."""
    where, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    store = Store.open(db)
    df = store.query_df(
        f"""
        SELECT run_id, step_id, kind, status, attempts, started_at, finished_at, finish_seq,
               replayed_from, reason, error, output_kind, output_table, compensation,
               comp_status, comp_attempts, comp_error, comp_finished_at, def_hash, code_hash,
               eff_hash
        FROM steps {where} ORDER BY run_id, position
        """,
        params,
    )
    run_status = dict(
        store.query(
            "SELECT run_id, status FROM runs" + (" WHERE run_id = ?" if run else ""), params
        )
    )
    df.insert(
        4,
        "view",
        [
            shown_status(
                str(st),
                isinstance(rf, str) and bool(rf),
                cs if isinstance(cs, str) else None,
                run_status.get(r),
            )
            for r, st, rf, cs in zip(
                df["run_id"], df["status"], df["replayed_from"], df["comp_status"], strict=True
            )
        ],
    )
    return _frame(
        df, ("started_at", "finished_at", "comp_finished_at"), ("started_at", "finished_at")
    )


def attempts(run: str | None = None, db: _Db = None) -> pd.DataFrame:
    """One row an attempt of a step (or of its compensation)."""
    where, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    df = Store.open(db).query_df(
        f"""SELECT run_id, step_id, phase, attempt, status, started_at, finished_at, error, pid,
                   traceback
            FROM attempts {where} ORDER BY started_at, run_id, step_id, attempt""",
        params,
    )
    return _frame(df, ("started_at", "finished_at"), ("started_at", "finished_at"))


def events(run: str | None = None, db: _Db = None) -> pd.DataFrame:
    """Every recorded event (run transitions, invalidations, retries, failures...)."""
    where, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    df = Store.open(db).query_df(
        f"SELECT ts, run_id, step_id, kind, detail FROM events {where} ORDER BY ts", params
    )
    return _frame(df, ("ts",), None)


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
    """One row a gate: its message, approvers, deadline and the decision (who, how, when)."""
    clauses, params = [], []
    if run:
        clauses.append("run_id = ?")
        params.append(run)
    if pending:
        clauses.append("status = 'open'")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    df = Store.open(db).query_df(
        f"""SELECT run_id, gate_id, workflow, status, decision, actor, channel, comment,
                   message, approvers, launched_by, opened_at, deadline, decided_at, on_timeout,
                   preview_text
            FROM approvals {where} ORDER BY opened_at""",
        params,
    )
    df = _frame(df, ("opened_at", "deadline", "decided_at"), None)
    df["waited"] = df["decided_at"] - df["opened_at"]
    return df


def audit(run: str | None = None, db: _Db = None) -> pd.DataFrame:
    """The audit trail: every policy decision, human decision, capability execution, undo and
    compensation, oldest first, with secrets already redacted."""
    where, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    df = Store.open(db).query_df(
        f"""SELECT ts, kind, principal, run_id, step_id, capability, decision, risk, rule,
                   arguments, result, undo_ref
            FROM audit {where} ORDER BY ts""",
        params,
    )
    return _frame(df, ("ts",), None)
