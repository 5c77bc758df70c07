"""Rollback: undo a run's finished steps through their compensations, newest first (a saga).

Compensations were rendered when their step finished and stored with the step, by reference (a
function name or code, plus arguments), so a rollback after a restart does exactly what it would
have done before. Each compensation is checkpointed like a step: ``running`` before it starts,
``done`` or ``failed`` after, one attempt row per try. A compensation that finished is never run
again; one that was in flight when the process died runs again as a new attempt. The first
compensation that keeps failing stops the rollback with the run ``rollback_failed``; running the
rollback again continues from there.
"""

from __future__ import annotations

import os
import time
from typing import Any

from airun_nb import capabilities
from airun_nb.engine import stepkinds as kinds
from airun_nb.engine import verdict as governance
from airun_nb.engine.context import RunContext
from airun_nb.engine.retries import Exhausted, retrying
from airun_nb.engine.scope import Steps
from airun_nb.engine.state import (
    COMPLETED,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    ROLLING_BACK,
    S_PENDING,
    S_WAITING,
    StepState,
)
from airun_nb.engine.timeouts import describe, with_timeout
from airun_nb.errors import AirunError
from airun_nb.gates import gate
from airun_nb.governance import audit as auditlog
from airun_nb.spec.parser import RetryPolicy
from airun_nb.store.database import crashpoint

DEFAULT_RETRY = RetryPolicy(attempts=3, backoff="exponential", initial=0.1, max=5.0)


def undo_order(run: RunContext) -> list[StepState]:
    """Steps this run must undo, newest finished first.

    Completed steps that ran in this run (not outputs reused from another run), failed steps
    that declare ``compensate_on_failure``, and steps cut off in flight whose undo was captured
    before they acted (their effect may have happened; they count as the newest). Skipped and
    never-started steps are left alone.
    """
    picked = []
    for st in run.states.values():
        if st.replayed_from:
            continue
        in_flight = (
            st.status in ("running", "interrupted")
            and bool(st.compensation)
            and "prepared_attempt" in (st.compensation or {})
        )
        if in_flight or (
            st.finish_seq is not None
            and (
                st.status == "completed"
                or (st.status == "failed" and st.spec.compensate_on_failure and st.compensation)
            )
        ):
            picked.append(st)
    newest = float("inf")
    return sorted(
        picked,
        key=lambda st: newest if st.finish_seq is None else st.finish_seq,
        reverse=True,
    )


def roll_back(run: RunContext) -> None:
    ledger = run.ledger
    if ledger.status != ROLLING_BACK:
        # A run rolled back while it waits at a gate: the gate closes, its step never runs.
        closed = gate.cancel_open(run.store, run.run_id, reason="the run was rolled back")
        for st in run.states.values():
            if st.status == S_WAITING:
                st.reason = "gate cancelled: the run was rolled back"
                ledger.step(st, S_PENDING, *closed)
                closed = []
        ledger.note(*closed)
        ledger.set_status(ROLLING_BACK, step=ledger.failed_step)
    for st in undo_order(run):
        if st.comp_status in ("done", "none"):
            continue
        if not st.compensation:
            ledger.compensation(st, "none")
            continue
        if not _compensate(run, st):
            ledger.set_status(ROLLBACK_FAILED, step=st.id, error=st.comp_error)
            return
    ledger.set_status(ROLLED_BACK)


def pending_undo(run: RunContext) -> list[StepState]:
    """The steps of :func:`undo_order` not undone yet, newest first."""
    return [st for st in undo_order(run) if st.comp_status not in ("done", "none")]


def roll_back_last(run: RunContext, count: int) -> list[str]:
    """Undo only the ``count`` newest finished steps of a completed run (the seed runtime's
    ``undo --steps N``); the run stays completed, those steps are marked undone. Undoing every
    step left is a whole rollback (:func:`roll_back`). Returns the steps undone."""
    todo = pending_undo(run)
    if count >= len(todo):
        roll_back(run)
        return [st.id for st in todo if st.comp_status == "done"]
    ledger = run.ledger
    if ledger.status != ROLLING_BACK:
        ledger.set_status(ROLLING_BACK)
    done: list[str] = []
    for st in todo[:count]:
        if not st.compensation:
            ledger.compensation(st, "none")
            continue
        if not _compensate(run, st):
            ledger.set_status(ROLLBACK_FAILED, step=st.id, error=st.comp_error)
            return done
        done.append(st.id)
    ledger.set_status(COMPLETED)  # what is left of it is still done
    return done


