"""Approval gates: durable human decisions, from any channel, first decision wins.

A gate is a step whose output is the decision (``decision``, ``actor``, ``channel``,
``comment``, ``decided_at``). Its row in the ``approvals`` table is written when the gate opens,
with the deadline fixed then (a restart does not extend it), and takes exactly one decision:
the check and the write happen while holding the store's exclusive lease, so a double click, the
CLI racing a button, or a replay can never record two. Who may decide is checked against the
gate's ``approvers`` (user names and ``role:NAME``) and four-eyes (:func:`four_eyes`); changed
settings of an open gate apply when its cell runs again. Decisions by policy or timeout are the
runtime's own and skip those checks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airun_nb.governance import audit as auditlog
from airun_nb.governance import identity
from airun_nb.settings import clock as processclock
from airun_nb.settings import file as settings
from airun_nb.settings.environment import current as settings_now
from airun_nb.spec import limits
from airun_nb.spec.approval import (
    MODES,
    ON_TIMEOUT,
    AlreadyDecided,
    ApprovalError,
    GateConfig,
    parse_config,
)
from airun_nb.store import transitions
from airun_nb.store.database import Store

__all__ = [
    "ON_TIMEOUT",
    "AlreadyDecided",
    "ApprovalError",
    "GateConfig",
    "parse_config",
]


APPROVE, REJECT = "approve", "reject"
CHANNELS = ("widget", "cli", "api", "web", "dashboard", "policy", "timeout")


def resolve_mode(config: GateConfig) -> str:
    """``mode:`` on the gate, else ``AIRUN_APPROVAL_MODE``, else policy if ``AIRUN_APPROVAL``
    is set (headless runs and CI), else ``suspend``."""
    if config.mode:
        return config.mode
    env = settings_now().approval_mode
    if env in MODES:
        return env
    if settings_now().approval or _policy_settings():
        return "policy"
    return "suspend"


def _policy_settings() -> dict[str, Any]:
    raw = settings.load().get("approvals") or {}
    return raw if isinstance(raw, dict) else {}


def policy_decision(workflow: str, gate_id: str) -> tuple[str, str] | None:
    """(decision, source) from ``AIRUN_APPROVAL`` or the settings' ``approvals:`` mapping.

    ``AIRUN_APPROVAL`` is ``approve`` or ``reject`` (every gate), or ``gate=approve,other=reject``.
    The settings may say ``approvals: {default: approve, gates: {review: reject}}``.
    """
    env = (settings_now().approval or "").strip()
    if env:
        if env in (APPROVE, REJECT):
            return env, "AIRUN_APPROVAL"
        for part in env.split(","):
            key, _, value = part.partition("=")
            if key.strip() in (gate_id, f"{workflow}.{gate_id}") and value.strip() in (
                APPROVE,
                REJECT,
            ):
                return value.strip(), "AIRUN_APPROVAL"
    conf = _policy_settings()
    gates = conf.get("gates") or {}
    for key in (f"{workflow}.{gate_id}", gate_id):
        if gates.get(key) in (APPROVE, REJECT):
            return str(gates[key]), "settings"
    if conf.get("default") in (APPROVE, REJECT):
        return str(conf["default"]), "settings"
    return None


# -- who may decide --------------------------------------------------------------------------
def expand_approvers(approvers: list[str] | None) -> tuple[set[str], list[str]]:
    """(user names allowed, readable description) for a gate's ``approvers`` list."""
    if not approvers:
        return set(), []
    from airun_nb.governance.policy import all_roles

    table = all_roles()
    users: set[str] = set()
    shown: list[str] = []
    for entry in approvers:
        if entry.startswith("role:"):
            role = entry[5:]
            members = table.get(role)
            if members is None:
                shown.append(f"{entry} (no such role)")
                continue
            users.update(members)
            shown.append(f"{entry} ({', '.join(members) or 'nobody'})")
        else:
            users.add(entry)
            shown.append(entry)
    return users, shown


def four_eyes(row: Mapping[str, Any]) -> bool:
    """Does the gate refuse its launcher? Yes when it names approvers, says ``four_eyes:
    true``, or a policy rule inserted it; a gate with neither may be decided by anyone."""
    return bool(row.get("four_eyes")) or bool(row.get("approvers"))


