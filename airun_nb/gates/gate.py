"""Approval gates: durable human decisions, from any channel, first decision wins.

A gate is a step whose output is the decision (``decision`` approved/rejected, ``option``,
``form``, ``by``, ``comment``, ``actor``, ``channel``, ``decided_at``). Its row in the
``approvals`` table is written when the gate opens, with the deadline fixed then (a restart does
not extend it). Each person's vote (with its channel, identity, form values and option) is kept
in the row; the gate closes when its quorum is met, or at the first rejection (``reject_quorum``
rejections if set), and takes exactly one decision: the check and the write happen while holding
the store's exclusive lease, so a double click, the CLI racing a button, concurrent votes or a
replay can never count twice. A vote carrying a request id that is already on the record returns
the first answer (a client's retry). Who may decide is checked against the gate's ``approvers``
(user names and ``role:NAME``) and four-eyes (:func:`four_eyes`); form values and the option go
through :func:`airun_nb.gates.form.check`. Changed settings of an open gate apply when its cell
runs again. Decisions by policy or timeout are the runtime's own and skip those checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airun_nb.gates import delegation
from airun_nb.gates import form as forms
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
    FormError,
    GateConfig,
    parse_config,
)
from airun_nb.store import transitions
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store

__all__ = [
    "ON_TIMEOUT",
    "AlreadyDecided",
    "ApprovalError",
    "FormError",
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
    true``, needs more than one approval, or a policy rule inserted it; a gate with none of
    these may be decided by anyone."""
    return bool(row.get("four_eyes")) or bool(row.get("approvers"))


