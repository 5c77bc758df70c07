"""What happens to a gate while nobody decides it: reminders and escalation.

``approval.remind: 4h`` notifies the gate's ``notify`` targets again every four hours while it is
open; ``approval.escalate: {after: 24h, to: role:director}`` adds those approvers to the gate
once, a day after it opened, and notifies them. Both are measured on the store's clock from the
gate's ``opened_at`` (like its deadline), and both are recorded through the one writer before
anyone is told: a ``gate_reminded`` event with the reminder's period number, a
``gate_escalated`` event and an audit row. The check and the write happen while holding the
store's exclusive lease, so whoever watches the gates (the kernel that shows them, ``airun
serve``, ``airun doctor``) fires each reminder once per period and the escalation once, however
many of them look at the same moment. A watcher that was away for several periods sends one
reminder, for the latest.

Every notification is an action the policy decides (:mod:`airun_nb.governance.mediator`), for
the run's launcher and the workflow's owner and agent, and a webhook goes through the egress
checks of ``http.request``. A watcher outside the notebook knows the targets from the run's
stored workflow: URLs and chat webhooks (``{url, format}``); a target that is a function, or
written as a template, is notified only when the gate opens (the notebook's code and values
are not there), and the watcher says so in a ``notify_failed`` event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from airun_nb.gates import gate, notify
from airun_nb.governance import audit as auditlog
from airun_nb.governance import mediator
from airun_nb.governance import policy as policy_mod
from airun_nb.spec import dialect
from airun_nb.spec.approval import MAX_REMINDERS, parse_config
from airun_nb.store import transitions
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store

REMINDED, ESCALATED = "gate_reminded", "gate_escalated"
IDLE = 60.0  # seconds a watcher waits when nothing is due (it looks again when files change)


@dataclass
class Fired:
    """One reminder or escalation this watcher recorded (and then notified)."""

    run_id: str
    gate_id: str
    kind: str  # reminder | escalation
    period: int = 0
    to: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Sweep:
    fired: list[Fired]
    next_due: float | None  # store-clock time of the next follow-up of an open gate, if any
    now: float  # the store's clock at the sweep


def _epoch(value: Any) -> float:
    return gate._epoch(value) if isinstance(value, datetime) else float(value)


def has_follow_ups(row: Mapping[str, Any]) -> bool:
    spec = gate.form_spec(row)
    return bool(spec.get("remind") or spec.get("escalate"))


def _sent(store: Backend, row: Mapping[str, Any]) -> tuple[int, bool]:
    """(the last reminder's period, whether the gate escalated) as the store records them."""
    found = store.gate_events(str(row["run_id"]), str(row["gate_id"]), (REMINDED, ESCALATED))
    return _fold(found)


def _fold(events: list[dict[str, Any]]) -> tuple[int, bool]:
    last, escalated = 0, False
    for ev in events:
        if ev["kind"] == ESCALATED:
            escalated = True
            continue
        try:
            last = max(last, int(json.loads(ev["detail"] or "{}").get("period") or 0))
        except (ValueError, TypeError, AttributeError):
            continue
    return last, escalated


def _next_due(row: Mapping[str, Any], last: int, escalated: bool) -> float | None:
    spec = gate.form_spec(row)
    opened = _epoch(row["opened_at"])
    times = []
    if spec.get("remind") and last < MAX_REMINDERS:
        times.append(opened + (last + 1) * float(spec["remind"]))
    esc = spec.get("escalate") or {}
    if esc and not escalated:
        times.append(opened + float(esc["after"]))
    return min(times) if times else None


def _due(store: Backend, run_id: str, gate_id: str) -> tuple[list[Fired], float | None, float]:
    """Record the gate's due follow-ups (holding the lease); what was recorded."""
    with store.session("sending an approval gate's reminders"):
        row = store.gate_row(run_id, gate_id)
        now = store.clock()
        if row is None or row["status"] != "open" or not has_follow_ups(row):
            return [], None, now
        if gate.deadline_passed(row, now):
            return [], None, now  # it times out when its run or a decision next looks
        spec = gate.form_spec(row)
        opened = _epoch(row["opened_at"])
        last, escalated = _sent(store, row)
        recs: list[dict[str, Any]] = []
        fired: list[Fired] = []
        if spec.get("remind"):
            # At most MAX_REMINDERS, whatever the period: a workflow cannot turn a gate's
            # reminders into a stream of notifications.
            period = min(int((now - opened) // float(spec["remind"])), MAX_REMINDERS)
            if period >= 1 and period > last:
                recs.append(gate._event(run_id, gate_id, REMINDED, period=period))
                fired.append(Fired(run_id, gate_id, "reminder", period=period))
                last = period
        esc = spec.get("escalate") or {}
        if esc and not escalated and now >= opened + float(esc["after"]):
            to = [str(a) for a in esc.get("to") or []]
            spec["escalated"] = to
            changed = {**row, "form_spec": json.dumps(spec)}
            recs.append(gate._record(changed))
            recs.append(gate._event(run_id, gate_id, ESCALATED, to=to))
            recs.append(
                auditlog.row(
                    kind="escalation",
                    principal="runtime",
                    run_id=run_id,
                    step_id=gate_id,
                    capability="approval",
                    decision="escalate",
                    arguments={"to": to, "after_seconds": float(esc["after"])},
                )
            )
            fired.append(Fired(run_id, gate_id, "escalation", to=to))
            escalated = True
        if recs:
            transitions.commit(store, recs)
        return fired, _next_due(row, last, escalated), now


def sweep(store: Backend) -> Sweep:
    """Fire every due reminder and escalation of the store's open gates, once each; then
    notify (outside the lease). Returns what this call fired and when the next one is due."""
    with store.session("looking at the open gates' follow-ups"):
        rows = [r for r in store.open_gates() if has_follow_ups(r)]
        sent: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if rows:
            for ev in store.open_gate_events((REMINDED, ESCALATED)):
                sent.setdefault((str(ev["run_id"]), str(ev["step_id"])), []).append(ev)
        now = store.clock()
    fired: list[Fired] = []
    soonest: float | None = None
    for row in rows:
        key = (str(row["run_id"]), str(row["gate_id"]))
        due: float | None = _next_due(row, *_fold(sent.get(key, [])))
        if due is not None and due <= now:  # due by this read: check and record under the lease
            done, due, now = _due(store, *key)
            fired.extend(done)
        if due is not None and (soonest is None or due < soonest):
            soonest = due
    for item in fired:
        _tell(store, item)
    return Sweep(fired, soonest, now)


class _Egress:
    """What the egress checks of a webhook need: who sends it and where it may go."""

    def __init__(self, principal: str, hosts: list[str] | None) -> None:
        self.principal, self.hosts = principal, hosts


def _tell(store: Backend, item: Fired) -> None:
    """Notify the gate's targets of a reminder or an escalation, each decided by the policy;
    the outcome is an event of the gate."""
    row = store.gate_row(item.run_id, item.gate_id)
    if row is None:
        return
    error: str | None
    try:
        targets, who, pol = _targets(store, row)
    except Exception as exc:  # a stored workflow that no longer parses: said, not raised
        targets, who, pol = [], [], None
        error = f"cannot read the run's workflow: {exc}"
    else:
        error = None
    skipped = [t for t in targets if not _plain(t)]
    sendable = [t for t in targets if _plain(t)]
    if skipped:
        error = (
            "only URL and chat webhook targets are notified again (a function or a templated "
            f"target is notified when the gate opens): {len(skipped)} skipped"
        )
    if sendable and pol is not None:
        message = str(row.get("message") or "")
        body = notify.payload(row, store.path)
        if item.kind == "reminder":
            body.update(event="reminder", reminder=item.period, message=f"Reminder: {message}")
        else:
            added = ", ".join(item.to)
            body.update(
                event="escalation", escalated_to=item.to, message=f"Escalated to {added}: {message}"
            )

        def check(t: Any) -> str | None:
            action = mediator.of_notify(t)
            if action is None:
                return None
            verdict = mediator.decide(pol, who, action)
            if verdict.decision != "allow":
                return f"refused by the policy ({verdict.reason})"
            return None

        def no_functions(name: str) -> Any:
            raise gate.ApprovalError(f"{name} is not notified outside the notebook")

        failed = notify.notify(
            sendable,
            body,
            no_functions,
            check=check,
            egress=_Egress(who[0], mediator.hosts(pol, who)),
        )
        error = "; ".join(e for e in (error, failed) if e) or None
    if not targets:
        return
    detail = {"for": item.kind, "period": item.period or None, "error": error}
    with store.session("recording a notification"):
        transitions.commit(
            store,
            [
                gate._event(
                    item.run_id, item.gate_id, "notify_failed" if error else "notified", **detail
                )
            ],
        )


def _plain(target: Any) -> bool:
    text = target.get("url") if isinstance(target, Mapping) else target
    return (
        isinstance(text, str)
        and text.startswith(("http://", "https://"))
        and "{{" not in json.dumps(target, default=str)
    )


def _targets(store: Backend, row: Mapping[str, Any]) -> tuple[list[Any], list[str], Any]:
    """The gate's notify targets, who a notification acts for, and the policy in force (the
    configured one, tightened by the workflow's own rules), from the run's stored workflow."""
    from airun_nb.spec import parser

    found = store.stored_definition(str(row["run_id"]))
    if found is None or not found[1]:
        return [], [], None
    spec = parser.parse(found[1], name=found[0])
    step = spec.by_id.get(str(row["gate_id"]))
    if step is None or step.kind != "approval":
        return [], [], None  # a gate the policy inserted has no notify targets
    conf = parse_config(step.body, step=step.id)
    target = conf.notify or step.notify
    targets = [t for t in (target if isinstance(target, list) else [target]) if t]
    launcher = str(row.get("launched_by") or "?")
    who = [launcher, *dialect.principals(spec.metadata, step.agent)]
    pol = policy_mod.current().tightened(spec.policy, where="the workflow's policy")
    return targets, who, pol


POLL = 0.5  # seconds between looks at the store's files (a stat, no lease)


class Watcher:
    """A daemon thread that fires the follow-ups of one store's open gates when they are due.

    It sweeps when it starts, when the store's files change (a gate opened or was decided), and
    when the next follow-up it knows of is due; between those it only looks at the files. With
    ``forever=False`` (a kernel) it ends once no open gate of the store has follow-ups left."""

    def __init__(self, db: Any, *, forever: bool = True) -> None:
        import threading

        self.db = db
        self.forever = forever
        self.sweeps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="airun-gate-follow-ups", daemon=True
        )

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        import logging

        from airun_nb.store.database import files_signature

        seen: Any = None
        settling: Any = None
        due_at: float | None = 0.0  # process-clock time of the next follow-up (0: sweep now)
        while not self._stop.is_set():
            sig = files_signature(Path(self.db))
            due = due_at is not None and time.time() >= due_at
            if sig != seen and sig != settling and not due and seen is not None:
                # Changing right now: look once the writer is done (a poll without change),
                # so the watch never makes a finishing writer hand the lease over.
                settling = sig
            elif sig != seen or due:
                seen = sig
                try:
                    result = sweep(open_store(self.db, create=False))
                except Exception as exc:  # a bad look must not end the watch
                    logging.getLogger("airun_nb.gates").warning(
                        "airun_nb: gate follow-ups of %s: %s", self.db, exc
                    )
                    result = None
                self.sweeps += 1
                if result is not None:
                    if result.next_due is None:
                        due_at = None
                        if not self.forever:
                            return
                    else:
                        due_at = time.time() + max(0.0, result.next_due - result.now)
                else:
                    due_at = time.time() + IDLE
                if result is not None and result.fired:
                    seen = files_signature(Path(self.db))  # our own writes are not news
            self._stop.wait(POLL)


_KERNEL_WATCHERS: dict[str, Watcher] = {}


def watch(db: Any) -> None:
    """Make sure this process fires the follow-ups of ``db``'s open gates (a kernel that shows
    a gate calls this; the thread ends when no gate with follow-ups is left open)."""
    key = str(db)
    found = _KERNEL_WATCHERS.get(key)
    if found is None or not found.alive():
        _KERNEL_WATCHERS[key] = Watcher(db, forever=False).start()