def check_actor(row: Mapping[str, Any], actor: str) -> None:
    """Refuse (raise :class:`ApprovalError`) a user who may not decide this gate."""
    approvers = json.loads(row["approvers"]) if row.get("approvers") else None
    where = f"gate '{row['gate_id']}' of run {row['run_id']}"
    if approvers:
        users, shown = expand_approvers(approvers)
        if actor not in users:
            raise ApprovalError(f"{actor} may not decide {where}: approvers are {'; '.join(shown)}")
    if actor == row.get("launched_by") and four_eyes(row) and not row.get("allow_self_approval"):
        raise ApprovalError(
            f"{actor} started run {row['run_id']} and may not also decide its {where.split(' of')[0]} "
            "(four-eyes); ask another approver, or set allow_self_approval: true on the gate"
        )


_SETTINGS = ("approvers", "allow_self_approval", "four_eyes", "on_timeout")


def _settings(config: GateConfig) -> dict[str, Any]:
    return {
        "approvers": json.dumps(config.approvers) if config.approvers else None,
        "allow_self_approval": config.allow_self_approval,
        "four_eyes": config.four_eyes or bool(config.approvers),
        "on_timeout": config.on_timeout,
    }


# -- the durable record ----------------------------------------------------------------------
def gate_row(store: Store, run_id: str, gate_id: str) -> dict[str, Any] | None:
    return store.gate_row(run_id, gate_id)


