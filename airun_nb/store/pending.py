"""Recent rows: what the store holds with the journal's unfolded records laid over it.

A run ends without forcing a fold: its records stay in the journal (durable) and are folded in
batches. The planner of the next run still needs the latest run of its workflow and that run's
step rows; these functions read them from DuckDB without folding this process's own records and
lay its pending records over them (a pending record is a full row and always the newer one).
Every session folds the other processes' journal slots first, and a process forgets the records
another holder folded for it as soon as it holds the lease again, so DuckDB plus the pending
records is the whole truth.

The latest run of each workflow is also kept per process and refreshed by the records that pass
through; the cache is dropped whenever the lease changes hands (``Lease.grants``) or any journal
is folded (``Store.folds``), since until then every record this process wrote is still pending.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airun_nb.store.backend import Backend
from airun_nb.store.database import TABLES, Store
from airun_nb.store.fold import batch
from airun_nb.store.heads import epoch
from airun_nb.store.owner import owner_alive

_OWNER = ("owner_pid", "owner_host", "owner_token")
_RUN_COLUMNS = [c for c, _ in TABLES["runs"][0]]


def _as_rows(table: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Journal records in the shape DuckDB returns them (datetimes, bytes)."""
    if not records:
        return []
    rows: list[dict[str, Any]] = batch(table, records).to_pylist()
    return rows


def _pending(store: Store, kind: str) -> Iterable[dict[str, Any]]:
    return (r for r in store.journal.pending if r.get("t") == kind)


# A store without a journal (the server store) writes its tables as records come: what it holds
# is the whole truth, read with its named reads.


def run_row(store: Backend, run_id: str) -> dict[str, Any] | None:
    """The run's row (``SELECT *`` shape), pending records included."""
    if not isinstance(store, Store):
        return store.run_row(run_id)
    with store.session("reading a run", fold=False) as con:
        mine = [r for r in _pending(store, "run") if r.get("run_id") == run_id]
        if mine:
            return _as_rows("runs", mine[-1:])[0]
        cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        rows = cur.fetchall()  # fetched to the end: no unfinished result left on the connection
        if not rows:
            return None
        return dict(zip([d[0] for d in cur.description], rows[0], strict=True))


class _Latest:
    """Per store: the latest run of each workflow, valid for one grant of the lease."""

    def __init__(self) -> None:
        self.key = (-1, -1)
        self.rows: dict[str, dict[str, Any] | None] = {}


_latest: dict[str, _Latest] = {}


def latest_run(store: Backend, workflow: str) -> dict[str, Any] | None:
    """The newest run of ``workflow`` (by ``created_at``), pending records included."""
    if not isinstance(store, Store):
        rows = store.query_dicts(
            "SELECT * FROM runs WHERE workflow = ? ORDER BY created_at DESC LIMIT 1", [workflow]
        )
        return rows[0] if rows else None
    with store.session("planning a run", fold=False) as con:
        cache = _latest.setdefault(str(store.path), _Latest())
        key = (store.lease.grants, store.folds)
        if cache.key != key:
            cache.key = key
            cache.rows.clear()
        best = cache.rows.get(workflow) if workflow in cache.rows else _stored_latest(con, workflow)
        mine = [r for r in _pending(store, "run") if r.get("workflow") == workflow]
        if mine:
            newest = max(mine, key=lambda r: float(r.get("created_at") or 0.0))
            latest_mine = [r for r in mine if r["run_id"] == newest["run_id"]][-1]
            row = _as_rows("runs", [latest_mine])[0]
            if best is None or best["run_id"] == row["run_id"] or _after(row, best):
                best = row
        cache.rows[workflow] = best
        store.as_found = True  # its runs were read: what is kept beside it can be trusted
        store.heads.settle(workflow, best)  # the whole truth, under the lease
        return dict(best) if best is not None else None


def started_by_owner(store: Backend, row: dict[str, Any]) -> bool:
    """Was the run ``row`` started (not resumed) by the process that owns it now? Or is ``row``
    no longer the latest run of its workflow, the latest being finished or started by a live
    process that runs it now? (Either way a re-run cell starts a new run.)

    The heads folder is written as runs start and end: while other processes run the workflow,
    it may already name a newer run than the one read from the store a moment ago (their
    latest records appended after this process folded)."""
    if not isinstance(store, Store):  # no heads folder: a live owner's run is its own
        return True
    head = store.heads.raw(str(row["workflow"]))
    if head is None:
        return False
    if head.get("run_id") == row["run_id"]:
        return bool(head.get("fresh")) and all(head.get(k) == row.get(k) for k in _OWNER)
    if epoch(head.get("created_at")) < epoch(row.get("created_at")):
        return False
    return head.get("status") == "completed" or (
        bool(head.get("fresh"))
        and head.get("status") == "running"
        and head.get("owner_pid") is not None
        and owner_alive(head)
    )


def latest_head(store: Backend, workflow: str) -> dict[str, Any] | None:
    """The latest run of ``workflow`` as the heads folder tells it, without the lease (None:
    not known there; read it with :func:`latest_run`). Its ``steps`` (step id -> eff_hash,
    fingerprint) are there for a completed run started in a process that kept them."""
    if not isinstance(store, Store):
        return None
    return store.heads.read(workflow) if store.as_left() else None


def _after(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ka, kb = a.get("created_at"), b.get("created_at")
    if ka is None or kb is None:
        return kb is None
    return bool(ka >= kb)


def _stored_latest(con: Any, workflow: str) -> dict[str, Any] | None:
    cur = con.execute(
        "SELECT * FROM runs WHERE workflow = ? ORDER BY created_at DESC LIMIT 1", [workflow]
    )
    rows = cur.fetchall()  # fetched to the end: no unfinished result left on the connection
    if not rows:
        return None
    return dict(zip([d[0] for d in cur.description], rows[0], strict=True))


def step_rows(store: Backend, run_id: str, columns: str = "*") -> dict[str, dict[str, Any]]:
    """The run's step rows by step id (``columns`` as in a SELECT list), pending included."""
    if not isinstance(store, Store):
        stored = store.query_dicts(f"SELECT {columns} FROM steps WHERE run_id = ?", [run_id])
        return {r["step_id"]: r for r in stored}
    with store.session("planning a run", fold=False) as con:
        mine: dict[str, dict[str, Any]] = {}
        for rec in _pending(store, "step"):
            if rec.get("run_id") == run_id:
                mine[rec["step_id"]] = rec
        source = "steps"
        if mine:
            con.register("__airun_recent", batch("steps", list(mine.values())))
            source = """(SELECT * FROM steps WHERE run_id = $1
                           AND step_id NOT IN (SELECT step_id FROM __airun_recent)
                         UNION ALL BY NAME SELECT * FROM __airun_recent) AS steps"""
        try:
            cur = con.execute(f"SELECT {columns} FROM {source} WHERE run_id = $1", [run_id])
            names = [d[0] for d in cur.description]
            found = cur.fetchall()
        finally:
            if mine:
                con.unregister("__airun_recent")
        key = names.index("step_id")
        return {r[key]: dict(zip(names, r, strict=True)) for r in found}
