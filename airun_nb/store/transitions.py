"""State transitions: every status a run, a step, a gate or a compensation can have, which may
follow which, and the one writer that checks every state change against these tables.

Every record that changes a run, a step or a gate reaches the store through :func:`commit`. A
run's own ledger (:class:`airun_nb.engine.ledger.Ledger`) checks its transitions in memory as it
makes them and commits them as ``checked``; every other change (a cancel, a claim, a decision,
a repair by ``airun doctor``) is checked here against the row it replaces, read in the same
store session. A transition that is not in the tables raises :class:`TransitionError` before
anything is written, so an impossible history fails loudly and a refused action writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airun_nb.errors import AirunError

if TYPE_CHECKING:
    from airun_nb.store.backend import Backend

# Run statuses.
PENDING, RUNNING, WAITING, COMPLETED, FAILED, INTERRUPTED = (
    "pending",
    "running",
    "waiting",
    "completed",
    "failed",
    "interrupted",
)
ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED = "rolling_back", "rolled_back", "rollback_failed"
CANCELLED = "cancelled"
QUEUED = "queued"  # submitted to a queue: a worker starts it (see store/queue.py)
RUN_STATUSES = (
    PENDING,
    RUNNING,
    WAITING,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    ROLLING_BACK,
    ROLLED_BACK,
    ROLLBACK_FAILED,
    CANCELLED,
    QUEUED,
)
RESUMABLE = {PENDING, RUNNING, WAITING, FAILED, INTERRUPTED}
TERMINAL = {COMPLETED, ROLLED_BACK, ROLLBACK_FAILED, CANCELLED}
UNFINISHED = tuple(s for s in RUN_STATUSES if s not in {COMPLETED, ROLLED_BACK, CANCELLED})

# Step statuses.
S_PENDING, S_RUNNING, S_COMPLETED, S_FAILED, S_SKIPPED = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
)
S_INTERRUPTED, S_WAITING, S_CANCELLED = "interrupted", "waiting", "cancelled"
STEP_STATUSES = (
    S_PENDING,
    S_RUNNING,
    S_COMPLETED,
    S_FAILED,
    S_SKIPPED,
    S_INTERRUPTED,
    S_WAITING,
    S_CANCELLED,
)
DONE_STEP = {S_COMPLETED, S_SKIPPED}

# Gate statuses.
G_OPEN, G_APPROVED, G_REJECTED, G_EXPIRED, G_CANCELLED = (
    "open",
    "approved",
    "rejected",
    "expired",
    "cancelled",
)
GATE_STATUSES = (G_OPEN, G_APPROVED, G_REJECTED, G_EXPIRED, G_CANCELLED)

# Which run status may follow which. A run (re)starts as running from any unfinished status, a
# rollback may start from any status but rolled_back and cancelled (and may fail before its first
# compensation: rollback_failed), and a run nobody wants any more ends cancelled (with or without
# a rollback first).
# What may follow a run that is under way (running, or waiting at a gate).
_UNDER_WAY = {
    RUNNING,
    WAITING,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    ROLLING_BACK,
    CANCELLED,
    ROLLBACK_FAILED,
}
RUN_TRANSITIONS: dict[str, set[str]] = {
    # (queued -> failed: a worker could not start it, say its code was missing)
    QUEUED: {RUNNING, CANCELLED, FAILED},
    # (pending -> failed / rollback_failed: an error before the run got going is recorded too)
    PENDING: {RUNNING, ROLLING_BACK, CANCELLED, FAILED, ROLLBACK_FAILED},
    # running -> cancelled: a run whose process died (a live owner is refused before this)
    RUNNING: set(_UNDER_WAY),
    WAITING: set(_UNDER_WAY),
    FAILED: {RUNNING, ROLLING_BACK, CANCELLED, ROLLBACK_FAILED},
    INTERRUPTED: {RUNNING, ROLLING_BACK, CANCELLED, ROLLBACK_FAILED},
    COMPLETED: {RUNNING, ROLLING_BACK, ROLLBACK_FAILED},
    # (completed: the last N steps of a completed run were undone, `rollback --steps N`)
    ROLLING_BACK: {ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED, INTERRUPTED, COMPLETED},
    ROLLBACK_FAILED: {ROLLING_BACK},
    ROLLED_BACK: {CANCELLED},  # a cancel with rollback ends the run it undid as cancelled
    CANCELLED: set(),
}
# Which step status may follow which (a step that runs again is first reset to pending).
STEP_TRANSITIONS: dict[str, set[str]] = {
    S_PENDING: {S_PENDING, S_RUNNING, S_SKIPPED, S_FAILED, S_WAITING, S_COMPLETED, S_CANCELLED},
    S_RUNNING: {S_RUNNING, S_COMPLETED, S_FAILED, S_INTERRUPTED, S_PENDING, S_CANCELLED},
    S_WAITING: {
        S_WAITING,
        S_RUNNING,
        S_COMPLETED,
        S_FAILED,
        S_INTERRUPTED,
        S_PENDING,
        S_CANCELLED,
    },
    S_FAILED: {S_PENDING, S_FAILED},
    S_INTERRUPTED: {S_PENDING, S_INTERRUPTED},
    S_COMPLETED: {S_PENDING},
    S_SKIPPED: {S_PENDING},
    S_CANCELLED: set(),
}
# A gate: open until decided, expired or cancelled; a gate closed only for want of a policy
# decision (expired) opens again when the run comes back to it.
GATE_TRANSITIONS: dict[str, set[str]] = {
    G_OPEN: {G_OPEN, G_APPROVED, G_REJECTED, G_EXPIRED, G_CANCELLED},
    G_EXPIRED: {G_OPEN},
    G_APPROVED: set(),
    G_REJECTED: set(),
    G_CANCELLED: set(),
}
# A run's place in a queue (store/queue.py): queued until a worker claims it; a claim ends done
# or failed, is parked while the run waits at a gate (claimed again once its gates are decided),
# or handed back (queued) by a worker that stops; the claim of a worker that died is taken over
# (claimed -> claimed); a queued run that is cancelled leaves the queue (done).
Q_QUEUED, Q_CLAIMED, Q_PARKED, Q_DONE, Q_FAILED = "queued", "claimed", "parked", "done", "failed"
QUEUE_TRANSITIONS: dict[str, set[str]] = {
    Q_QUEUED: {Q_CLAIMED, Q_DONE},
    Q_CLAIMED: {Q_CLAIMED, Q_QUEUED, Q_PARKED, Q_DONE, Q_FAILED},
    Q_PARKED: {Q_CLAIMED, Q_DONE},
    Q_DONE: set(),
    Q_FAILED: set(),
}
# A compensation: none yet -> running -> done | failed (failed may run again).
COMP_TRANSITIONS: dict[str | None, set[str]] = {
    None: {"running", "none", "failed"},
    "running": {"running", "done", "failed"},
    "failed": {"running", "failed"},
    "none": set(),
    "done": set(),
}


class TransitionError(AirunError):
    """A run, a step or a gate was asked to move to a status that cannot follow its current one."""


def check_run(old: str, new: str, run_id: str) -> None:
    if new not in RUN_TRANSITIONS.get(old, set()):
        raise TransitionError(f"run {run_id}: cannot go from {old} to {new}")


def check_step(old: str, new: str, step_id: str) -> None:
    if new not in STEP_TRANSITIONS.get(old, set()):
        raise TransitionError(f"step '{step_id}': cannot go from {old} to {new}")


def check_gate(old: str, new: str, gate_id: str) -> None:
    if new not in GATE_TRANSITIONS.get(old, set()):
        raise TransitionError(f"gate '{gate_id}': cannot go from {old} to {new}")


def check_queue(old: str, new: str, run_id: str) -> None:
    if new not in QUEUE_TRANSITIONS.get(old, set()):
        raise TransitionError(f"run {run_id}: its queue entry cannot go from {old} to {new}")


def check_compensation(old: str | None, new: str, step_id: str) -> None:
    if new not in COMP_TRANSITIONS.get(old, set()):
        raise TransitionError(f"step '{step_id}': its compensation cannot go from {old} to {new}")


def commit(store: Backend, records: Sequence[dict[str, Any]], *, checked: bool = False) -> None:
    """Write ``records`` as one journal append, after checking every state change in them.

    ``checked`` says the caller (a run's ledger) already checked each run and step transition
    against the state it holds in memory. Every other transition (all of them when not
    ``checked``, and gate records always) is checked against the row it replaces, as the store
    holds it now (call inside the store session that read it); a new row may start in any
    status. Nothing is written when one check fails.
    """
    _check(store, records, gates_only=checked)
    store.record_many(records)


def claim_queued(
    store: Backend, queues: Sequence[str], limit: int, holder: dict[str, Any]
) -> list[str]:
    """A server store's claim of up to ``limit`` queued runs of ``queues`` for ``holder`` (the
    worker columns): one statement that moves rows from ``queued`` to ``claimed`` under their
    row locks, skipping rows another worker holds (no writer lock). The statement changes only
    rows it reads in the old state under their lock, so the check against
    :data:`QUEUE_TRANSITIONS` made here holds for every row it changes. The claimed run ids."""
    check_queue(Q_QUEUED, Q_CLAIMED, "(a queued run)")
    return store.claim_queue_rows(queues, limit, Q_QUEUED, Q_CLAIMED, holder)


def end_claim(store: Backend, run_id: str, changes: dict[str, Any], holder: dict[str, Any]) -> bool:
    """A server store's worker ends its own claim on ``run_id`` (``changes`` holds the new
    ``state``): one conditional ``UPDATE`` that changes the row only while it is claimed by
    ``holder``, checked here against :data:`QUEUE_TRANSITIONS` (False: the claim is no longer
    this worker's; nothing changed)."""
    check_queue(Q_CLAIMED, str(changes["state"]), run_id)
    return store.move_queue_row(run_id, Q_CLAIMED, str(changes["state"]), holder, changes)


def _check(store: Backend, records: Sequence[dict[str, Any]], *, gates_only: bool) -> None:
    runs: dict[str, str | None] = {}
    steps: dict[tuple[str, str], str | None] = {}
    gates: dict[tuple[str, str], str | None] = {}
    queued: dict[str, str | None] = {}
    for rec in records:
        kind, new = rec.get("t"), rec.get("status")
        if kind == "queue":
            run_id = str(rec["run_id"])
            if run_id not in queued:
                entry = store.queue_row(run_id)
                queued[run_id] = None if entry is None else str(entry["state"])
            old = queued[run_id]
            if old is not None:
                check_queue(old, str(rec["state"]), run_id)
            queued[run_id] = str(rec["state"])
            continue
        if new is None or (gates_only and kind != "gate"):
            continue
        if kind == "run":
            run_id = str(rec["run_id"])
            if run_id not in runs:
                row = store.run_row(run_id)
                runs[run_id] = None if row is None else str(row["status"])
            old = runs[run_id]
            if old is not None:
                check_run(old, str(new), run_id)
            runs[run_id] = str(new)
        elif kind == "step":
            key = (str(rec["run_id"]), str(rec["step_id"]))
            if key not in steps:
                found = [r for r in store.step_rows(key[0]) if r["step_id"] == key[1]]
                steps[key] = str(found[0]["status"]) if found else None
            old = steps[key]
            if old is not None:
                check_step(old, str(new), key[1])
            steps[key] = str(new)
        elif kind == "gate":
            key = (str(rec["run_id"]), str(rec["gate_id"]))
            if key not in gates:
                row = store.gate_row(*key)
                gates[key] = None if row is None else str(row["status"])
            old = gates[key]
            if old is not None:
                check_gate(old, str(new), key[1])
            gates[key] = str(new)