def _record(row: Mapping[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"t": "gate"}
    for key, value in row.items():
        rec[key] = _epoch(value) if isinstance(value, datetime) else value
    return rec


def _epoch(value: datetime) -> float:
    return value.replace(tzinfo=timezone.utc).timestamp()


def open_gate(
    store: Store,
    *,
    run_id: str,
    workflow: str,
    gate_id: str,
    config: GateConfig,
    message: str,
    preview_text: str | None,
    preview_html: str | None,
    launched_by: str,
) -> tuple[dict[str, Any], bool]:
    """Open the gate if it is not open yet; return (its row, whether it was opened now)."""
    limits.check_size(message, limits.MAX_MESSAGE, f"the message of gate '{gate_id}'")
    preview_text, preview_html = limits.cut(preview_text), limits.cut(preview_html)
    with store.session("opening an approval gate"):
        existing = gate_row(store, run_id, gate_id)
        if existing is not None and existing["status"] == "open":
            # The cell was edited and run again: its new settings apply to the open gate.
            wanted = _settings(config)
            changed = {k: v for k, v in wanted.items() if (existing.get(k) or None) != (v or None)}
            if changed:
                row = {**existing, **changed}
                transitions.commit(
                    store,
                    [
                        _record(row),
                        _event(run_id, gate_id, "gate_settings_changed", **changed),
                    ],
                )
                return row, False
        if existing is not None and not (
            existing["status"] == "expired" and existing.get("channel") == "policy"
        ):
            return existing, False
        if existing is not None:
            # Closed only for want of a policy decision: open it again (same deadline).
            row = dict(existing)
            row.update(
                status="open",
                decision=None,
                actor=None,
                channel=None,
                comment=None,
                decided_at=None,
            )
            transitions.commit(store, [_record(row), _event(run_id, gate_id, "gate_reopened")])
            return row, False
        now = store.clock()  # the deadline is on the store's clock, not this process's
        row = {
            "run_id": run_id,
            "gate_id": gate_id,
            "workflow": workflow,
            "status": "open",
            "message": message,
            "preview_text": preview_text,
            "preview_html": preview_html,
            **_settings(config),
            "launched_by": launched_by,
            "opened_at": now,
            "deadline": now + config.timeout if config.timeout else None,
        }
        transitions.commit(
            store, [_record(row), _event(run_id, gate_id, "gate_opened", deadline=row["deadline"])]
        )
    found = gate_row(store, run_id, gate_id)
    assert found is not None
    return found, True


def decide(
    store: Store,
    run_id: str,
    gate_id: str,
    decision: str,
    *,
    actor: str,
    channel: str,
    comment: str | None = None,
    recorded_by: str | None = None,
) -> dict[str, Any]:
    """Record the one decision of a gate; refuse a second one or a user who may not decide.

    ``actor`` is who the decision is recorded for (the claimed actor), ``recorded_by`` the
    resolved identity that recorded it (default: this process's identity); both are kept in the
    decision's event and audit row."""
    recorder = recorded_by or identity.current()
    if decision not in (APPROVE, REJECT):
        raise ApprovalError(f"a decision is '{APPROVE}' or '{REJECT}', not {decision!r}")
    if channel not in CHANNELS:
        raise ApprovalError(f"unknown channel {channel!r}")
    limits.check_size(comment, limits.MAX_COMMENT, "the comment")  # before the store is held
    with store.session("recording an approval decision"):
        row = gate_row(store, run_id, gate_id)
        if row is None:
            if not store.has_run(run_id):
                raise ApprovalError(f"no run '{run_id}' in {store.path}")
            raise ApprovalError(f"run {run_id} has no open gate '{gate_id}' (not reached yet?)")
        if row["status"] != "open":
            raise AlreadyDecided(describe_decision(row, prefix="already "))
        if channel not in ("policy", "timeout"):
            check_actor(row, actor)
            if (
                recorder != actor
                and recorder == row.get("launched_by")
                and not row.get("allow_self_approval")
                and identity.mode() != "env"
            ):
                check_actor(row, recorder)  # four-eyes on the resolved identity too
            if deadline_passed(row, store.clock()):
                closed = _time_out(store, row)
                raise AlreadyDecided(
                    f"too late: the deadline passed at {iso_utc(row.get('deadline'))}; "
                    + describe_decision(closed)
                )
        row = dict(row)
        row.update(
            status="approved" if decision == APPROVE else "rejected",
            decision=decision,
            actor=actor,
            channel=channel,
            comment=comment or None,
            decided_at=time.time(),
        )
        transitions.commit(
            store,
            [
                _record(row),
                _event(
                    run_id,
                    gate_id,
                    "gate_decided",
                    decision=decision,
                    actor=actor,
                    recorded_by=recorder,
                    channel=channel,
                    comment=comment,
                ),
                auditlog.row(
                    kind="human" if channel not in ("policy", "timeout") else channel,
                    principal=actor,
                    run_id=run_id,
                    step_id=gate_id,
                    capability="approval",
                    decision=decision,
                    arguments={"channel": channel, "comment": comment, "recorded_by": recorder},
                ),
            ],
        )
    _DECIDED_HERE.add((run_id, gate_id))
    return output_of(row)


# Gates decided by code of this process (``airun_nb.approve`` in a notebook cell): the run goes
# on when that code asks (the cell is run again), not behind its back.
_DECIDED_HERE: set[tuple[str, str]] = set()


def decided_here(run_id: str, gate_id: str) -> bool:
    """Whether this process recorded the decision of the gate."""
    return (run_id, gate_id) in _DECIDED_HERE


def _time_out(store: Store, row: Mapping[str, Any]) -> dict[str, Any]:
    """Record the gate's on_timeout outcome now (the caller holds the store)."""
    outcome = str(row.get("on_timeout") or "reject")
    closed = dict(row)
    if outcome in (APPROVE, REJECT):
        closed.update(
            status="approved" if outcome == APPROVE else "rejected",
            decision=outcome,
            actor="timeout",
            channel="timeout",
            comment="no decision before the deadline",
            decided_at=time.time(),
        )
        kind = "gate_decided"
    else:
        closed.update(
            status="expired",
            actor="runtime",
            channel="timeout",
            comment="approval timed out",
            decided_at=time.time(),
        )
        kind = "gate_expired"
    transitions.commit(
        store,
        [
            _record(closed),
            _event(
                str(row["run_id"]),
                str(row["gate_id"]),
                kind,
                decision=closed.get("decision"),
                channel="timeout",
            ),
            auditlog.row(
                kind="timeout",
                principal="timeout",
                run_id=str(row["run_id"]),
                step_id=str(row["gate_id"]),
                capability="approval",
                decision=str(closed.get("decision") or "expired"),
            ),
        ],
    )
    return closed


def iso_utc(value: Any) -> str | None:
    """A timestamp (datetime from the store, or epoch seconds) as ISO 8601 in UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        value = _epoch(value)
    return datetime.fromtimestamp(float(value), tz=timezone.utc).isoformat()


def expire(store: Store, run_id: str, gate_id: str, *, reason: str | None = None) -> dict[str, Any]:
    """Close a gate without a decision (``on_timeout: fail``, or no policy decision)."""
    with store.session("closing an approval gate"):
        row = gate_row(store, run_id, gate_id)
        assert row is not None
        if row["status"] != "open":
            return row
        row = dict(row)
        note = reason or "approval timed out"
        row.update(
            status="expired",
            channel="timeout" if reason is None else "policy",
            actor="runtime",
            comment=note,
            decided_at=time.time(),
        )
        transitions.commit(
            store, [_record(row), _event(run_id, gate_id, "gate_expired", reason=note)]
        )
    return row


def describe_decision(row: Mapping[str, Any], prefix: str = "") -> str:
    when = row.get("decided_at")
    if isinstance(when, (int, float)):
        when = datetime.fromtimestamp(when, tz=timezone.utc)
    stamp = when.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(when, datetime) else "?"
    verb = {"approve": "approved", "reject": "rejected"}.get(str(row.get("decision")), "expired")
    if row.get("status") in ("expired", "cancelled"):
        verb = str(row["status"])
    comment = f' ("{row["comment"]}")' if row.get("comment") else ""
    return (
        f"gate '{row['gate_id']}' of run {row['run_id']} was {prefix}{verb} by {row.get('actor')} "
        f"via {row.get('channel')} at {stamp}{comment}"
    )


def output_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The gate step's output: the decision as a JSON-able mapping."""
    when = row.get("decided_at")
    if isinstance(when, datetime):
        when = _epoch(when)
    return {
        "decision": row.get("decision"),
        "approved": row.get("decision") == APPROVE,
        "actor": row.get("actor"),
        "channel": row.get("channel"),
        "comment": row.get("comment"),
        "decided_at": datetime.fromtimestamp(float(when), tz=timezone.utc).isoformat()
        if when is not None
        else None,
    }


def deadline_passed(row: Mapping[str, Any], now: float | None = None) -> bool:
    """Has the gate's deadline passed at ``now``: the store's clock (:meth:`Store.clock`)
    wherever the answer decides something; this machine's clock only for what is shown."""
    deadline = row.get("deadline")
    if deadline is None:
        return False
    value = _epoch(deadline) if isinstance(deadline, datetime) else float(deadline)
    return (processclock.now() if now is None else now) >= value


def commands(run_id: str, gate_id: str) -> dict[str, str]:
    return {
        "approve": f"airun approve {run_id} {gate_id}",
        "reject": f"airun reject {run_id} {gate_id}",
    }


def cancel_open(store: Store, run_id: str, *, reason: str) -> list[dict[str, Any]]:
    """Records that close a run's open gates as ``cancelled`` (its rollback); not written."""
    recs: list[dict[str, Any]] = []
    for row in store.open_gates(run_id):
        done = {"status": "cancelled", "actor": "runtime", "channel": "rollback"}
        recs.append({**_record(row), **done, "comment": reason, "decided_at": time.time()})
        recs.append(_event(run_id, row["gate_id"], "gate_cancelled", reason=reason))
    return recs


def _event(run_id: str, gate_id: str, kind: str, **detail: Any) -> dict[str, Any]:
    return {
        "t": "ev",
        "ts": time.time(),
        "run_id": run_id,
        "step_id": gate_id,
        "kind": kind,
        "detail": json.dumps(detail, default=str),
    }


# -- the Python API --------------------------------------------------------------------------
def _decide_now(
    decision: str,
    run_id: str,
    gate_id: str,
    by: str | None,
    comment: str | None,
    db: str | os.PathLike[str] | None,
    channel: str,
) -> dict[str, Any]:
    return decide(
        Store.open(db),
        run_id,
        gate_id,
        decision,
        actor=identity.acting_as(by),
        channel=channel,
        comment=comment,
    )


def approve(
    run_id: str,
    gate_id: str,
    *,
    by: str | None = None,
    comment: str | None = None,
    db: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Approve a gate (for scripts and agents). The run continues when it next resumes."""
    return _decide_now(APPROVE, run_id, gate_id, by, comment, db, "api")


def reject(
    run_id: str,
    gate_id: str,
    *,
    by: str | None = None,
    comment: str | None = None,
    db: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Reject a gate; the run rolls back when it next resumes."""
    return _decide_now(REJECT, run_id, gate_id, by, comment, db, "api")
