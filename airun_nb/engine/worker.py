"""Workers: runs submitted to a queue, executed by processes that outlive any kernel.

:func:`submit` checks a workflow as a run would (its steps resolve, its templates name what
exists) and writes the run in status ``queued`` with its queue row, in one journal append.
A :class:`Worker` claims queued runs of the queues it serves (:meth:`Store.claim_queued`) and
takes each to an end with the engine, one at a time; several worker processes share a queue.

The worker runs a claimed run as ``airun resume`` would: the engine's own claim
(:mod:`~airun_nb.engine.claim`) makes the worker the run's owner, so a worker killed mid-run
leaves a run whose owner is dead; another worker takes the dead worker's queue claim over and
resumes the run without redoing a finished step. A run that stops at an approval gate is parked;
once its gates are decided (from anywhere: the CLI, the approvals page) a worker continues it,
whether or not the process that submitted it still exists.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airun_nb.engine.claim import claim_run
from airun_nb.engine.planner import new_run_id
from airun_nb.engine.runner import Runner, stored_spec
from airun_nb.engine.state import INTERRUPTED, TERMINAL, WAITING
from airun_nb.engine.stepkinds import ResolveError
from airun_nb.errors import AirunError, RunBusy, RunEnded, RunInterrupted, WorkflowFailed
from airun_nb.gates import followup
from airun_nb.spec.parser import WorkflowSpec
from airun_nb.store import code as codestore
from airun_nb.store import owner, transitions
from airun_nb.store.backend import Backend
from airun_nb.store.queue import DEFAULT_QUEUE, SOURCE_PREFIX
from airun_nb.store.transitions import Q_DONE, Q_FAILED, Q_PARKED, Q_QUEUED, QUEUED

IDLE_POLL = 0.5  # seconds between looks at an empty queue
FOLLOW_UP_EVERY = 5.0  # seconds between looks at the open gates' reminders and escalations


def submit(
    spec: WorkflowSpec,
    store: Backend,
    *,
    params: Mapping[str, Any] | None = None,
    queue: str = DEFAULT_QUEUE,
    namespace: Mapping[str, Any] | None = None,
    user: str | None = None,
    store_code: bool = False,
) -> str:
    """Queue a run of ``spec`` on ``queue``; its run id. Nothing is written when the workflow
    does not check out (a step that does not resolve, a template naming nothing): the error
    says what and where. ``namespace``: the notebook functions ``call:`` steps may name;
    ``store_code``: keep them in the store, signed, for the worker (which loads them only
    where its owner trusts stored code)."""
    if not queue.strip():
        raise AirunError("--queue: give a queue name")
    engine = Runner(spec, store, namespace=namespace or {}, params=params, user=user)
    engine.planner.resolve()
    unresolved = list(engine.planner.unresolved)
    if unresolved:  # every step of a new run runs: each must resolve where it is submitted
        raise engine.planner.missing_functions(unresolved)
    engine.planner.hash_steps()
    engine.planner.check_templates()
    run_id = new_run_id()
    ledger = engine.ledger
    ledger.run_id = run_id
    ledger.status = QUEUED
    ledger.source = SOURCE_PREFIX + queue
    run = ledger.run_record()
    run |= {"owner_pid": None, "owner_host": None, "owner_token": None, "started_at": None}
    spec_record = {
        "t": "spec",
        "spec_hash": engine.spec.spec_hash,
        "workflow": engine.spec.name,
        "text": engine.spec.source,
    }
    calls = {s.id: str(s.body) for s in engine.spec.steps if s.kind == "call"}
    functions = codestore.notebook_functions(calls.values(), namespace or {})
    if functions and not store_code:
        steps = [sid for sid, target in calls.items() if target.split(".")[0] in functions]
        raise ResolveError(
            f"step(s) {', '.join(steps)} call notebook function(s) {', '.join(functions)}, "
            "which a worker cannot reach: store them with the run (`%config "
            "Workflow.store_code = True`; the worker loads them with --trust-stored-code) or "
            "call 'package.module:function'"
        )
    saved = bool(functions) and bool(codestore.save(store, run_id, functions))
    event = ledger.event("run_queued", queue=queue)
    store.enqueue(run_id, queue, records=[spec_record, run, event], trust_code=saved)
    store.sync()  # a run reported queued survives a power loss
    return run_id


class Worker:
    """Claims runs of ``queues`` and runs them, one at a time, until stopped (or idle, with
    ``exit_when_idle``). ``trust_stored_code``: load the notebook functions a submitting
    notebook stored for a run (unpickling runs them; only signed ones are loaded)."""

    def __init__(
        self,
        store: Backend,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        *,
        name: str | None = None,
        exit_when_idle: bool = False,
        trust_stored_code: bool = False,
        poll: float = IDLE_POLL,
        say: Callable[[str], None] = print,
    ) -> None:
        self.store = store
        self.queues = list(queues) or [DEFAULT_QUEUE]
        self.name = name or f"{owner.HOST}:{owner.os.getpid()}"
        self.exit_when_idle = exit_when_idle
        self.trust_stored_code = trust_stored_code
        self.poll = poll
        self.say = say
        self.handled = 0
        self._stop = threading.Event()
        self._follow_up_at = 0.0  # when the open gates are next looked at (monotonic)
        self._current: str | None = None  # the run executing now
        self._handing_back = False
        self._error: str | None = None  # how the last run failed, if it did
        self._next: list[str] = []  # claimed as the last run's claim ended

    # -- the loop ----------------------------------------------------------------------------
    def _follow_ups(self) -> None:
        """While idle, a worker is one of the watchers of the open gates: it sends their due
        reminders and escalations (each once, whoever else watches), at most every
        :data:`FOLLOW_UP_EVERY` seconds."""
        now = time.monotonic()
        if now < self._follow_up_at:
            return
        self._follow_up_at = now + FOLLOW_UP_EVERY
        try:
            followup.sweep(self.store)
        except AirunError as exc:  # the worker goes on serving its queues
            self.say(f"worker {self.name}: gate follow-ups: {exc.message}")

    def serve(self) -> int:
        """Claim and run until stopped; the number of runs taken. SIGTERM (and SIGINT) stop
        the worker: the run executing is interrupted and handed back to the queue, where
        another worker resumes it without redoing its finished steps."""
        restore = self._install_signals()
        try:
            self.say(f"worker {self.name} serves queue(s) {', '.join(self.queues)}")
            while not self._stop.is_set():
                claimed, self._next = self._next, []
                if not claimed:
                    claimed = self.store.claim_queued(self.queues, self.name, 1)
                if not claimed:
                    if self.exit_when_idle:
                        break
                    self._follow_ups()
                    self._stop.wait(self.poll)
                    continue
                for run_id in claimed:
                    self.run_claimed(run_id)
        finally:
            restore()
            for run_id in self._next:  # claimed while it was stopping: back to the queue
                self.store.end_claim(run_id, Q_QUEUED)
            self.store.flush()
        self.say(f"worker {self.name} stops after {self.handled} run(s)")
        return self.handled

    def stop(self) -> None:
        self._stop.set()

    def run_claimed(self, run_id: str) -> str:
        """Take a run this worker claimed to an end, a gate or a hand-back; what became of it."""
        self.handled += 1
        try:
            status = self._execute(run_id)
        except RunBusy as exc:  # a live process executes it: look again when it lets go
            self._end(run_id, Q_PARKED, error=exc.message)
            self.say(f"run {run_id}: {exc.message}")
            return "busy"
        except RunEnded as exc:
            self._end(run_id, Q_DONE, error=exc.message)
            self.say(f"run {run_id}: {exc.message}")
            return "ended"
        except AirunError as exc:  # it cannot start here (its code is missing, say)
            self._could_not_start(run_id, exc.message)
            return "failed"
        except Exception as exc:  # a fault of this one run: the worker serves the others
            self._could_not_start(run_id, f"{type(exc).__name__}: {exc}".splitlines()[0])
            return "failed"
        if status == INTERRUPTED:
            self._end(run_id, Q_QUEUED)
            self.say(f"run {run_id} handed back to the queue (interrupted; it resumes)")
        elif status == WAITING:
            self._end(run_id, Q_PARKED)
            self.say(f"run {run_id} waits at a gate; a worker continues it once it is decided")
        else:
            self._end(run_id, Q_DONE)
            why = f": {self._error}" if self._error and status != "completed" else ""
            self.say(f"run {run_id} {status}{why}")
        return status

    def _end(self, run_id: str, state: str, *, error: str | None = None) -> None:
        """End this worker's claim on ``run_id`` and, unless stopping, claim the next run in
        the same hold of the store (one hold instead of two: workers share one file). A server
        store does both with row locks: no hold of its writer lock."""
        hold = (
            contextlib.nullcontext()
            if self.store.row_locks
            else self.store.session(f"ending the claim on run {run_id}")
        )
        with hold:
            self.store.end_claim(run_id, state, error=error)
            if not self._stop.is_set():
                self._next = self.store.claim_queued(self.queues, self.name, 1)

    # -- one run -----------------------------------------------------------------------------
    def _execute(self, run_id: str) -> str:
        self._error = None
        with self.store.session(f"reading run {run_id} to start it"):  # one hold, reads only
            row = self.store.run_row(run_id)
            if row is None:
                raise RunEnded(f"no run '{run_id}' in the store (removed after it was queued)")
            if row["status"] in TERMINAL:
                return str(row["status"])  # cancelled while queued, or finished elsewhere
            queued = self.store.queue_row(run_id) or {}
            namespace: dict[str, Any] = {}
            if self.trust_stored_code and codestore.stored_names(self.store, run_id):
                namespace = dict(codestore.load(self.store, run_id))  # signed, or refused
            spec = stored_spec(self.store, run_id)
        engine = Runner(spec, self.store, namespace=namespace)
        engine.prepare(resume=run_id)
        engine.ledger.source = SOURCE_PREFIX + str(queued.get("queue") or DEFAULT_QUEUE)
        self._current = run_id
        try:
            if self._stop.is_set():  # stopped before it began: the run goes back as it was
                engine.claim.fail(KeyboardInterrupt())
                return INTERRUPTED
            engine.execute()
        except KeyboardInterrupt as exc:  # a stop before the engine began: as it was
            engine.claim.fail(exc)
            return INTERRUPTED
        except (WorkflowFailed, RunInterrupted):
            pass  # recorded: the status says how it ended
        finally:
            self._current = None
        self._error = engine.error
        return engine.status

    def _could_not_start(self, run_id: str, message: str) -> None:
        """Say why, keep it on the queue row, and end a run still ``queued`` as failed (a
        run that had begun stays as it is: it can be resumed where its code is)."""
        self.say(f"run {run_id} cannot run here: {message}")
        with contextlib.suppress(AirunError):
            claim_run(
                self.store,
                run_id,
                status="failed",
                owner={"owner_pid": None, "owner_host": None, "owner_token": None},
                alive=owner.owner_alive,
                expect_status=(QUEUED,),
                extra={"error": message, "finished_at": time.time(), "updated_at": time.time()},
            )
            detail = json.dumps({"message": message, "worker": self.name})
            event = {"t": "ev", "ts": time.time(), "run_id": run_id, "step_id": None}
            event |= {"kind": "run_failed", "detail": detail}
            transitions.commit(self.store, [event])
        self.store.end_claim(run_id, Q_FAILED, error=message)

    # -- signals -----------------------------------------------------------------------------
    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: Any) -> None:
            self._stop.set()
            if self._current is not None and not self._handing_back:
                self._handing_back = True
                raise KeyboardInterrupt  # the engine records the run interrupted

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, handler in old.items():
                signal.signal(s, handler)

        return restore
