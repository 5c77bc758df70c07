"""A run's side of an approval gate: open it, wait for (or take) its decision, and carry the
decision into the step.

The gate itself (its row, who may decide, first decision wins) is :mod:`airun_nb.gates.gate`; this
module decides what the run does meanwhile: suspend (the cell ends, the run waits), poll, or take
the decision from a policy or the deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from airun_nb.engine import stepkinds as kinds
from airun_nb.engine import verdict as governance
from airun_nb.engine.context import RunContext
from airun_nb.engine.state import S_COMPLETED, S_FAILED, S_WAITING, StepState
from airun_nb.gates import gate, notify
from airun_nb.governance import audit as auditlog
from airun_nb.governance import mediator
from airun_nb.governance.policy import Verdict
from airun_nb.settings import environment as config
from airun_nb.settings.environment import StoreURL
from airun_nb.spec import templates
from airun_nb.spec.approval import GateConfig, parse_config
from airun_nb.store import outputs
from airun_nb.store.backend import Backend

POLL_SECONDS = 0.25
SAFETY_SECONDS = 1.0  # on a team store: a look this often (deadlines) if nothing is notified


def run_gate(run: RunContext, st: StepState, ctx: Mapping[str, Any]) -> None:
    """An ``approval:`` step: its output is the decision."""
    s = st.spec
    conf = parse_config(s.body, step=s.id)
    message = templates.render(
        conf.message or f"Approve step '{s.id}' of {run.spec.name}?",
        ctx,
        step=s.id,
        field="approval.message",
    )
    preview = None
    if conf.show is not None:
        shown = templates.render(conf.show, ctx, step=s.id, field="approval.show")
        preview = auditlog.redact_keys(shown)
    row = await_gate(run, st, s.id, conf, str(message), preview, counts_attempt=True)
    if row is None:
        return
    st.finished_at = time.time()
    st.finish_seq = run.ledger.next_seq()
    if row["status"] == "approved":
        st.value = gate.output_of(row)
        st.out = outputs.encode(st.value, run.store, f"{run.run_id}/{s.id}/{st.attempts}")
        st.reason = gate.approved_line(row)
        run.executed.append(s.id)
        run.ledger.step(st, S_COMPLETED)
    else:
        refused(run, st, row)
        run.ledger.step(st, S_FAILED)


def refused(run: RunContext, st: StepState, row: Mapping[str, Any]) -> None:
    """Carry a rejection (or an expiry) into the step; the caller records it."""
    st.finished_at = time.time()
    st.error = gate.rejected_line(row) if row["status"] == "rejected" else str(row.get("comment"))
    run.rejected = row["status"] == "rejected"
    run.rejected_by_person = run.rejected and row.get("channel") not in ("policy", "timeout")


def policy_gate(run: RunContext, st: StepState, verdict: Verdict) -> bool | None:
    """A gate the policy inserted before a step: True approved, False refused, None waits."""
    s = st.spec
    conf = GateConfig(approvers=verdict.approvers, on_timeout="reject", four_eyes=True)
    message = (
        f"The policy requires approval before step '{s.id}' runs {verdict.capability} "
        f"(risk {verdict.risk}) for {verdict.principal}"
        + (f" (rule '{verdict.rule}')" if verdict.rule else "")
    )
    rendered = templates.render(s.with_, run.scope.context(), step=s.id, field="with")
    preview = auditlog.redact_keys(rendered) or None  # no passwords or tokens in a preview
    row = await_gate(run, st, f"{s.id}.approval", conf, message, preview, counts_attempt=False)
    if row is None:
        return None
    if row["status"] == "approved":
        return True
    refused(run, st, row)
    st.finish_seq = run.ledger.next_seq()
    run.ledger.step(st, S_FAILED)
    return False


def await_gate(
    run: RunContext,
    st: StepState,
    gate_id: str,
    conf: GateConfig,
    message: str,
    preview: Any,
    *,
    counts_attempt: bool,
) -> dict[str, Any] | None:
    """Open (or find) a gate and get its decision; None while it waits (suspend mode)."""
    preview_text = preview_html = None
    if preview is not None:
        preview_text, preview_html = preview_forms(preview)
    row, opened = gate.open_gate(
        run.store,
        run_id=run.run_id,
        workflow=run.spec.name,
        gate_id=gate_id,
        config=conf,
        message=message,
        preview_text=preview_text,
        preview_html=preview_html,
        launched_by=run.ledger.launched_by,
    )
    if opened:
        if counts_attempt:
            st.attempts += 1
        st.started_at = time.time()
        run.ledger.step(st, S_WAITING, notify=False)
        target = conf.notify or st.spec.notify
        if not target and run.spec.seed_dialect:
            target = config.seed_approval_webhook()  # the old AI_FIRST_APPROVAL_WEBHOOK
        if target:
            _notify(run, st, gate_id, target, row)
    mode = gate.resolve_mode(conf)
    while row["status"] == "open":
        if gate.deadline_passed(row, run.store.clock()):  # the store's clock decides
            if conf.on_timeout == "fail":
                row = gate.expire(run.store, run.run_id, gate_id)
                break
            gate.decide(
                run.store,
                run.run_id,
                gate_id,
                conf.on_timeout,
                actor="timeout",
                channel="timeout",
                comment="no decision before the deadline",
            )
        elif mode == "policy":
            found = gate.policy_decision(run.spec.name, gate_id)
            if found is None:
                row = gate.expire(
                    run.store,
                    run.run_id,
                    gate_id,
                    reason="no policy decision for this gate (set AIRUN_APPROVAL=approve or "
                    "reject, or 'approvals:' in the settings)",
                )
                break
            gate.decide(
                run.store,
                run.run_id,
                gate_id,
                found[0],
                actor=f"policy:{found[1]}",
                channel="policy",
            )
        elif mode == "suspend":
            run.open_gates.append(row)
            run.ledger.step(st, S_WAITING)
            return None
        else:  # wait: for a decision from any channel (a team store notifies its commits)
            run.store.wait_for_change(POLL_SECONDS if _file(run.store) else SAFETY_SECONDS)
        found_row = gate.gate_row(run.store, run.run_id, gate_id)
        assert found_row is not None
        row = found_row
    return row


def _notify(
    run: RunContext, st: StepState, gate_id: str, target: Any, row: Mapping[str, Any]
) -> None:
    payload = notify.payload(row, run.store.path)
    inputs = (run.spec.dialect.get("approval_inputs") or {}).get(st.id) or {}
    extra = inputs.get("webhook_payload")  # a seed gate's fields for the receiver (channel...)
    if isinstance(extra, Mapping):
        payload = {**{str(k): v for k, v in extra.items()}, **payload}
    who = governance.principals(run, st.spec.agent)

    def check(t: Any) -> str | None:
        action = mediator.of_notify(t)
        if action is None:
            return None  # a callable the notebook's own code gave
        verdict = mediator.decide(run.policy, who, action)
        if verdict.decision != "allow":  # nobody can approve a notification: refused
            return f"refused by the policy ({verdict.reason})"
        return None

    error = notify.notify(
        target,
        payload,
        lambda name: kinds.resolve_callable(name, run.namespace, step=st.id),
        check=check,
        egress=run.capability_context(st.id),
    )
    run.ledger.note(run.ledger.event("notify_failed" if error else "notified", st.id, error=error))


def preview_forms(value: Any) -> tuple[str, str]:
    """Text and HTML forms of a gate's ``show`` value (a DataFrame renders as a table)."""
    import html as _html

    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return value.to_string(max_rows=20, max_cols=12), value.to_html(max_rows=20, max_cols=12)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, indent=2, default=str)
    else:
        text = str(value)
    return text, f"<pre>{_html.escape(text)}</pre>"


def _file(store: Backend) -> bool:
    """Is the store a file (looked at), rather than a server that notifies its commits?"""
    return not isinstance(store.path, StoreURL)