def form_spec(row: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's form fields, options and quorum as stored ({} for a plain gate)."""
    raw = row.get("form_spec")
    if not raw:
        return {}
    spec = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return spec if isinstance(spec, dict) else {}


def votes_of(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every vote on the gate, oldest first."""
    raw = row.get("votes")
    if not raw:
        return []
    found = json.loads(raw) if isinstance(raw, str) else list(raw)
    return [v for v in found if isinstance(v, dict)]


def approver_list(row: Mapping[str, Any]) -> list[str] | None:
    """Who may decide: the gate's ``approvers``, else the groups of its ``require``, and the
    approvers its escalation added (None: anyone, within four-eyes)."""
    listed: list[str] | None = None
    if row.get("approvers"):
        found = json.loads(row["approvers"])
        listed = [str(a) for a in found] if isinstance(found, list) else None
    else:
        listed = list(form_spec(row).get("require") or {}) or None
    if listed is None:
        return None
    return list(dict.fromkeys([*listed, *escalated_to(row)]))


def escalated_to(row: Mapping[str, Any]) -> list[str]:
    """The approvers the gate's escalation added ([] before it escalated)."""
    return [str(a) for a in form_spec(row).get("escalated") or []]


def who_may_decide(row: Mapping[str, Any]) -> str:
    """One line for a page, the dashboard or a terminal: who may decide this gate."""
    listed = approver_list(row)
    who = "; ".join(expand_approvers(listed)[1]) if listed else "anyone"
    if escalated_to(row):
        who += f" (escalated to {', '.join(escalated_to(row))})"
    launcher = row.get("launched_by")
    if four_eyes(row) and not row.get("allow_self_approval") and launcher:
        if listed:
            who += f" (not {launcher}, who started the run)"
        else:
            who += f" but {launcher}, who started the run"
    spec = form_spec(row)
    if int(spec.get("quorum") or 1) > 1:
        who += f"; {spec['quorum']} distinct approvals needed"
    require = spec.get("require") or {}
    if require:
        who += " (" + ", ".join(f"{n} of {g}" for g, n in require.items()) + ")"
    return who


def _members(group: str, table: Mapping[str, list[str]]) -> set[str]:
    if group.startswith("role:"):
        return set(table.get(group[5:]) or [])
    return {group}


def _unmet(actors: list[str], require: Mapping[str, int]) -> list[str]:
    """Groups of ``require`` still short of approvals, each person counting for one group
    only (a maximum matching of people to the required places)."""
    if not require:
        return []
    from airun_nb.governance.policy import all_roles

    table = all_roles()
    places = [g for g, n in require.items() for _ in range(int(n))]
    members = [_members(g, table) for g in places]
    taken: dict[int, str] = {}

    def place(person: str, seen: set[int]) -> bool:
        for i, group in enumerate(members):
            if person in group and i not in seen:
                seen.add(i)
                if i not in taken or place(taken[i], seen):
                    taken[i] = person
                    return True
        return False

    for person in dict.fromkeys(actors):
        place(person, set())
    return [places[i] for i in range(len(places)) if i not in taken]


def tally(row: Mapping[str, Any]) -> dict[str, Any]:
    """Votes so far: approvals, rejections, how many are needed, and unmet requirements."""
    spec = form_spec(row)
    votes = votes_of(row)
    yes = [str(v["actor"]) for v in votes if v.get("decision") == APPROVE]
    no = [str(v["actor"]) for v in votes if v.get("decision") == REJECT]
    return {
        "approvals": len(yes),
        "needed": int(spec.get("quorum") or 1),
        "rejections": len(no),
        "reject_needed": int(spec.get("reject_quorum") or 1),
        "missing": _unmet(yes, spec.get("require") or {}),
    }


def progress(row: Mapping[str, Any]) -> str | None:
    """``"1 of 2 approvals"`` (and what is still required) for a gate that needs more than one
    vote; None for a plain one."""
    t = tally(row)
    if t["needed"] <= 1 and t["reject_needed"] <= 1 and not t["missing"]:
        return None
    text = f"{t['approvals']} of {t['needed']} approvals"
    if t["missing"]:
        text += " (still needs " + ", ".join(sorted(set(t["missing"]))) + ")"
    if t["reject_needed"] > 1:
        text += f"; {t['rejections']} of {t['reject_needed']} rejections"
    return text


def check_actor(row: Mapping[str, Any], actor: str) -> None:
    """Refuse (raise :class:`ApprovalError`) a user who may not decide this gate."""
    approvers = approver_list(row)
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


def acting_for(store: Backend, row: Mapping[str, Any], user: str) -> str | None:
    """Whom ``user`` may decide this gate for through an active delegation (None: nobody).
    Four-eyes holds through it: not a run ``user`` launched, nor one the delegator launched."""
    launcher = row.get("launched_by")
    if user == launcher and four_eyes(row) and not row.get("allow_self_approval"):
        return None
    for principal in delegation.active_for(store, user, store.clock()):
        try:
            check_actor(row, principal)
        except ApprovalError:
            continue
        return principal
    return None


def shown_by(row: Mapping[str, Any]) -> list[str]:
    """The deciders of a closed gate as shown: ``carol for bob`` for a delegate's vote."""
    decision = row.get("decision")
    side = [v for v in votes_of(row) if v.get("decision") == decision]
    return [delegation.shown(v) for v in side] or ([str(row["actor"])] if row.get("actor") else [])


def named(out: Mapping[str, Any]) -> list[str]:
    """The deciders of a gate's output as shown: ``carol for bob`` where a delegate voted."""
    given = out.get("delegated") or {}
    return [f"{given[b]} for {b}" if b in given else str(b) for b in out.get("by") or []]


_SETTINGS = ("approvers", "allow_self_approval", "four_eyes", "on_timeout", "form_spec")


def _settings(config: GateConfig) -> dict[str, Any]:
    spec = config.form_spec()
    return {
        "approvers": json.dumps(config.approvers) if config.approvers else None,
        "allow_self_approval": config.allow_self_approval,
        "four_eyes": config.four_eyes
        or bool(config.approvers)
        or bool(config.require)
        or config.needed > 1,
        "on_timeout": config.on_timeout,
        "form_spec": json.dumps(spec) if spec else None,  # fields in their written order
    }


# -- the durable record ----------------------------------------------------------------------
def gate_row(store: Backend, run_id: str, gate_id: str) -> dict[str, Any] | None:
    return store.gate_row(run_id, gate_id)


def _record(row: Mapping[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"t": "gate"}
    for key, value in row.items():
        rec[key] = _epoch(value) if isinstance(value, datetime) else value
    return rec


def _epoch(value: datetime) -> float:
    return value.replace(tzinfo=timezone.utc).timestamp()


def open_gate(
    store: Backend,
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
            if escalated_to(existing) and wanted.get("form_spec"):  # an escalation stays
                kept = {**json.loads(wanted["form_spec"]), "escalated": escalated_to(existing)}
                wanted["form_spec"] = json.dumps(kept)
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
                votes=None,
                option=None,
                form=None,
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


MAX_REQUEST_ID = 200


def decide(
    store: Backend,
    run_id: str,
    gate_id: str,
    decision: str,
    *,
    actor: str,
    channel: str,
    comment: str | None = None,
    recorded_by: str | None = None,
    form: Mapping[str, Any] | None = None,
    option: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Record one person's vote on a gate, and the gate's decision when the vote closes it.

    ``actor`` is who the vote is recorded for (the claimed actor), ``recorded_by`` the resolved
    identity that recorded it (default: this process's identity); both are kept in the vote, its
    event and its audit row. ``form`` and ``option`` are checked by
    :func:`airun_nb.gates.form.check` before anything is written. ``request_id`` names the
    client's request: the same id again returns the first answer instead of a refusal.
    Returns :func:`answer` (the gate's output, its status and progress)."""
    recorder = recorded_by or identity.current()
    if decision not in (APPROVE, REJECT):
        raise ApprovalError(f"a decision is '{APPROVE}' or '{REJECT}', not {decision!r}")
    if channel not in CHANNELS:
        raise ApprovalError(f"unknown channel {channel!r}")
    if request_id is not None and (
        not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 200
    ):
        raise FormError(f"a request id is 1 to {MAX_REQUEST_ID} characters of text")
    if form is not None and not isinstance(form, Mapping):
        raise FormError("the form is a mapping of field names to values")
    limits.check_size(comment, limits.MAX_COMMENT, "the comment")  # before the store is held
    human = channel not in ("policy", "timeout")
    with store.session("recording an approval decision"):
        row = gate_row(store, run_id, gate_id)
        if row is None:
            if not store.has_run(run_id):
                raise ApprovalError(f"no run '{run_id}' in {store.path}")
            raise ApprovalError(f"run {run_id} has no open gate '{gate_id}' (not reached yet?)")
        votes = votes_of(row)
        if request_id is not None:
            for earlier in votes:
                if earlier.get("request_id") == request_id:
                    if earlier.get("actor") != actor:
                        raise ApprovalError(
                            f"request id {request_id!r} was already used by {earlier.get('actor')}"
                        )
                    return {**answer(row), "repeated": True}
        if row["status"] != "open":
            raise AlreadyDecided(describe_decision(row, prefix="already "))
        where = f"gate '{gate_id}' of run {run_id}"
        delegate: str | None = None
        if human:
            try:
                check_actor(row, actor)
            except ApprovalError:
                principal = acting_for(store, row, actor)
                if principal is None:
                    raise
                delegate, actor = actor, principal  # recorded as "carol for bob"
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
            for earlier in votes:
                if earlier.get("actor") == actor:
                    said = "approved" if earlier.get("decision") == APPROVE else "rejected"
                    count = progress(row)
                    raise AlreadyDecided(
                        f"{actor} already {said} {where}"
                        + (f" ({count}); each person counts once" if count else "")
                    )
        spec = form_spec(row)
        prior = next((v for v in votes if v.get("decision") == APPROVE), None)
        approving = decision == APPROVE and human
        values, chosen = forms.check(
            spec, form, option, approving=approving and prior is None, where=where
        )
        if decision == APPROVE and prior is not None:
            values, chosen = _concur(prior, values, chosen, form, where)
        vote = {
            "actor": actor,
            **({"delegate": delegate} if delegate else {}),
            "decision": decision,
            "option": chosen,
            "form": forms.redacted(spec, values) if spec.get("fields") else None,
            "comment": comment or None,
            "channel": channel,
            "recorded_by": recorder,
            "request_id": request_id,
            "at": time.time(),
        }
        votes.append(vote)
        row = dict(row)
        row["votes"] = json.dumps(votes, default=str)
        closes = not human or _closes(row, decision)
        recs: list[dict[str, Any]] = []
        if closes:
            side = [v for v in votes if v.get("decision") == decision] if human else [vote]
            first = side[0]
            row.update(
                status="approved" if decision == APPROVE else "rejected",
                decision=decision,
                actor=actor,
                channel=channel,
                comment=comment
                or next((v["comment"] for v in reversed(side) if v.get("comment")), None),
                decided_at=time.time(),
                option=first.get("option") if decision == APPROVE else None,
                form=json.dumps(first.get("form") if decision == APPROVE else vote.get("form")),
            )
        recs.append(_record(row))
        recs.append(
            _event(
                run_id,
                gate_id,
                "gate_decided" if closes else "gate_voted",
                decision=decision,
                actor=actor,
                delegate=delegate,
                recorded_by=recorder,
                channel=channel,
                comment=comment,
                option=chosen,
                form=vote["form"],
                request_id=request_id,
                progress=progress(row),
            )
        )
        recs.append(
            auditlog.row(
                kind="human" if human else channel,
                principal=actor,
                run_id=run_id,
                step_id=gate_id,
                capability="approval",
                decision=decision,
                arguments={
                    "channel": channel,
                    "comment": comment,
                    "recorded_by": recorder,
                    **{
                        k: v
                        for k, v in (
                            ("delegate", delegate),
                            ("option", chosen),
                            ("form", vote["form"]),
                            ("request_id", request_id),
                        )
                        if v is not None
                    },
                },
            )
        )
        transitions.commit(store, recs)
    _DECIDED_HERE.add((run_id, gate_id))
    return answer(row)


def _concur(
    prior: Mapping[str, Any],
    values: dict[str, Any],
    chosen: str | None,
    sent: Mapping[str, Any] | None,
    where: str,
) -> tuple[dict[str, Any], str | None]:
    """A later approval agrees with the first one's form and option; it may leave them out,
    and is refused (one line) if it sends something else."""
    first_form = prior.get("form") or {}
    if chosen is not None and chosen != prior.get("option"):
        raise FormError(
            f"{where}: {prior.get('actor')} approved with option {prior.get('option')!r}; "
            "approve that option or reject"
        )
    for name, value in (sent or {}).items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if first_form.get(name) == forms.REDACTED or values.get(name) != first_form.get(name):
            raise FormError(
                f"{where}: {prior.get('actor')} approved with {name} = "
                f"{first_form.get(name)!r}; approve those values or reject"
            )
    return dict(first_form), prior.get("option")


def _closes(row: Mapping[str, Any], decision: str) -> bool:
    t = tally(row)
    if decision == REJECT:
        return bool(t["rejections"] >= t["reject_needed"])
    return bool(t["approvals"] >= t["needed"] and not t["missing"])


def answer(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a decision returns: the gate's output, its status and its progress."""
    return {**output_of(row), "status": row.get("status"), "progress": progress(row)}


# Gates decided by code of this process (``airun_nb.approve`` in a notebook cell): the run goes
# on when that code asks (the cell is run again), not behind its back.
_DECIDED_HERE: set[tuple[str, str]] = set()


def decided_here(run_id: str, gate_id: str) -> bool:
    """Whether this process recorded the decision of the gate."""
    return (run_id, gate_id) in _DECIDED_HERE


def _time_out(store: Backend, row: Mapping[str, Any]) -> dict[str, Any]:
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


def expire(
    store: Backend, run_id: str, gate_id: str, *, reason: str | None = None
) -> dict[str, Any]:
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
    actor = row.get("actor")
    for vote in votes_of(row):
        if vote.get("actor") == actor and vote.get("decision") == row.get("decision"):
            actor = delegation.shown(vote)
    return (
        f"gate '{row['gate_id']}' of run {row['run_id']} was {prefix}{verb} by {actor} "
        f"via {row.get('channel')} at {stamp}{comment}"
    )


def output_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The gate step's output: the decision as a JSON-able mapping (``decision`` is
    ``approved`` or ``rejected``; ``by`` lists the deciders in order; secret form values are
    redacted)."""
    decision = row.get("decision")
    closed = row.get("status") in ("approved", "rejected")
    side = [v for v in votes_of(row) if v.get("decision") == decision] if closed else []
    by = [str(v["actor"]) for v in side] or ([str(row["actor"])] if closed else [])
    raw_form = row.get("form")
    form = json.loads(raw_form) if isinstance(raw_form, str) and raw_form else None
    delegated = {str(v["actor"]): str(v["delegate"]) for v in side if v.get("delegate")}
    return {
        **({"delegated": delegated} if delegated else {}),
        "decision": {APPROVE: "approved", REJECT: "rejected"}.get(str(decision))
        if closed
        else None,
        "approved": row.get("status") == "approved",
        "option": row.get("option"),
        "form": form if isinstance(form, dict) else {},
        "by": by,
        "comment": row.get("comment"),
        "actor": row.get("actor"),
        "channel": row.get("channel"),
        "decided_at": _iso_stored(row.get("decided_at")),
    }


def approved_line(row: Mapping[str, Any]) -> str:
    """``Approved by bob, carol (option ship): <comment>``: an approval on every surface."""
    out = output_of(row)
    by = ", ".join(shown_by(row)) or str(row.get("actor"))
    chosen = f" (option {out['option']})" if out["option"] else ""
    return f"Approved by {by}{chosen}" + (f": {row['comment']}" if row.get("comment") else "")


def rejected_line(row: Mapping[str, Any]) -> str:
    """``Rejected by bob: <comment>`` (the deciders in order): how a rejection is worded on
    every surface, and the error of the step it refused."""
    by = ", ".join(shown_by(row)) or str(row.get("actor"))
    return f"Rejected by {by}" + (f": {row['comment']}" if row.get("comment") else "")


def _iso_stored(when: Any) -> str | None:
    """A time as the store keeps it (whole microseconds), in ISO 8601 UTC: the same text
    whether ``when`` is the epoch seconds just recorded or the timestamp read back."""
    if when is None:
        return None
    if isinstance(when, datetime):
        return when.replace(tzinfo=timezone.utc).isoformat()
    micros = int(float(when) * 1_000_000)  # as the fold converts it
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)).isoformat()


def deadline_passed(row: Mapping[str, Any], now: float | None = None) -> bool:
    """Has the gate's deadline passed at ``now``: the store's clock (:meth:`Store.clock`)
    wherever the answer decides something; this machine's clock only for what is shown."""
    deadline = row.get("deadline")
    if deadline is None:
        return False
    value = _epoch(deadline) if isinstance(deadline, datetime) else float(deadline)
    return (processclock.now() if now is None else now) >= value


def db_flag(db: str | os.PathLike[str] | None) -> str:
    """`` --db PATH`` when ``db`` is not the store a terminal uses by default ($AIRUN_DB, else
    ./airun.duckdb), so a copied command reaches the same store; else ``""``."""
    if db is None:
        return ""
    from airun_nb.settings.environment import StoreURL, default_db, is_url

    if is_url(db) or isinstance(db, StoreURL):  # a team store: its URL, password left out
        url = config_url(str(db))
        return "" if url == str(default_db()) else f" --db {shlex.quote(url)}"
    path = Path(db).expanduser().absolute()
    with contextlib.suppress(OSError):
        default = default_db()
        if isinstance(default, Path) and path.resolve() == default.absolute().resolve():
            return ""
    return f" --db {shlex.quote(str(path))}"


def config_url(url: str) -> str:
    """A team store's URL as commands may show it (its password, if any, left out)."""
    from airun_nb.settings.environment import StoreURL

    return str(StoreURL(url))


def resume_command(run_id: str, db: str | os.PathLike[str] | None = None) -> str:
    return f"airun resume {run_id}{db_flag(db)}"


def commands(
    run_id: str,
    gate_id: str,
    *,
    db: str | os.PathLike[str] | None = None,
    row: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The terminal commands that decide a gate, ready to copy: with ``--db`` when the store is
    not the default one, and placeholders for the gate's form fields and options."""
    flag = db_flag(db)
    extra = ""
    if row is not None:
        spec = form_spec(row)
        for name, f in forms.fields_of(spec).items():
            if f.required and f.default is None:
                extra += f" --set {name}=..."
        if spec.get("options"):
            extra += f" --option {'|'.join(spec['options'])}"
    return {
        "approve": f"airun approve {run_id} {gate_id}{extra}{flag}",
        "reject": f"airun reject {run_id} {gate_id}{flag}",
    }


def cancel_open(store: Backend, run_id: str, *, reason: str) -> list[dict[str, Any]]:
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
    form: Mapping[str, Any] | None = None,
    option: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    return decide(
        open_store(db),
        run_id,
        gate_id,
        decision,
        actor=identity.acting_as(by),
        channel=channel,
        comment=comment,
        form=form,
        option=option,
        request_id=request_id,
    )


def approve(
    run_id: str,
    gate_id: str,
    *,
    by: str | None = None,
    comment: str | None = None,
    db: str | os.PathLike[str] | None = None,
    form: Mapping[str, Any] | None = None,
    option: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Approve a gate (for scripts and agents) with the gate's ``form`` values and ``option``.
    The run continues when it next resumes."""
    return _decide_now(APPROVE, run_id, gate_id, by, comment, db, "api", form, option, request_id)


def reject(
    run_id: str,
    gate_id: str,
    *,
    by: str | None = None,
    comment: str | None = None,
    db: str | os.PathLike[str] | None = None,
    form: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Reject a gate; the run rolls back when it next resumes."""
    return _decide_now(REJECT, run_id, gate_id, by, comment, db, "api", form, None, request_id)