def _compensate(run: RunContext, st: StepState) -> bool:
    ledger = run.ledger
    comp = st.compensation or {}
    refused = governance.check_compensation(run, st, comp) if "error" not in comp else None
    if refused is not None:  # checked again when it runs: nothing of it runs
        comp = {"error": refused}
    if "error" in comp:
        st.comp_error = str(comp["error"])
        ledger.compensation(
            st, "failed", ledger.event("compensation_failed", st.id, error=st.comp_error)
        )
        return False
    att: dict[str, Any] = {}

    def attempt(tries: int) -> None:
        st.comp_attempts += 1
        st.comp_error = None
        att.clear()
        att.update(
            phase="compensate",
            attempt=st.comp_attempts,
            status="running",
            started_at=time.time(),
            pid=os.getpid(),
        )
        ledger.compensation(st, "running", att=att)
        crashpoint("compensate:started")
        _invoke(run, st, comp)

    def failed(exc: Exception, tries: int, delay: float | None) -> None:
        err = describe(exc)
        ended = {**att, "status": "failed", "finished_at": time.time(), "error": err}
        st.comp_error = err
        n = att["attempt"]
        if delay is not None:
            event = ledger.event("compensation_retry", st.id, attempt=n, error=err)
            ledger.update(st, event, att=ended)
            return
        ledger.compensation(
            st,
            "failed",
            ledger.event("compensation_failed", st.id, attempt=n, error=err),
            _audit(run, st, comp, "failed", err),
            att=ended,
        )

    def interrupted() -> None:
        ended = {**att, "status": "interrupted", "finished_at": time.time()}
        ledger.update(st, att={**ended, "error": "interrupted"}, notify=False)

    try:
        retrying(_policy(comp.get("retry")), attempt, failed=failed, interrupted=interrupted)
    except Exhausted:
        return False
    st.comp_finished_at = time.time()
    ledger.compensation(
        st,
        "done",
        ledger.event("compensation_done", st.id, attempt=att["attempt"]),
        _audit(run, st, comp, "done", None),
        att={**att, "status": "completed", "finished_at": st.comp_finished_at},
    )
    crashpoint("compensate:recorded")
    return True


def _audit(
    run: RunContext, st: StepState, comp: dict[str, Any], decision: str, error: str | None
) -> dict[str, Any]:
    if "undo" in comp:
        kind, cap = "undo", f"{comp['undo']}.undo"
    else:
        kind = "compensation"
        cap = (
            f"capability:{comp['capability']}"
            if "capability" in comp
            else "python.call"
            if "call" in comp
            else "python.exec"
            if "python" in comp
            else "sql.query"
        )
    return auditlog.row(
        kind=kind,
        principal=run.user,
        run_id=run.run_id,
        step_id=st.id,
        capability=cap,
        decision=decision,
        arguments=comp.get("with") or comp.get("call"),
        result=error,
        undo_ref=f"{run.run_id}/{st.id}/{st.comp_attempts}",
    )


def _policy(raw: Any) -> RetryPolicy:
    if not raw:
        return DEFAULT_RETRY
    if isinstance(raw, int):
        return RetryPolicy(attempts=raw, initial=DEFAULT_RETRY.initial, max=DEFAULT_RETRY.max)
    return RetryPolicy(
        attempts=int(raw.get("attempts", DEFAULT_RETRY.attempts)),
        backoff=str(raw.get("backoff", DEFAULT_RETRY.backoff)),
        initial=float(raw.get("initial", DEFAULT_RETRY.initial)),
        max=float(raw.get("max", DEFAULT_RETRY.max)),
        on=tuple(raw.get("on", ())),
    )


def _invoke(run: RunContext, st: StepState, comp: dict[str, Any]) -> None:
    args = comp.get("with") or {}
    timeout = comp.get("timeout")

    def go() -> Any:
        if "call" in comp:
            fn = kinds.resolve_callable(str(comp["call"]), run.namespace, step=st.id)
            return fn(**args)
        if "python" in comp:
            env = dict(run.namespace)
            env.update({"steps": Steps(run.scope), "params": run.params, **args})
            return kinds.run_python(str(comp["python"]), f"{st.id}.compensate", env)
        if "sql" in comp:
            return run.sql.run(str(comp["sql"]), {}, run.namespace)
        if "undo" in comp:
            cap = capabilities.get(str(comp["undo"]))
            if cap.undo is None:
                raise AirunError(f"capability {cap.name} has no undo")
            cap.undo(dict(comp.get("with") or {}), run.capability_context(st.id))
            return None
        if "capability" in comp:
            cap = capabilities.get(str(comp["capability"]))
            return cap.apply(dict(args), run.capability_context(st.id))
        raise AirunError(f"step '{st.id}': its compensation has no call, python, sql or capability")

    result = go() if not timeout else with_timeout(go, float(timeout))
    if isinstance(result, Exception):
        raise result
