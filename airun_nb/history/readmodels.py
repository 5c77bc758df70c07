"""Read models of the store for approvers: runs, one run's detail, the gates a user may decide.

The approval service and the terminal dashboard show the same things, so they read them here:
plain JSON-able dicts with ISO 8601 UTC timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airun_nb.errors import AirunError, RunNotFound
from airun_nb.gates import delegation, gate
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store
from airun_nb.store.transitions import RUN_STATUSES  # every status a run can have, for filters

MAX_RUNS = 500


class FilterError(AirunError):
    """A filter value is not one the store knows."""


def iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc).isoformat()
    return datetime.fromtimestamp(float(value), tz=timezone.utc).isoformat()


def parse_since(text: str | None) -> datetime | None:
    """An ISO 8601 time (``2026-01-31``, ``2026-01-31T12:00:00Z``) as naive UTC."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"since={text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)"
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def runs(
    store: Backend,
    *,
    workflow: str | None = None,
    status: str | None = None,
    since: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Runs, newest first, with their step counts and open gates."""
    clauses: list[str] = []
    params: list[Any] = []
    if workflow:
        clauses.append("r.workflow = ?")
        params.append(workflow)
    if status:
        if status not in RUN_STATUSES:
            raise FilterError(
                f"status={status!r} is not a run status (one of {', '.join(RUN_STATUSES)})"
            )
        clauses.append("r.status = ?")
        params.append(status)
    after = parse_since(since)
    if after is not None:
        clauses.append("r.created_at >= ?")
        params.append(after)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    limit = max(1, min(int(limit), MAX_RUNS))
    rows = store.query_dicts(
        f"""SELECT r.run_id, r.workflow, r.status, r.launched_by, r.created_at, r.started_at,
                   r.finished_at, r.failed_step, r.error, r.owner_pid, r.owner_host,
                   r.owner_token, r.source,
                   (SELECT count(*) FROM steps s WHERE s.run_id = r.run_id) AS steps,
                   (SELECT count(*) FROM steps s WHERE s.run_id = r.run_id
                       AND s.status = 'completed') AS completed_steps,
                   (SELECT count(*) FROM approvals a WHERE a.run_id = r.run_id
                       AND a.status = 'open') AS open_gates
            FROM runs r {where} ORDER BY r.created_at DESC, r.run_id LIMIT {limit}""",
        params,
    )
    return [_run(r, store.path) for r in rows]


def _run(r: Mapping[str, Any], db: Any = None) -> dict[str, Any]:
    hidden = ("owner_pid", "owner_host", "owner_token", "source")
    out = {k: v for k, v in r.items() if k not in hidden}
    for key in ("created_at", "started_at", "finished_at"):
        out[key] = iso(r.get(key))
    for key in ("steps", "completed_steps", "open_gates"):
        if key in out:
            out[key] = int(out[key] or 0)
    if "open_gates" in out:
        out["state"], out["resumed_by"] = run_state(r, int(out["open_gates"]), db)
    return out


APPROVED_WAITING = "approved, waiting to resume"


rejected_line = gate.rejected_line


def rejected_steps(detail: Mapping[str, Any]) -> dict[str, str]:
    """Steps of a run that ended on a human rejection (a gate, or the policy gate before a
    step), with the line to show instead of a failure."""
    out: dict[str, str] = {}
    for g in detail.get("gates") or []:
        if g.get("status") == "rejected" and g.get("channel") not in ("timeout", "policy"):
            by = ", ".join(g.get("by_shown") or g.get("by") or []) or str(g.get("actor"))
            line = f"Rejected by {by}" + (f": {g['comment']}" if g.get("comment") else "")
            out[str(g["gate_id"]).removesuffix(".approval")] = line  # as rejected_line says
    return out


def run_state(r: Mapping[str, Any], open_gates: int, db: Any = None) -> tuple[str, str | None]:
    """The run's state as people read it, and who continues it when it waits.

    A run waits while one of its gates is open ("waiting for approval"); once every gate it
    stopped at is decided it still waits until something resumes it: "approved, waiting to
    resume" (a rejection too: resuming rolls it back). Who resumes it: a worker serving its
    queue when it was submitted (``airun submit``), the live process that launched it (a
    notebook kernel continues it by itself), else ``airun resume``."""
    status = str(r.get("status"))
    if status != "waiting":
        return status.replace("_", " "), None
    from airun_nb.store.owner import owner_alive
    from airun_nb.store.queue import continued_by

    command = gate.resume_command(str(r["run_id"]), db)
    worker = continued_by(r.get("source"))
    if worker is not None:  # submitted: whichever worker serves its queue, once decided
        who = worker
    elif owner_alive(r):
        who = f"the process that launched it (pid {r.get('owner_pid')}) continues it; if not, `{command}`"
    else:
        who = (
            f"nothing runs it now: `{command}` (or re-run its notebook cell) continues it; "
            "once its gates are decided, so does a worker serving the default queue"
        )
    if open_gates:
        return "waiting for approval", who
    return APPROVED_WAITING, who


def run_detail(store: Backend, run_id: str, *, user: str | None = None) -> dict[str, Any]:
    """One run with its steps, attempts and gates (with ``user``: may they decide each)."""
    found = runs_by_id(store, run_id)
    steps = store.query_dicts(
        """SELECT step_id, kind, status, attempts, started_at, finished_at, replayed_from,
                  reason, error, comp_status, comp_error
           FROM steps WHERE run_id = ? ORDER BY position""",
        [run_id],
    )
    attempts = store.query_dicts(
        """SELECT step_id, phase, attempt, status, started_at, finished_at, error
           FROM attempts WHERE run_id = ? ORDER BY started_at, step_id, attempt""",
        [run_id],
    )
    gates = store.query_dicts(
        "SELECT a.*, r.source AS run_source FROM approvals a LEFT JOIN runs r USING (run_id) "
        "WHERE a.run_id = ? ORDER BY a.opened_at",
        [run_id],
    )
    out = found
    out["steps"] = [_times(s, ("started_at", "finished_at")) for s in steps]
    out["attempts"] = [_times(a, ("started_at", "finished_at")) for a in attempts]
    out["gates"] = [gate_view(g, user, db=store.path) for g in gates]
    return out


def runs_by_id(store: Backend, run_id: str) -> dict[str, Any]:
    rows = store.query_dicts(
        """SELECT run_id, workflow, status, launched_by, created_at, started_at, finished_at,
                  failed_step, error, params, owner_pid, owner_host, owner_token, source,
                  source AS notebook,
                  (SELECT count(*) FROM approvals a WHERE a.run_id = r.run_id
                       AND a.status = 'open') AS open_gates
           FROM runs r WHERE run_id = ?""",
        [run_id],
    )
    if not rows:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    return _run(rows[0], store.path)


def _times(row: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = dict(row)
    for key in keys:
        out[key] = iso(row.get(key))
    if "attempts" in out and out["attempts"] is not None:
        out["attempts"] = int(out["attempts"])
    if "attempt" in out and out["attempt"] is not None:
        out["attempt"] = int(out["attempt"])
    return out


def gate_view(g: Mapping[str, Any], user: str | None = None, *, db: Any = None) -> dict[str, Any]:
    """A gate as shown to a person; with ``user``, whether they may decide it and why not.

    Besides the row: who may decide (``who_may_decide``), the form's fields and options, the
    votes so far and ``progress`` ("1 of 2 approvals"), the decided option, form and deciders,
    and the terminal commands (with ``--db`` when ``db`` is not the default store)."""
    approvers = gate.approver_list(g)
    spec = gate.form_spec(g)
    decided = gate.output_of(g)
    out: dict[str, Any] = {
        "run_id": g["run_id"],
        "gate_id": g["gate_id"],
        "workflow": g.get("workflow"),
        "status": g.get("status"),
        "message": g.get("message"),
        "preview_text": g.get("preview_text"),
        "preview_html": g.get("preview_html"),
        "approvers": approvers,
        "approvers_shown": gate.expand_approvers(approvers)[1] if approvers else [],
        "launched_by": g.get("launched_by"),
        "allow_self_approval": bool(g.get("allow_self_approval")),
        "opened_at": iso(g.get("opened_at")),
        "deadline": iso(g.get("deadline")),
        "decision": g.get("decision"),
        "actor": g.get("actor"),
        "channel": g.get("channel"),
        "comment": g.get("comment"),
        "decided_at": iso(g.get("decided_at")),
        "who_may_decide": gate.who_may_decide(g),
        "fields": [{"name": name, **f.as_dict()} for name, f in gate.forms.fields_of(spec).items()],
        "options": list(spec.get("options") or []),
        "quorum": int(spec.get("quorum") or 1),
        "progress": gate.progress(g),
        "votes": [
            {
                "actor": v.get("actor"),
                "delegate": v.get("delegate"),
                "shown": delegation.shown(v),
                "decision": v.get("decision"),
                "channel": v.get("channel"),
                "option": v.get("option"),
                "comment": v.get("comment"),
                "at": iso(v.get("at")),
            }
            for v in gate.votes_of(g)
        ],
        "option": decided["option"],
        "form": decided["form"],
        "by": decided["by"],
        "by_shown": gate.shown_by(g) if decided["decision"] else [],
        "commands": gate.commands(str(g["run_id"]), str(g["gate_id"]), db=db, row=g),
        "notebook": g.get("run_source"),  # the notebook that launched the run, when known
    }
    if user is not None:
        out["refusal"] = refusal(g, user, db=db)
        out["may_decide"] = out["refusal"] is None
        if out["may_decide"] and db is not None and g.get("status") == "open":
            try:
                gate.check_actor(g, user)
            except gate.ApprovalError:
                out["acting_for"] = gate.acting_for(open_store(db), g, user)
    return out


def refusal(g: Mapping[str, Any], user: str, *, db: Any = None) -> str | None:
    """Why ``user`` may not decide this gate now, or None if they may (with ``db``, a
    delegation to ``user`` counts: they decide for the person who delegated)."""
    if g.get("status") != "open":
        return gate.describe_decision(g, prefix="already ")
    if gate.deadline_passed(g):
        return f"the deadline passed at {gate.iso_utc(g.get('deadline'))}"
    try:
        gate.check_actor(g, user)
    except gate.ApprovalError as exc:
        principal = gate.acting_for(open_store(db), g, user) if db is not None else None
        if principal is None:
            return exc.message
        user = principal
    for vote in gate.votes_of(g):
        if vote.get("actor") == user:
            said = "approved" if vote.get("decision") == gate.APPROVE else "rejected"
            return f"{user} already {said} this gate ({gate.progress(g)})"
    return None


def open_gates(
    store: Backend, user: str | None = None, *, decidable_only: bool = False
) -> list[dict[str, Any]]:
    """Open gates, oldest first; with ``user`` each says whether they may decide it."""
    rows = store.query_dicts(
        "SELECT a.*, r.source AS run_source FROM approvals a LEFT JOIN runs r USING (run_id) "
        "WHERE a.status = 'open' ORDER BY a.opened_at"
    )
    views = [gate_view(r, user, db=store.path) for r in rows]
    if decidable_only:
        views = [v for v in views if v.get("may_decide")]
    return views


def gate_or_none(store: Backend, run_id: str, gate_id: str) -> dict[str, Any] | None:
    return gate.gate_row(store, run_id, gate_id)
