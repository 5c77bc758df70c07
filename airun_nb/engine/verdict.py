"""What the policy says about a step before it runs, and the audit rows of what it did."""

from __future__ import annotations

from typing import Any

from airun_nb import capabilities
from airun_nb.engine.context import RunContext
from airun_nb.engine.state import StepState
from airun_nb.governance import audit as auditlog
from airun_nb.governance import mediator
from airun_nb.governance import policy as policy_mod
from airun_nb.spec import dialect


def principals(run: RunContext, agent: str | None = None) -> list[str]:
    """Everyone an action of ``run`` acts for: the run's launcher first (a resumed or rolled-back
    run keeps it), the launcher of the run a fork or replay copies, the acting user, then the
    seed dialect's owner and agent. The policy's strictest verdict over all of them counts."""
    plan = getattr(run, "plan", None)
    source = getattr(plan, "source_launcher", None)
    return [
        run.ledger.launched_by or run.user,
        *([source] if source else []),
        run.user,
        *dialect.principals(run.spec.metadata, agent),
    ]


def check(run: RunContext, st: StepState) -> tuple[policy_mod.Verdict, dict[str, Any] | None]:
    """The policy's verdict for a step (and for the compensation it declares: an action the
    step may not take, it may not leave to its rollback either), and its audit record (None
    without a policy)."""
    s = st.spec
    if s.kind in ("parallel", "foreach"):  # structure, not an action: nothing to decide
        return policy_mod.Verdict("allow", None, None, run.user, s.kind, "low"), None
    who = principals(run, s.agent)
    action = mediator.of_step(s.kind, s.body, s.risk)
    verdict = mediator.decide(run.policy, who, action)
    comp = mediator.of_compensation(s.compensate) if s.compensate else None
    if comp is not None:
        seen = mediator.decide(run.policy, who, comp)
        if mediator.stricter(verdict, seen) is seen and seen.decision != verdict.decision:
            seen.capability = f"{seen.capability} (its compensation)"
            verdict = seen
    if not run.policy.active:
        return verdict, None  # no policy configured: nothing was decided
    rec = auditlog.row(
        kind="policy",
        principal=verdict.principal,
        run_id=run.run_id,
        step_id=s.id,
        capability=action.capability,
        decision=verdict.decision,
        risk=action.risk,
        rule=verdict.rule,
    )
    return verdict, rec


def check_compensation(run: RunContext, st: StepState, comp: dict[str, Any]) -> str | None:
    """Why a compensation about to run is refused by the policy now, or None. A compensation
    needing approval runs only for a step that itself passed the policy (its gate covered it)."""
    action = mediator.of_compensation(comp)
    if action is None:
        return None
    verdict = mediator.decide(run.policy, principals(run, st.spec.agent), action)
    if verdict.decision == "deny":
        return f"its compensation is denied by the policy ({verdict.reason})"
    return None


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
