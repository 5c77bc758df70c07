"""The ledger: the only writer of a run's run, step, attempt, event and audit records.

Every transition of a run or of a step goes through here: the ledger checks it against the state
machine (:mod:`airun_nb.engine.state`), writes the records that describe it in one journal write, and
tells the listener (the notebook's live table). Anything that must see every transition (live
updates, audit, redaction) hooks in at :meth:`Ledger.write`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from airun_nb.engine.state import (
    FAILED,
    INTERRUPTED,
    PENDING,
    ROLLBACK_FAILED,
    ROLLING_BACK,
    RUN_TRANSITIONS,
    RUNNING,
    S_INTERRUPTED,
    S_RUNNING,
    TERMINAL,
    WAITING,
    StepState,
    check_compensation,
    check_run,
    check_step,
)
from airun_nb.settings import clock
from airun_nb.spec.parser import WorkflowSpec
from airun_nb.store import owner, transitions
from airun_nb.store.backend import Backend


class Listener:
    """Receives progress of a run (the notebook's live table implements this).

    ``run`` is the runner executing the run; ``state`` the step that changed.
    """

    def planned(self, run: Any) -> None: ...

    def changed(self, run: Any, state: StepState | None) -> None: ...

    def finished(self, run: Any) -> None: ...


class Ledger:
    """Run-level facts of one run, and every write that records its history."""

    def __init__(
        self,
        store: Backend,
        spec: WorkflowSpec,
        params: dict[str, Any],
        *,
        listener: Listener | None = None,
        source: str | None = None,
        launched_by: str = "",
    ) -> None:
        self.store = store
        self.spec = spec
        self.params = params
        self.listener = listener or Listener()
        self.subject: Any = None  # what listeners are handed (the runner)
        self.source = source
        self.launched_by = launched_by
        self.run_id = ""
        self.status = PENDING
        self.error: str | None = None
        self.failed_step: str | None = None
        self.seeded_from: str | None = None
        self.forked_from: tuple[str, str] | None = None  # (run, step) a fork started from
        self.created_at = time.time()
        self.started_at = time.time()
        self.finished_at: float | None = None
        self._seq = 0
        self._seq_lock = threading.Lock()
        # step id -> (its fingerprint, that fingerprint's JSON): a step's records (started,
        # finished...) carry the same fingerprint object, encoded once. Fingerprints are
        # replaced, never changed in place.
        self._fp_json: dict[str, tuple[Any, str]] = {}

    # ------------------------------------------------------------------ records
    def run_record(self) -> dict[str, Any]:
        return {
            "t": "run",
            "run_id": self.run_id,
            "workflow": self.spec.name,
            "status": self.status,
            "spec_hash": self.spec.spec_hash,
            "params": json.dumps(self.params, default=str, sort_keys=True),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "updated_at": time.time(),
            "launched_by": self.launched_by,
            **owner.owner_fields(),
            "seeded_from": self.seeded_from,
            "failed_step": self.failed_step,
            "error": self.error,
            "source": self.source,
            "on_failure": self.spec.on_failure,
            "forked_from": self.forked_from[0] if self.forked_from else None,
            "forked_step": self.forked_from[1] if self.forked_from else None,
        }

    def step_record(self, st: StepState, att: dict[str, Any] | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "t": "step",
            "run_id": self.run_id,
            "step_id": st.id,
            "position": st.spec.index,
            "kind": st.spec.kind,
            "status": st.status,
            "attempts": st.attempts,
            "def_hash": st.spec.def_hash,
            "code_hash": st.code_hash,
            "eff_hash": st.eff_hash,
            "started_at": st.started_at,
            "finished_at": st.finished_at,
            "finish_seq": st.finish_seq,
            "replayed_from": st.replayed_from,
            "reason": st.reason,
            "error": st.error,
            "compensation": json.dumps(st.compensation, default=str) if st.compensation else None,
            "comp_status": st.comp_status,
            "comp_attempts": st.comp_attempts,
            "comp_error": st.comp_error,
            "comp_finished_at": st.comp_finished_at,
            "fingerprint": self._fingerprint_json(st),
        }
        rec.update({k: v for k, v in st.out.items() if k != "has_blob"})
        if att is not None:
            rec["att"] = att
        return rec

    def _fingerprint_json(self, st: StepState) -> str | None:
        fp = st.fingerprint
        if not fp:
            return None
        hit = self._fp_json.get(st.id)
        if hit is None or hit[0] is not fp:
            hit = self._fp_json[st.id] = (fp, json.dumps(fp, default=str))
        return hit[1]

    def event(self, kind: str, step_id: str | None = None, **detail: Any) -> dict[str, Any]:
        return {
            "t": "ev",
            "ts": clock.now(),
            "run_id": self.run_id,
            "step_id": step_id,
            "kind": kind,
            "detail": json.dumps(detail, default=str) if detail else None,
        }

    def next_seq(self) -> int:
        """The next completion number (rollback undoes in reverse of it)."""
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def set_seq(self, seq: int) -> None:
        with self._seq_lock:
            self._seq = seq

    # ------------------------------------------------------------------ writes
    def write(self, recs: Sequence[dict[str, Any]]) -> None:
        """One journal write of records that describe one state change."""
        if recs:
            transitions.commit(self.store, recs, checked=True)  # checked as each was made

    def end_failed(
        self, states: Iterable[StepState], exc: Exception, *, rolling_back: bool
    ) -> Exception:
        """Every exception ends in a recorded state: something unexpected raised while the run
        executed (a template failing at run time, an error preparing an undo, a bug) records the
        run ``failed`` (``rollback_failed`` during a rollback) with the error text and its
        running steps ``interrupted``, so the run is never left ``running`` and a resume
        continues it. Returns the exception to raise: a one-line :class:`WorkflowFailed`, or
        ``exc`` itself when even the failure cannot be written (a full disk: the journal still
        holds everything before it, and the run resumes later)."""
        from airun_nb.engine.timeouts import describe
        from airun_nb.errors import WorkflowFailed

        error = describe(exc)
        recs = []
        for st in states:
            if st.status == S_RUNNING:
                check_step(st.status, S_INTERRUPTED, st.id)
                st.status = S_INTERRUPTED
                recs.append(self.step_record(st))
        new = ROLLBACK_FAILED if rolling_back else FAILED
        if new not in RUN_TRANSITIONS.get(self.status, set()):
            # The run already reached an end state, which stands; a later write failed.
            from airun_nb.errors import StoreError

            late = StoreError(f"run {self.run_id} is {self.status}, but then: {error}")
            late.__suppress_context__ = True
            return late
        self.error = self.error or error
        self.status = new
        self.finished_at = time.time()
        recs.append(self.run_record())
        recs.append(self.event(f"run_{self.status}", error=error))
        try:
            self.write(recs)
        except Exception:
            return exc
        out = WorkflowFailed(
            f"run {self.run_id} failed: {error}", run_id=self.run_id, status=self.status
        )
        out.__suppress_context__ = True
        return out

    def note(self, *recs: dict[str, Any]) -> None:
        """Records that change no status (an event, an audit row, a notification)."""
        self.write(recs)

    def set_status(self, status: str, **detail: Any) -> None:
        """Move the run to ``status``; the run record and its ``run_<status>`` event."""
        check_run(self.status, status, self.run_id)
        before = (self.status, self.finished_at)
        self.status = status
        if status in TERMINAL or status in (FAILED, INTERRUPTED, WAITING):
            self.finished_at = time.time()
        try:
            self.write([self.run_record(), self.event(f"run_{status}", **detail)])
        except BaseException:
            self.status, self.finished_at = before  # not recorded: the run is where it was
            raise

    def begin(
        self,
        *,
        mode: str,
        source_run: str | None,
        spec_record: dict[str, Any] | None,
        steps: Iterable[tuple[StepState, str | None]],
    ) -> None:
        """Start (or resume) executing: the spec, the run, and every step that will run."""
        check_run(self.status, RUNNING, self.run_id)
        recs: list[dict[str, Any]] = [spec_record] if spec_record else []
        self.status = RUNNING
        self.started_at = time.time()
        self.finished_at = None
        recs.append(self.run_record())
        recs.append(
            self.event(
                "run_resumed" if mode == "resume" else "run_started",
                mode=mode,
                source_run=source_run,
            )
        )
        for st, invalidated in steps:
            if invalidated:
                recs.append(self.event("step_invalidated", st.id, reason=invalidated))
            recs.append(self.step_record(st))
        self.write(recs)

    def step(
        self,
        st: StepState,
        status: str,
        *extra: dict[str, Any],
        att: dict[str, Any] | None = None,
        before: Sequence[dict[str, Any]] = (),
        notify: bool = True,
    ) -> None:
        """Move a step to ``status`` and record it (with ``extra`` records in the same write)."""
        check_step(st.status, status, st.id)
        st.status = status
        self.write([*before, self.step_record(st, att), *extra])
        if notify:
            self.listener.changed(self.subject, st)

    def update(
        self,
        st: StepState,
        *extra: dict[str, Any],
        att: dict[str, Any] | None = None,
        notify: bool = True,
    ) -> None:
        """Record a step whose status stays (a retry's failed attempt, a prepared undo)."""
        self.write([self.step_record(st, att), *extra])
        if notify:
            self.listener.changed(self.subject, st)

    def compensation(
        self,
        st: StepState,
        status: str,
        *extra: dict[str, Any],
        att: dict[str, Any] | None = None,
    ) -> None:
        """Move a step's compensation to ``status`` and record it."""
        check_compensation(st.comp_status, status, st.id)
        st.comp_status = status
        self.write([self.step_record(st, att), *extra])
        self.listener.changed(self.subject, st)

    def close_dead_attempts(self) -> None:
        """Attempts left ``running`` by a process that died are closed as ``crashed``."""
        rows = self.store.running_attempts(self.run_id)
        recs = []
        for r in rows:
            rec: dict[str, Any] = {"t": "att", **r}
            rec["started_at"] = timestamp(r.get("started_at"))
            rec["finished_at"] = None
            rec["status"] = "crashed"
            rec["error"] = "its process died during this attempt"
            recs.append(rec)
        self.write(recs)

    def interrupted(self, states: Iterable[StepState]) -> None:
        """A kernel interrupt: running steps become interrupted, and so does the run (a
        rollback keeps its status, so that running it again finishes it)."""
        recs = []
        for st in states:
            if st.status == S_RUNNING:
                st.status = S_INTERRUPTED
                recs.append(self.step_record(st))
        if self.status == ROLLING_BACK:
            recs.append(self.event("rollback_interrupted"))
        else:
            self.status = INTERRUPTED
            self.finished_at = time.time()
            recs.append(self.run_record())
            recs.append(self.event("run_interrupted"))
        with contextlib.suppress(Exception):  # the interrupt itself must still surface
            self.write(recs)


def timestamp(value: Any) -> float | None:
    """Epoch seconds of a stored (naive UTC) timestamp or a number."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import timezone

    return float(value.replace(tzinfo=timezone.utc).timestamp())
