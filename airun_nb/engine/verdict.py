"""What the policy says about a step before it runs, and the audit rows of what it did."""

from __future__ import annotations

from typing import Any

from airun_nb import capabilities
from airun_nb.engine.context import RunContext
from airun_nb.engine.state import StepState
from airun_nb.governance import audit as auditlog
from airun_nb.governance import policy as policy_mod
from airun_nb.spec import dialect


def check(run: RunContext, st: StepState) -> tuple[policy_mod.Verdict, dict[str, Any] | None]:
    """The policy's verdict for a step, and its audit record (None without a policy)."""
    s = st.spec
    if s.kind in ("parallel", "foreach"):  # structure, not an action: nothing to decide
        return policy_mod.Verdict("allow", None, None, run.user, s.kind, "low"), None
    cap = capabilities.policy_name(s.kind, s.body)
    risk = capabilities.risk_of(s.kind, s.body, s.risk)
    verdict = run.policy.evaluate(run.user, cap, risk)
    for other in dialect.principals(run.spec.metadata, s.agent):  # owner, agent: tighten only
        seen = run.policy.evaluate(other, cap, risk)
        if policy_mod.DECISIONS.index(seen.decision) > policy_mod.DECISIONS.index(verdict.decision):
            verdict = seen
    if not run.policy.active:
        return verdict, None  # no policy configured: nothing was decided
    rec = auditlog.row(
        kind="policy",
        principal=verdict.principal,
        run_id=run.run_id,
        step_id=s.id,
        capability=cap,
        decision=verdict.decision,
        risk=risk,
        rule=verdict.rule,
    )
    return verdict, rec


def execution_audit(run: RunContext, st: StepState, decision: str, result: str) -> dict[str, Any]:
    """The audit record of a step that executed (or failed executing)."""
    s = st.spec
    args: Any = st.cap_args if s.kind == "capability" else (s.with_ or None)
    undo_ref = (
        f"{run.run_id}/{s.id}/{st.attempts}" if st.compensation and decision == "executed" else None
    )
    return auditlog.row(
        kind="capability" if s.kind == "capability" else "step",
        principal=run.user,
        run_id=run.run_id,
        step_id=s.id,
        capability=capabilities.policy_name(s.kind, s.body),
        decision=decision,
        risk=capabilities.risk_of(s.kind, s.body, s.risk),
        arguments=args,
        result=result,
        undo_ref=undo_ref,
    )
