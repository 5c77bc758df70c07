"""Queues: runs submitted to a named queue and the workers that claim them.

``airun submit`` writes a run in status ``queued`` and its row in the ``queue`` table; an
``airun worker`` claims rows of the queues it serves and runs them. A row goes::

    queued -> claimed -> done | failed          (the run ended, or could not start)
                      -> parked -> claimed      (the run waits at a gate; claimed again once
                                                 every gate it stopped at is decided)
                      -> queued                 (a stopping worker handed it back)
              claimed -> claimed                (the worker died: another takes its claim over)

Every change goes through :func:`~airun_nb.store.transitions.commit` (the one writer), which
checks it against :data:`~airun_nb.store.transitions.QUEUE_TRANSITIONS`.

On the DuckDB file a claim is one hold of the store's exclusive lease: the session folds every
process's journal first, so the claim reads every earlier claim, and journals its own before
the lease can change hands; two workers never claim the same run. A server database
(``row_locks``) makes the same guarantee with row locks and without its writer lock: queued
runs are claimed by one statement (:data:`CLAIM_SQL_POSTGRES`) that skips the rows another
worker is claiming right now, and a worker ends its own claim with a conditional ``UPDATE``
(:data:`END_CLAIM_SQL_POSTGRES`); both are issued by :mod:`~airun_nb.store.transitions`, which
checks the change against ``QUEUE_TRANSITIONS``. Only the rarer claims that need a look at
other processes (a dead worker's claim, a parked run whose gates are decided, a run adopted
from a kernel that is gone) are made under the writer lock, as on the file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airun_nb.store import owner, transitions
from airun_nb.store.transitions import Q_CLAIMED, Q_DONE, Q_FAILED, Q_PARKED, Q_QUEUED

DEFAULT_QUEUE = "default"
SOURCE_PREFIX = "queue:"  # a submitted run's ``source``: the queue whose workers run it
QUEUE_COLUMNS = (
    "run_id",
    "queue",
    "state",
    "enqueued_at",
    "claimed_at",
    "finished_at",
    "worker",
    "worker_pid",
    "worker_host",
    "worker_token",
    "claims",
    "trust_code",
    "error",
)

# The claim on PostgreSQL: one statement, row locks instead of the file lease. Rows another
# worker is claiming right now are skipped, not waited for, so workers never block each other
# and never take the same run; only rows read in state ``queued`` under their lock change.
# (The rows are picked in a materialized CTE: as a plain ``IN (SELECT ... LIMIT n)`` the
# planner may run the subquery more than once and claim more than ``n`` rows.)
CLAIM_SQL_POSTGRES = """
WITH picked AS MATERIALIZED (
       SELECT run_id FROM queue
        WHERE queue = ANY(%(queues)s) AND state = %(from)s
        ORDER BY enqueued_at, run_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
UPDATE queue
   SET state = %(to)s, worker = %(worker)s, worker_pid = %(worker_pid)s,
       worker_host = %(worker_host)s, worker_token = %(worker_token)s,
       claimed_at = now() AT TIME ZONE 'utc', claims = coalesce(claims, 0) + 1, error = NULL
  FROM picked
 WHERE queue.run_id = picked.run_id AND queue.state = %(from)s
RETURNING queue.run_id, queue.enqueued_at
"""
# A worker ends its own claim: the row changes only while it is still claimed by this worker
# (a claim another worker took over in the meantime is left alone).
END_CLAIM_SQL_POSTGRES = """
UPDATE queue
   SET state = %(to)s, finished_at = %(finished_at)s, error = %(error)s,
       worker = CASE WHEN %(clear)s THEN NULL ELSE worker END,
       worker_pid = CASE WHEN %(clear)s THEN NULL ELSE worker_pid END,
       worker_token = CASE WHEN %(clear)s THEN NULL ELSE worker_token END
 WHERE run_id = %(run_id)s AND state = %(from)s AND worker_host = %(worker_host)s
   AND worker_pid = %(worker_pid)s AND worker_token = %(worker_token)s
RETURNING run_id
"""


def queue_of(source: Any) -> str | None:
    """The queue a run was submitted to, from its ``source`` (None: not a submitted run)."""
    if isinstance(source, str) and source.startswith(SOURCE_PREFIX):
        return source[len(SOURCE_PREFIX) :]
    return None


def continued_by(source: Any) -> str | None:
    """Who continues a submitted run once its gates are decided (None: not a submitted run)."""
    queue = queue_of(source)
    if queue is None:
        return None
    flag = "" if queue == DEFAULT_QUEUE else f" --queue {queue}"
    return f"a worker serving queue {queue} continues it (`airun worker{flag}`)"


def queue_record(row: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A full ``queue`` journal record: ``row`` (a record or a row read back) with ``changes``."""
    rec: dict[str, Any] = {"t": "queue"}
    for col in QUEUE_COLUMNS:
        value = changes[col] if col in changes else row.get(col)
        if col in ("enqueued_at", "claimed_at", "finished_at") and value is not None:
            value = _epoch(value)
        rec[col] = value
    return rec


class QueueStore:
    """The queue's reads and writes; mixed into the store handle (needs ``session`` and the
    named reads of :class:`~airun_nb.store.queries.Queries`)."""

    # A server store claims with row locks, without its writer lock (see the module's text).
    row_locks = False

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def claim_queue_rows(
        self, queues: Sequence[str], limit: int, old: str, new: str, holder: Mapping[str, Any]
    ) -> list[str]:
        raise NotImplementedError("only a store with row locks claims this way")

    def move_queue_row(
        self, run_id: str, old: str, new: str, holder: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> bool:
        raise NotImplementedError("only a store with row locks ends a claim this way")

    def hold_worker(self) -> None:
        """Say, for other hosts to see, that this process serves queues (a server store holds
        a lock for it; on the file, a worker's pid on this host says it)."""

    def worker_alive(self, worker: Mapping[str, Any]) -> bool:
        """Is the worker process that holds a claim alive? (``owner_*`` keys: its pid, host
        and token.)"""
        return _worker_alive(worker)

    # -- reads -----------------------------------------------------------------------------
    def queue_row(self, run_id: str) -> dict[str, Any] | None:
        """The queue row of ``run_id`` (None: the run was never submitted to a queue)."""
        rows = self.query_dicts("SELECT * FROM queue WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def queue_rows(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Every queue row (of ``queue``), oldest first."""
        where, params = ("WHERE queue = ?", [queue]) if queue else ("", [])
        return self.query_dicts(
            f"SELECT * FROM queue {where} ORDER BY enqueued_at, run_id", list(params)
        )

    # -- writes ----------------------------------------------------------------------------
    def enqueue(
        self,
        run_id: str,
        queue: str = DEFAULT_QUEUE,
        *,
        records: Sequence[dict[str, Any]] = (),
        trust_code: bool = False,
    ) -> None:
        """Put ``run_id`` on ``queue``, in one journal append with ``records`` (the queued run's
        spec and run row), so a run is never half-submitted. ``trust_code``: its submitter
        stored the run's notebook functions and lets the worker load them."""
        row = {"run_id": run_id, "queue": queue, "state": Q_QUEUED, "enqueued_at": time.time()}
        row |= {"claims": 0, "trust_code": trust_code}
        transitions.commit(self, [*records, queue_record(row)])  # type: ignore[arg-type]

    def claim_queued(self, queues: Sequence[str], worker: str, limit: int) -> list[str]:
        """Claim up to ``limit`` runs of ``queues`` for ``worker`` (this process): queued runs,
        oldest first, then parked runs whose gates are all decided, and runs whose worker
        died. Returns their ids; no run is ever claimed by two workers at once."""
        if limit < 1 or not queues:
            return []
        if not self.row_locks:
            return self._claim_by_reading(queues, worker, limit, (Q_QUEUED, Q_CLAIMED, Q_PARKED))
        # A server store: queued runs with row locks, no writer lock (the common case); the
        # rest by reading under the writer lock (queued rows are left to the row-lock claim).
        self.hold_worker()  # before its first claim: a claim of a dead worker is taken over
        got = transitions.claim_queued(self, list(queues), limit, _holder(worker))  # type: ignore[arg-type]
        if len(got) < limit:
            got += self._claim_by_reading(queues, worker, limit - len(got), (Q_CLAIMED, Q_PARKED))
        return got

    def _claim_by_reading(
        self, queues: Sequence[str], worker: str, limit: int, states: Sequence[str]
    ) -> list[str]:
        """The claim made in one hold of the store (the file's lease, a server's writer lock):
        read the rows of ``states``, choose the claimable ones, commit their claims."""
        marks = ", ".join("?" for _ in queues)
        kinds = ", ".join(f"'{s}'" for s in states)
        with self.session(f"claiming queued runs for {worker}"):  # type: ignore[attr-defined]
            rows = self.query_dicts(
                f"""SELECT q.*, r.status AS run_status, r.owner_pid, r.owner_host,
                           r.owner_token,
                           (SELECT count(*) FROM approvals a
                             WHERE a.run_id = q.run_id AND a.status = 'open') AS open_gates
                    FROM queue q LEFT JOIN runs r USING (run_id)
                    WHERE q.queue IN ({marks}) AND q.state IN ({kinds})
                    ORDER BY q.enqueued_at, q.run_id""",
                list(queues),
            )
            alive = self.owner_alive  # type: ignore[attr-defined]
            chosen = [r for r in rows if _claimable(r, alive, self.worker_alive)][:limit]
            if len(chosen) < limit and DEFAULT_QUEUE in queues:
                chosen += self._orphans()[: limit - len(chosen)]
            if not chosen:
                return []
            now = time.time()
            recs = [
                queue_record(
                    r,
                    state=Q_CLAIMED,
                    claimed_at=now,
                    claims=int(r.get("claims") or 0) + 1,
                    error=None,
                    **_holder(worker),
                )
                for r in chosen
            ]
            transitions.commit(self, recs)  # type: ignore[arg-type]  # same lease hold
        return [str(r["run_id"]) for r in chosen]

    def _orphans(self) -> list[dict[str, Any]]:
        """Runs launched outside a queue (a notebook, a script) that wait at gates all of
        which are decided, whose launching process is gone: the default queue adopts them, so
        a decision taken after the kernel went away is carried out by a worker."""
        rows = self.query_dicts(
            """SELECT r.run_id, r.owner_pid, r.owner_host, r.owner_token, r.created_at
               FROM runs r JOIN approvals a USING (run_id)
               WHERE r.status = 'waiting'
                 AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.run_id = r.run_id)
               GROUP BY r.run_id, r.owner_pid, r.owner_host, r.owner_token, r.created_at
               HAVING bool_and(a.status <> 'open')
               ORDER BY r.created_at, r.run_id"""
        )
        now = time.time()
        return [
            {"run_id": r["run_id"], "queue": DEFAULT_QUEUE, "enqueued_at": now, "claims": 0}
            for r in rows
            if not owner.owner_alive(r)
        ]

    def end_claim(self, run_id: str, state: str, *, error: str | None = None) -> None:
        """This worker lets go of its claim on ``run_id``: ``done`` or ``failed`` (the run
        ended, or could not start: ``error`` says why), ``parked`` (it waits at a gate) or
        ``queued`` (handed back for another worker). A claim another worker took over in the
        meantime is left alone."""
        ended = time.time() if state in (Q_DONE, Q_FAILED) else None
        changes: dict[str, Any] = {"state": state, "finished_at": ended, "error": error}
        if state == Q_QUEUED:
            changes |= {"worker": None, "worker_pid": None, "worker_token": None}
        if self.row_locks:  # one conditional UPDATE: no writer lock
            transitions.end_claim(self, run_id, changes, _holder(None))  # type: ignore[arg-type]
            return
        with self.session(f"ending the claim on run {run_id}"):  # type: ignore[attr-defined]
            row = self.queue_row(run_id)
            if row is None or row["state"] != Q_CLAIMED or not _is_mine(row):
                return
            transitions.commit(self, [queue_record(row, **changes)])  # type: ignore[arg-type]


def _holder(worker: str | None) -> dict[str, Any]:
    """The queue columns that name this process as a claim's holder."""
    return {
        "worker": worker,
        "worker_pid": owner.owner_fields()["owner_pid"],
        "worker_host": owner.HOST,
        "worker_token": owner.MY_TOKEN,
    }


def _claimable(
    r: Mapping[str, Any],
    owner_alive: Callable[[Mapping[str, Any]], bool],
    worker_alive: Callable[[Mapping[str, Any]], bool],
) -> bool:
    state, run_status = r["state"], r.get("run_status")
    run_owner = {"owner_pid": r.get("owner_pid"), "owner_host": r.get("owner_host")}
    run_owner |= {"owner_token": r.get("owner_token"), "run_id": r["run_id"]}
    if run_status in ("running", "rolling_back") and owner_alive(run_owner):
        return False  # executing in a live process right now (a kernel resumed it, say)
    if state == Q_QUEUED:
        return True
    if state == Q_PARKED:  # waiting at a gate: claimable once no gate of it is open
        return run_status != "waiting" or not int(r.get("open_gates") or 0)
    # claimed: only when the worker that holds it is gone
    worker = {"owner_pid": r.get("worker_pid"), "owner_host": r.get("worker_host")}
    worker |= {"owner_token": r.get("worker_token"), "run_id": r["run_id"]}
    return not worker_alive(worker)


def _worker_alive(worker: Mapping[str, Any]) -> bool:
    """Is the worker process that holds a claim alive? (This process: it is.)"""
    if worker.get("owner_host") == owner.HOST and worker.get("owner_pid") == owner.os.getpid():
        return worker.get("owner_token") == owner.MY_TOKEN
    return owner.owner_alive(worker)


def _is_mine(row: Mapping[str, Any]) -> bool:
    return (
        row.get("worker_host") == owner.HOST
        and row.get("worker_pid") == owner.os.getpid()
        and row.get("worker_token") == owner.MY_TOKEN
    )


def _epoch(value: Any) -> float:
    from datetime import datetime

    if isinstance(value, datetime):
        return (value.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
    return float(value)
