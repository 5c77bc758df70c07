"""One step, executed: its ``when`` skip, the policy's verdict, then attempts with retries,
backoff and a timeout, each checkpointed through the ledger before the next thing happens."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from airun_nb import capabilities
from airun_nb.engine import deadline, executor, gatekeeper
from airun_nb.engine import stepkinds as kinds
from airun_nb.engine import verdict as governance
from airun_nb.engine.context import RunContext
from airun_nb.engine.retries import Exhausted, retrying
from airun_nb.engine.scope import StepRefs
from airun_nb.engine.state import (
    S_COMPLETED,
    S_FAILED,
    S_INTERRUPTED,
    S_RUNNING,
    S_SKIPPED,
    StepState,
)
from airun_nb.engine.timeouts import (
    CheckFailed,
    StepTimeout,
    describe,
    full_traceback,
    with_timeout,
)
from airun_nb.errors import AirunError
from airun_nb.governance import audit as auditlog
from airun_nb.spec import dialect, templates
from airun_nb.store import outputs
from airun_nb.store.database import crashpoint


def run_step(run: RunContext, st: StepState) -> None:
    s = st.spec
    ctx = run.scope.context()
    if s.bindings:
        ctx.update(s.bindings)
    skip_reason = _skip_reason(run, st, ctx)
    if s.kind == "approval" and skip_reason is None:
        # the mediator allows opening a gate (it acts on nothing); its notify targets are
        # decided one by one when the gate opens
        governance.check(run, st)
        gatekeeper.run_gate(run, st, ctx)
        return
    ledger = run.ledger
    if skip_reason is not None:
        st.reason = skip_reason
        st.started_at = st.finished_at = time.time()
        st.finish_seq = ledger.next_seq()
        st.value = None
        st.out = {"output_kind": "none"}
        ledger.step(st, S_SKIPPED, ledger.event("step_skipped", st.id, reason=skip_reason))
        return
    verdict, policy_audit = governance.check(run, st)
    if verdict.decision == "deny":
        st.started_at = st.finished_at = time.time()
        st.finish_seq = ledger.next_seq()
        st.error = f"denied by the policy ({verdict.reason})"
        ledger.step(
            st,
            S_FAILED,
            ledger.event("step_denied", st.id, rule=verdict.rule),
            before=[policy_audit] if policy_audit else [],
        )
        return
    if verdict.decision == "require_approval":
        if policy_audit is not None:
            ledger.note(policy_audit)
        policy_audit = None
        if not gatekeeper.policy_gate(run, st, verdict):
            return
    _attempts(run, st, ctx, policy_audit)


def _attempts(
    run: RunContext, st: StepState, ctx: Mapping[str, Any], policy_audit: dict[str, Any] | None
) -> None:
    s = st.spec
    ledger = run.ledger
    att: dict[str, Any] = {}
    audit_first = [policy_audit] if policy_audit else []

    def attempt(tries: int) -> tuple[Any, dict[str, Any]]:
        st.attempts += 1
        now = time.time()
        st.started_at = st.started_at if tries > 1 and st.started_at else now
        st.error = st.traceback = None
        st.retry_at = None
        if st.reason == "waiting for approval":
            st.reason = None  # the gate before it was decided; the step itself runs now
        att.clear()
        att.update(phase="execute", attempt=st.attempts, status=S_RUNNING, started_at=now)
        att["pid"] = os.getpid()
        before = audit_first[:] if tries == 1 else []
        ledger.step(st, S_RUNNING, att=att, before=before)
        crashpoint("step:started")
        value = _attempt(run, st, ctx)
        crashpoint("step:returned")
        return value, outputs.encode(value, run.store, f"{run.run_id}/{st.id}/{st.attempts}")

    def failed(exc: Exception, tries: int, delay: float | None) -> None:
        err = auditlog.redact_text(describe(exc))  # stderr may carry a token
        st.error = err
        st.traceback = auditlog.redact_text(full_traceback(exc))
        end = time.time()
        ended = {**att, "status": S_FAILED, "finished_at": end, "error": err}
        ended["traceback"] = st.traceback
        n = att["attempt"]
        if delay is not None:
            st.retry_at = end + delay
            event = ledger.event("step_retry", st.id, attempt=n, error=err, delay=delay)
            ledger.update(st, event, att=ended)
            return
        st.finished_at = end
        st.finish_seq = ledger.next_seq()
        if s.compensate_on_failure:
            st.compensation = render_compensation(run, st) or st.compensation
        kind = {"error_kind": _kind(exc)} if _kind(exc) else {}
        ledger.step(
            st,
            S_FAILED,
            ledger.event("step_failed", st.id, attempt=n, error=err, **kind),
            governance.execution_audit(run, st, "failed", err),
            att=ended,
        )

    def interrupted() -> None:
        st.error = "interrupted"
        ended = {**att, "status": S_INTERRUPTED, "finished_at": time.time()}
        ledger.step(st, S_INTERRUPTED, att={**ended, "error": "interrupted"}, notify=False)

    try:
        value, out = retrying(s.retry, attempt, failed=failed, interrupted=interrupted)
    except Exhausted:
        return
    st.retry_at = None
    st.value = value
    st.out = out
    st.finished_at = time.time()
    st.finish_seq = ledger.next_seq()
    user_comp = render_compensation(run, st)
    if user_comp is not None:
        st.compensation = user_comp
    elif st.compensation and "args" in (st.compensation.get("with") or {}):
        st.compensation["with"]["result"] = _jsonable(value)
    done = {**att, "status": S_COMPLETED, "finished_at": st.finished_at}
    audit = governance.execution_audit(run, st, "executed", capabilities.summarize(value))
    # Recorded before the listener hears of it, and before the output is bound.
    ledger.step(st, S_COMPLETED, audit, att=done, notify=False)
    crashpoint("step:recorded")
    run.executed.append(st.id)
    if s.output and run.bind_output:
        run.namespace[s.output] = value  # type: ignore[index]
    ledger.listener.changed(ledger.subject, st)


def _kind(exc: BaseException) -> str | None:
    """What kind of failure ended the step, from its type (for ``airun exec``'s exit code)."""
    if isinstance(exc, StepTimeout):
        return "timeout"
    return getattr(exc, "exit_kind", None)


def _skip_reason(run: RunContext, st: StepState, ctx: Mapping[str, Any]) -> str | None:
    for n in st.spec.needs:
        if run.states[n].status == S_SKIPPED:
            return f"upstream '{n}' was skipped"
    when = st.spec.when
    if when is not None and not templates.evaluate_condition(when, ctx, step=st.id):
        return f"when: {when.strip()} is false"
    return None


def _attempt(run: RunContext, st: StepState, ctx: Mapping[str, Any]) -> Any:
    s = st.spec
    limit = deadline.step_limit(run.run_id, s.timeout, run.spec.deadline)
    cursors: list[Any] = []
    if limit is None:
        value = _invoke(run, st, ctx)
    else:
        try:
            value = with_timeout(lambda: _invoke(run, st, ctx, cursors.append), limit)
        except StepTimeout:
            for cur in cursors:  # a query past its time stops now, not when it would end
                cur.interrupt()
            raise
    if isinstance(value, Exception):
        raise value  # a step that returns an error value fails
    if s.check:
        ok = templates.evaluate_condition(s.check, {**ctx, "result": value}, step=st.id)
        if not ok:
            raise CheckFailed(f"check failed: {s.check.strip()} (result: {_short(value)})")
    return value


def _invoke(
    run: RunContext,
    st: StepState,
    ctx: Mapping[str, Any],
    on_cursor: Callable[[Any], None] | None = None,
) -> Any:
    s = st.spec
    if s.kind == "call":
        kwargs = templates.render(s.with_, ctx, step=s.id, field="with")
        assert st.fn is not None
        if (s.executor or run.spec.executor) == "dask":
            key = f"airun-{run.run_id}-{s.id}-{st.attempts}"
            return executor.submit(st.fn, kwargs, key=key)
        return st.fn(**kwargs)
    if s.kind == "python":
        env = dict(run.namespace)
        env.update(ctx)
        env.update(templates.render(s.with_, ctx, step=s.id, field="with"))
        return kinds.run_python(str(s.body), s.id, env)
    if s.kind == "sql":
        refs = StepRefs(run.scope)
        sql = templates.render(str(s.body), {**ctx, "steps": refs}, step=s.id, field="sql")
        relations = {sid: run.scope.output_of(sid) for sid in refs.used}
        return run.sql.run(str(sql), relations, run.namespace, on_cursor)
    if s.kind == "parallel":
        return None
    if s.kind == "foreach":
        return [run.scope.output_of(child) for child in s.body]
    if s.kind == "capability":
        return _run_capability(run, st, ctx)
    raise AirunError(f"step '{s.id}': kind '{s.kind}' cannot run here")


def _run_capability(run: RunContext, st: StepState, ctx: Mapping[str, Any]) -> Any:
    s = st.spec
    cap = capabilities.get(str(s.body))
    args = templates.render_with(s.with_, ctx, step=s.id, field="with", capability=cap.name)
    cctx = run.capability_context(st.id)
    prepared = (
        st.compensation if st.compensation and "prepared_attempt" in st.compensation else None
    )
    if cap.prepare is not None and prepared is None and not s.compensate:
        # (a step that declares `compensate` undoes itself: no automatic snapshot)
        undo_rec = cap.prepare(args, cctx)
        if cap.undo is not None:
            # Durable before the effect: a crash from here on still knows how to undo.
            st.compensation = {"undo": cap.name, "with": undo_rec, "prepared_attempt": st.attempts}
            run.ledger.update(st, notify=False)
            crashpoint("capability:prepared")
    st.cap_args = args
    return cap.apply(args, cctx)


def render_compensation(run: RunContext, st: StepState) -> dict[str, Any] | None:
    """Render ``compensate`` now (it may use the step's own output) to store it."""
    comp = st.spec.compensate
    if not comp:
        return None
    ctx = run.scope.context()
    if run.spec.seed_dialect:  # the seed dialect's {{tenant_id}}: the step's own output too
        ctx = {**ctx, **dialect.own_output(st.id, st.spec, st.value)}
    try:
        rendered: dict[str, Any] = templates.render(comp, ctx, step=st.id, field="compensate")
        if isinstance(comp.get("with"), dict) and comp.get("capability"):
            rendered["with"] = templates.render_with(
                comp["with"],
                ctx,
                step=st.id,
                field="compensate.with",
                capability=capabilities.canonical(str(comp["capability"])),
            )
    except AirunError as exc:
        return {"error": f"cannot prepare its compensation: {exc.message}"}
    return rendered


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
