"""Cancelling a run: ending a run nobody wants any more as ``cancelled``.

A run that waits at a gate, failed, or was interrupted (or whose process died) can be cancelled
from any channel. Its open gates close as ``cancelled`` in the same write as the run's new status,
so a decision racing the cancel either lands first (and the cancel still ends the run) or is
refused. With ``rollback=True`` the run's finished steps are undone through their compensations
first; the run ends ``cancelled`` only when that rollback finished. A run executing right now in a
live process is refused, like a second resume would be. Every cancel writes an event and an
audit row naming who cancelled it and through which channel.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airun_nb.engine.claim import busy_message
from airun_nb.errors import AirunError, RunBusy, RunNotFound
from airun_nb.governance import audit as auditlog
from airun_nb.governance import identity
from airun_nb.store import transitions
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store
from airun_nb.store.owner import owner_fields
from airun_nb.store.queue import queue_record

CANCELLED = "cancelled"
# Statuses a run may be cancelled from ("running" only when its process is gone).
CANCELLABLE = ("queued", "pending", "waiting", "failed", "interrupted", "running")
_EXECUTING = ("running", "rolling_back")


class CancelError(AirunError):
    """The run cannot be cancelled (it finished, or is already cancelled)."""


def cancel(
    run_id: str,
    *,
    rollback: bool = False,
    by: str | None = None,
    channel: str = "api",
    comment: str | None = None,
    db: str | os.PathLike[str] | None = None,
    namespace: Mapping[str, Any] | None = None,
    authenticated: bool = False,
) -> dict[str, Any]:
    """End a waiting, failed or interrupted run as ``cancelled``; return what was done.

    ``rollback=True`` first undoes its finished steps (``namespace`` resolves compensations that
    call notebook functions). ``by`` is who cancels: by default this process's identity; another
    name needs the same delegation right as deciding a gate for someone else. A front end that
    authenticated the person itself (the approval service) passes ``authenticated=True``.
    ``channel`` says how (``cli``, ``api``, ``web``, ``dashboard``, ``widget``).
    """
    store = open_store(db)
    actor = by if (authenticated and by) else identity.acting_as(by)
    if rollback:
        from airun_nb.engine.runner import stored_spec

        stored_spec(store, run_id)  # refuse before changing anything
    with store.session("cancelling a run"):
        row = _cancellable(store, run_id)
        previous = str(row["status"])
        gates = _open_gates(store, run_id)
        if not rollback:
            recs = _gate_records(store, run_id, gates, actor, channel)
            recs += _step_records(store, run_id)
            recs += _final_records(row, previous, actor, channel, comment, rolled_back=False)
            transitions.commit(store, recs + _off_the_queue(store, run_id))
            return _summary(run_id, previous, gates, actor, channel, rolled_back=False)
        # Close the gates first: no decision can continue the run while it is being undone.
        # The cancel takes the run over from an idle owner, so the rollback may run here.
        recs = _gate_records(store, run_id, gates, actor, channel)
        recs += _step_records(store, run_id)
        taken = _as_record("run", row)
        taken.update(owner_fields(), updated_at=time.time())
        recs.append(taken)
        recs.append(_event(run_id, None, "run_cancel_started", by=actor, channel=channel))
        transitions.commit(store, recs)
    from airun_nb.engine.runner import roll_back

    roll_back(store, run_id, namespace=namespace)
    with store.session("cancelling a run"):
        found = store.run_row(run_id)
        assert found is not None
        transitions.commit(
            store,
            _final_records(found, previous, actor, channel, comment, rolled_back=True)
            + _off_the_queue(store, run_id),
        )
    return _summary(run_id, previous, gates, actor, channel, rolled_back=True)


def _cancellable(store: Backend, run_id: str) -> dict[str, Any]:
    row = store.run_row(run_id)
    if row is None:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    status = str(row["status"])
    if status in _EXECUTING and store.owner_alive(row):
        raise RunBusy(busy_message(row))
    if status == CANCELLED:
        raise CancelError(f"run {run_id} is already cancelled")
    if status not in CANCELLABLE:
        raise CancelError(
            f"run {run_id} is {status} and cannot be cancelled (only a queued, waiting, failed "
            "or interrupted run can)"
            + ("; finish its rollback with `airun rollback`" if status == "rollback_failed" else "")
        )
    return row


def _open_gates(store: Backend, run_id: str) -> list[dict[str, Any]]:
    return store.open_gates(run_id)


def _gate_records(
    store: Backend, run_id: str, gates: list[dict[str, Any]], actor: str, channel: str
) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    now = time.time()
    for g in gates:
        rec = _as_record("gate", g)
        rec.update(
            status=CANCELLED,
            decision=None,
            actor=actor,
            channel=channel,
            comment="the run was cancelled",
            decided_at=now,
        )
        recs.append(rec)
        recs.append(_event(run_id, g["gate_id"], "gate_cancelled", by=actor, channel=channel))
    return recs


def _step_records(store: Backend, run_id: str) -> list[dict[str, Any]]:
    """Steps still shown as waiting (gates) or running (a dead process) become ``cancelled``."""
    rows = store.step_rows(run_id, "waiting", "running")
    recs = []
    for r in rows:
        rec = _as_record("step", r)
        rec.update(status=CANCELLED, finished_at=time.time())
        recs.append(rec)
    return recs


def _off_the_queue(store: Backend, run_id: str) -> list[dict[str, Any]]:
    """A submitted run that is cancelled leaves its queue: no worker takes it any more."""
    row = store.queue_row(run_id)
    if row is None or row["state"] in ("done", "failed"):
        return []
    return [queue_record(row, state="done", finished_at=time.time(), error="cancelled")]


def _final_records(
    row: Mapping[str, Any],
    previous: str,
    actor: str,
    channel: str,
    comment: str | None,
    *,
    rolled_back: bool,
) -> list[dict[str, Any]]:
    now = time.time()
    run = _as_record("run", row)
    run.update(owner_fields(), status=CANCELLED, finished_at=now, updated_at=now)
    run_id = str(row["run_id"])
    detail = {"by": actor, "channel": channel, "previous": previous, "rolled_back": rolled_back}
    if comment:
        detail["comment"] = comment
    return [
        run,
        _event(run_id, None, "run_cancelled", **detail),
        auditlog.row(
            kind="human",
            principal=actor,
            run_id=run_id,
            step_id=None,
            capability="cancel",
            decision="cancelled",
            arguments={"channel": channel, "rollback": rolled_back, "comment": comment},
            result=f"{previous} -> {CANCELLED}",
        ),
    ]


def _summary(
    run_id: str,
    previous: str,
    gates: list[dict[str, Any]],
    actor: str,
    channel: str,
    *,
    rolled_back: bool,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": CANCELLED,
        "previous": previous,
        "gates_closed": [str(g["gate_id"]) for g in gates],
        "rolled_back": rolled_back,
        "by": actor,
        "channel": channel,
    }


def describe(summary: Mapping[str, Any]) -> str:
    """One line for a person: what the cancel did."""
    gates = summary["gates_closed"]
    closed = f"; closed gate {', '.join(gates)}" if gates else ""
    undone = " after rolling it back" if summary["rolled_back"] else ""
    return (
        f"cancelled run {summary['run_id']} (was {summary['previous']}){undone}{closed}, "
        f"as {summary['by']} via {summary['channel']}"
    )


def _as_record(kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the journal record that would write it back unchanged."""
    rec: dict[str, Any] = {"t": kind}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.replace(tzinfo=timezone.utc).timestamp()
        elif isinstance(value, (bytes, bytearray, memoryview)):
            value = base64.b64encode(bytes(value)).decode()
        rec[key] = value
    return rec


def _event(run_id: str, step_id: str | None, kind: str, **detail: Any) -> dict[str, Any]:
    return {
        "t": "ev",
        "ts": time.time(),
        "run_id": run_id,
        "step_id": step_id,
        "kind": kind,
        "detail": json.dumps(detail, default=str) if detail else None,
    }
