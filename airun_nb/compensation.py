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
from typing import TYPE_CHECKING, Any

from . import auditlog, capabilities, kinds
from .errors import AirunError
from .spec import RetryPolicy
from .store import crashpoint

if TYPE_CHECKING:
    from .engine import Engine, StepState

DEFAULT_RETRY = RetryPolicy(attempts=3, backoff="exponential", initial=0.1, max=5.0)


def undo_order(engine: Engine) -> list[StepState]:
    """Steps this run must undo, newest finished first.

    Completed steps that ran in this run (not outputs reused from another run), failed steps
    that declare ``compensate_on_failure``, and steps cut off in flight whose undo was captured
    before they acted (their effect may have happened; they count as the newest). Skipped and
    never-started steps are left alone.
    """
    picked = []
    for st in engine.states.values():
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


def roll_back(engine: Engine) -> None:
    from .engine import ROLLBACK_FAILED, ROLLED_BACK, ROLLING_BACK

    if engine.status != ROLLING_BACK:
        engine._set_status(ROLLING_BACK, step=engine.failed_step)
    for st in undo_order(engine):
        if st.comp_status in ("done", "none"):
            continue
        if not st.compensation:
            st.comp_status = "none"
            engine.store.record(engine.step_record(st))
            engine.listener.changed(engine, st)
            continue
        if not _compensate(engine, st):
            engine._set_status(ROLLBACK_FAILED, step=st.id, error=st.comp_error)
            return
    engine._set_status(ROLLED_BACK)


def _compensate(engine: Engine, st: StepState) -> bool:
    comp = st.compensation or {}
    if "error" in comp:
        st.comp_status = "failed"
        st.comp_error = str(comp["error"])
        engine.store.record_many(
            [
                engine.step_record(st),
                engine.event("compensation_failed", st.id, error=st.comp_error),
            ]
        )
        return False
    policy = _policy(comp.get("retry"))
    tries = 0
    while True:
        tries += 1
        st.comp_attempts += 1
        attempt = st.comp_attempts
        started = time.time()
        st.comp_status = "running"
        st.comp_error = None
        att: dict[str, Any] = {
            "phase": "compensate",
            "attempt": attempt,
            "status": "running",
            "started_at": started,
            "pid": os.getpid(),
        }
        engine.store.record(engine.step_record(st, att))
        engine.listener.changed(engine, st)
        crashpoint("compensate:started")
        try:
            _invoke(engine, st, comp)
        except KeyboardInterrupt:
            engine.store.record(
                engine.step_record(
                    st,
                    {
                        **att,
                        "status": "interrupted",
                        "finished_at": time.time(),
                        "error": "interrupted",
                    },
                )
            )
            raise
        except Exception as exc:
            from .engine import _describe

            err = _describe(exc)
            failed = {**att, "status": "failed", "finished_at": time.time(), "error": err}
            st.comp_error = err
            if tries < policy.attempts and policy.retries(exc):
                delay = policy.delay(tries)
                engine.store.record_many(
                    [
                        engine.step_record(st, failed),
                        engine.event("compensation_retry", st.id, attempt=attempt, error=err),
                    ]
                )
                engine.listener.changed(engine, st)
                time.sleep(delay)
                continue
            st.comp_status = "failed"
            engine.store.record_many(
                [
                    engine.step_record(st, failed),
                    engine.event("compensation_failed", st.id, attempt=attempt, error=err),
                    _audit(engine, st, comp, "failed", err),
                ]
            )
            engine.listener.changed(engine, st)
            return False
        st.comp_status = "done"
        st.comp_finished_at = time.time()
        engine.store.record_many(
            [
                engine.step_record(
                    st, {**att, "status": "completed", "finished_at": st.comp_finished_at}
                ),
                engine.event("compensation_done", st.id, attempt=attempt),
                _audit(engine, st, comp, "done", None),
            ]
        )
        crashpoint("compensate:recorded")
        engine.listener.changed(engine, st)
        return True


def _audit(
    engine: Engine, st: StepState, comp: dict[str, Any], decision: str, error: str | None
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
        principal=engine.user,
        run_id=engine.run_id,
        step_id=st.id,
        capability=cap,
        decision=decision,
        arguments=comp.get("with") or comp.get("call"),
        result=error,
        undo_ref=f"{engine.run_id}/{st.id}/{st.comp_attempts}",
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


def _invoke(engine: Engine, st: StepState, comp: dict[str, Any]) -> None:
    from .engine import _Steps, _with_timeout

    args = comp.get("with") or {}
    timeout = comp.get("timeout")

    def run() -> Any:
        if "call" in comp:
            fn = kinds.resolve_callable(str(comp["call"]), engine.namespace, step=st.id)
            return fn(**args)
        if "python" in comp:
            env = dict(engine.namespace)
            env.update({"steps": _Steps(engine), "params": engine.params, **args})
            return kinds.run_python(str(comp["python"]), f"{st.id}.compensate", env)
        if "sql" in comp:
            return engine._sql.run(str(comp["sql"]), {}, engine.namespace)
        if "undo" in comp:
            cap = capabilities.get(str(comp["undo"]))
            if cap.undo is None:
                raise AirunError(f"capability {cap.name} has no undo")
            cap.undo(dict(comp.get("with") or {}), engine.capability_context(st.id))
            return None
        if "capability" in comp:
            cap = capabilities.get(str(comp["capability"]))
            return cap.apply(dict(args), engine.capability_context(st.id))
        raise AirunError(f"step '{st.id}': its compensation has no call, python, sql or capability")

    result = run() if not timeout else _with_timeout(run, float(timeout))
    if isinstance(result, Exception):
        raise result
