"""What the API and the pages change: a gate's decision and a run's cancel, for one identity.

Both go through the runtime's own code (``gate.decide``, ``cancellation.cancel``), so a decision
made here is the same first-wins decision as one from the CLI or the notebook.
"""

from __future__ import annotations

from typing import Any

from airun_nb.engine import cancel as cancellation
from airun_nb.gates import gate
from airun_nb.service.auth import BadInput, NotFound, Refused, TooLarge
from airun_nb.service.tokens import Identity
from airun_nb.store.backend import Backend

MAX_COMMENT = 4000


def check_comment(comment: Any) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise BadInput("comment must be text")
    if len(comment) > MAX_COMMENT:
        raise TooLarge(f"comment is {len(comment)} characters; at most {MAX_COMMENT}")
    return comment.strip() or None


def decide_gate(
    store: Backend,
    who: Identity,
    run_id: str,
    gate_id: str,
    decision: str,
    comment: Any,
    *,
    channel: str,
    form: Any = None,
    option: Any = None,
    request_id: Any = None,
) -> dict[str, Any]:
    text = check_comment(comment)
    if form is not None and not isinstance(form, dict):
        raise BadInput('form must be an object of field values, e.g. {"amount": 12}')
    if option is not None and not isinstance(option, str):
        raise BadInput("option must be text")
    if request_id is not None and not isinstance(request_id, str):
        raise BadInput("request_id must be text")
    if not who.may_decide:
        raise Refused(f"{who.user} has role {who.role} and may not decide gates")
    if not store.has_run(run_id):
        raise NotFound(f"no run '{run_id}'")
    if gate.gate_row(store, run_id, gate_id) is None:
        raise NotFound(f"run {run_id} has no gate '{gate_id}'")
    out = gate.decide(
        store,
        run_id,
        gate_id,
        decision,
        actor=who.user,
        channel=channel,
        comment=text,
        recorded_by=who.user,  # the token's user is the authenticated identity
        form=form,
        option=option,
        request_id=request_id,
    )
    return {"run_id": run_id, "gate_id": gate_id, **out}


def cancel_run(
    store: Backend, who: Identity, run_id: str, *, rollback: bool, comment: Any, channel: str
) -> dict[str, Any]:
    text = check_comment(comment)
    if not who.may_decide:
        raise Refused(f"{who.user} has role {who.role} and may only read")
    row = store.run_row(run_id)
    if row is None:
        raise NotFound(f"no run '{run_id}'")
    if who.role != "admin" and who.user != row["launched_by"]:
        raise Refused(
            f"{who.user} may not cancel run {run_id}: only its launcher ({row['launched_by']}) or an "
            "admin token may"
        )
    return cancellation.cancel(
        run_id,
        rollback=rollback,
        by=who.user,
        channel=channel,
        comment=text,
        db=store.path,
        authenticated=True,
    )
