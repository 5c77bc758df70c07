"""Delegation: an approver hands their approvals to another person until a date.

``airun delegate --to carol --until 2026-12-31`` (run by bob) lets carol decide, until the end
of that day (UTC), every gate bob may decide; her vote is recorded for bob with both names
("carol for bob"), counts as bob's in a quorum, and bob cannot vote a second time. Only the
configured policy lets anyone delegate (``delegation: {allow: [role:lead]}``; nobody by
default, and a workflow's own ``policy:`` may not say it). Delegating for someone else
(``--from``) needs the right to decide as others (``gate.decide_as``). Four-eyes still holds: a
delegate may not decide a run they launched, nor one launched by the person they act for.
An expired or revoked delegation does nothing (``airun delegate --to carol --revoke``). Each delegation is an event and an audit row, written by
the one writer; times are the store's clock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airun_nb.governance import audit as auditlog
from airun_nb.governance import identity
from airun_nb.governance import policy as policy_mod
from airun_nb.spec.approval import ApprovalError
from airun_nb.store import transitions
from airun_nb.store.backend import Backend

KIND = "delegated"
REVOKED = "delegation_revoked"


@dataclass(frozen=True)
class Delegation:
    principal: str  # whose approvals are handed over
    delegate: str  # who may give them
    until: float  # epoch seconds (the store's clock)
    granted_by: str

    def until_text(self) -> str:
        return datetime.fromtimestamp(self.until, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def parse_until(text: str) -> float:
    """``2026-12-31`` (through the end of that day, UTC) or an ISO 8601 time -> epoch seconds."""
    raw = str(text).strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
            return end.timestamp() - 1e-6
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApprovalError(
            f"--until {raw!r} is not a date such as 2026-12-31 or a time such as 2026-12-31T18:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def grant(
    store: Backend, *, to: str, until: str | float, principal: str | None = None
) -> Delegation:
    """Record that ``principal`` (default: whoever runs this) hands their approvals to ``to``
    until ``until``; refused (one line, nothing recorded) when the policy does not allow it."""
    me = identity.current()
    who = principal or me
    if who != me:
        identity.acting_as(who)  # delegating for someone else needs gate.decide_as
    to = str(to).strip()
    if not to or to == who:
        raise ApprovalError(f"a delegate is another person than {who}")
    try:
        pol = policy_mod.current()
    except policy_mod.PolicyError as exc:
        raise ApprovalError(
            f"no delegation while the policy does not load: {exc.message}"
        ) from None
    if not pol.may_delegate(who):
        raise ApprovalError(
            f"the policy does not let {who} delegate approvals (the configured policy's "
            "'delegation: {allow: [...]}' names who may)"
        )
    end = until if isinstance(until, float) else parse_until(str(until))
    with store.session("recording a delegation"):
        now = store.clock()
        if end <= now:
            raise ApprovalError("--until is in the past: a delegation ends later than now")
        found = Delegation(who, to, end, me)
        detail = {"from": who, "to": to, "until": end, "by": me}
        transitions.commit(
            store,
            [
                {
                    "t": "ev",
                    "ts": time.time(),
                    "run_id": None,
                    "step_id": None,
                    "kind": KIND,
                    "detail": json.dumps(detail),
                },
                auditlog.row(
                    kind="delegation",
                    principal=who,
                    run_id=None,
                    step_id=None,
                    capability="gate.delegate",
                    decision="allow",
                    arguments={"to": to, "until": found.until_text(), "by": me},
                ),
            ],
        )
    return found


def revoke(store: Backend, *, to: str, principal: str | None = None) -> int:
    """End now every delegation of ``principal`` (default: whoever runs this) to ``to``;
    returns how many were in force. Needs no policy right (it only takes one away)."""
    me = identity.current()
    who = principal or me
    if who != me:
        identity.acting_as(who)  # ending someone else's needs gate.decide_as
    with store.session("revoking a delegation"):
        now = store.clock()
        live = [d for d in recorded(store) if d.principal == who and d.delegate == to]
        live = [d for d in live if d.until > now]
        if not live:
            raise ApprovalError(f"{who} has no delegation to {to} in force")
        transitions.commit(
            store,
            [
                {
                    "t": "ev",
                    "ts": time.time(),
                    "run_id": None,
                    "step_id": None,
                    "kind": REVOKED,
                    "detail": json.dumps({"from": who, "to": to, "at": now, "by": me}),
                },
                auditlog.row(
                    kind="delegation",
                    principal=who,
                    run_id=None,
                    step_id=None,
                    capability="gate.delegate",
                    decision="revoke",
                    arguments={"to": to, "by": me},
                ),
            ],
        )
    return len(live)


def recorded(store: Backend) -> list[Delegation]:
    """Every delegation on the record, oldest first, each ending at its date or at the first
    revocation after it, whichever is sooner."""
    events = sorted(
        [*store.events_of_kind(KIND), *store.events_of_kind(REVOKED)], key=lambda e: e["seq"]
    )
    out: list[Delegation] = []
    for ev in events:
        try:
            d = json.loads(ev["detail"] or "{}")
            if ev["kind"] == REVOKED:
                at = float(d["at"])
                out = [
                    Delegation(x.principal, x.delegate, min(x.until, at), x.granted_by)
                    if (x.principal, x.delegate) == (d["from"], d["to"])
                    else x
                    for x in out
                ]
                continue
            out.append(Delegation(str(d["from"]), str(d["to"]), float(d["until"]), str(d["by"])))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def active_for(store: Backend, delegate: str, now: float) -> list[str]:
    """Whose approvals ``delegate`` may give at ``now`` (the store's clock), in the order the
    delegations were made."""
    found = [d.principal for d in recorded(store) if d.delegate == delegate and d.until > now]
    return list(dict.fromkeys(found))


def active(store: Backend, now: float) -> list[Delegation]:
    return [d for d in recorded(store) if d.until > now]


def shown(vote: dict[str, Any]) -> str:
    """``carol for bob`` for a delegate's vote, else the voter's name."""
    if vote.get("delegate"):
        return f"{vote['delegate']} for {vote.get('actor')}"
    return str(vote.get("actor"))
