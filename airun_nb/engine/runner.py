"""The runner: takes one run from its plan to an end state.

1. **plan** (:mod:`~airun_nb.engine.planner`): resolve, hash, pick the run, decide every step.
2. **execute**: the DAG loop (:mod:`~airun_nb.engine.scheduler`) runs each step
   (:mod:`~airun_nb.engine.execution`, gates through :mod:`~airun_nb.engine.gatekeeper`); every transition is
   recorded by the :mod:`~airun_nb.engine.ledger` before the next thing happens.
3. **finish**: completed, waiting at a gate, failed, or rolled back
   (:mod:`~airun_nb.engine.compensation`); a kernel interrupt leaves the run ``interrupted`` and
   resumable.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from airun_nb import capabilities
from airun_nb.capabilities.workspace import Workspace
from airun_nb.engine import compensation, execution, stepprint
from airun_nb.engine import stepkinds as kinds
from airun_nb.engine import verdict as governance
from airun_nb.engine.claim import RunClaim
from airun_nb.engine.ledger import Ledger, Listener, timestamp
from airun_nb.engine.memory import gc_paused, gc_release
from airun_nb.engine.planner import Plan, Planner
from airun_nb.engine.scheduler import schedule
from airun_nb.engine.scope import Scope
from airun_nb.engine.state import (
    COMPLETED,
    FAILED,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    ROLLING_BACK,
    S_PENDING,
    WAITING,
    StepState,
)
from airun_nb.errors import ResumeWarning, RunBusy, RunInterrupted, RunNotFound, WorkflowFailed
from airun_nb.governance import identity, mediator
from airun_nb.governance import policy as policy_mod
from airun_nb.settings import environment as config
from airun_nb.settings.environment import StoreURL
from airun_nb.spec.parser import WorkflowSpec, expand
from airun_nb.store import owner
from airun_nb.store.backend import Backend

__all__ = ["Listener", "Plan", "Runner", "StepState"]


class Runner:
    """Executes one run of a workflow (a :class:`~airun_nb.engine.context.RunContext`)."""

    def __init__(
        self,
        spec: WorkflowSpec,
        store: Backend,
        *,
        namespace: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        listener: Listener | None = None,
        source: str | None = None,
        user: str | None = None,
    ) -> None:
        # kept to plan again with a resumed run's own params (:meth:`_own_params`)
        self._given = dict(params or {})
        self._made = (spec, namespace, listener, source, user)
        self.params: dict[str, Any] = {**spec.params, **(params or {})}
        spec = expand(spec, self.params)
        self.spec = spec
        self.store = store
        self.namespace: Mapping[str, Any] = namespace if namespace is not None else {}
        self.user = user or identity.current()
        self.states: dict[str, StepState] = {s.id: StepState(s) for s in spec.steps}
        self.ledger = Ledger(
            store, spec, self.params, listener=listener, source=source, launched_by=self.user
        )
        self.ledger.subject = self
        self.scope = Scope(
            spec,
            self.states,
            store,
            params=self.params,
            namespace=self.namespace,
            run_id=lambda: self.ledger.run_id,
            user=self.user,
        )
        self.planner = Planner(
            spec, store, self.states, params=self.params, namespace=self.namespace
        )
        self.plan: Plan | None = None
        self.sql = kinds.SqlEngine(store_path=store.path)  # confined to the workspace
        self.bind_output = isinstance(namespace, dict)
        self.requested_rollback = False
        self.partial: int | None = None  # roll back only this many newest steps
        self.undone: list[str] = []
        self.rejected = False
        self.rejected_by_person = False
        self.open_gates: list[dict[str, Any]] = []
        self.policy = policy_mod.Policy()
        self.workspace = Workspace()
        self.executed: list[str] = []
        self.claim = RunClaim(store)

    # Run-level facts live in the ledger, which records them.
    @property
    def run_id(self) -> str:
        return self.ledger.run_id

    @property
    def status(self) -> str:
        return self.ledger.status

    @property
    def error(self) -> str | None:
        return self.ledger.error

    @property
    def failed_step(self) -> str | None:
        return self.ledger.failed_step

    @property
    def listener(self) -> Listener:
        return self.ledger.listener

    def output_of(self, step_id: str) -> Any:
        return self.scope.output_of(step_id)

    def capability_context(self, step_id: str) -> capabilities.Context:
        where = self.store.path
        if isinstance(where, StoreURL):  # a team store: undo copies stay on this host
            digest = hashlib.sha256(str(where).encode()).hexdigest()[:16]
            base = config.config_dir() / "undo" / digest
        else:
            base = where.with_name(where.name + ".undo")
        undo_dir = base / self.run_id / step_id
        return capabilities.Context(
            self.workspace,
            undo_dir,
            self.store,
            principal=self.ledger.launched_by or self.user,
            hosts=mediator.hosts(self.policy, governance.principals(self)),
        )

    # ------------------------------------------------------------------ plan
    def prepare(
        self,
        *,
        resume: str | None = None,
        new: bool = False,
        fork: tuple[str, str] | None = None,
        fork_only: bool = False,
    ) -> Plan:
        """Plan the run; ``fork=(run, step)``: reuse ``run`` but ``step`` and downstream
        (``fork_only``: but ``step`` alone)."""
        if resume and fork is None:
            self._own_params(resume)
        try:
            with gc_paused():  # released when the run ends (execute), or on failure here
                self.policy = policy_mod.current().tightened(self.spec.policy)
                self.workspace = Workspace()
                self.planner.resolve()
                self.planner.hash_steps()
                self.planner.check_templates()
                # A new run reads nothing; nor does one the store's index of latest runs
                # already tells is new (a cell re-run after its run finished).
                new = new or (fork is None and not resume and self.planner.starts_new())
                reads = fork is not None or bool(resume) or not new
                with self.store.session("planning a run", fold=False) if reads else nullcontext():
                    prior_run: dict[str, Any] | None
                    if fork is not None:
                        prior_run, prior_rows = self.planner.select_fork(*fork)
                        mode = "fork"
                    else:
                        prior_run, prior_rows, mode = self.planner.select_run(resume, new)
                    self.claim.take(prior_run, mode)  # in the lease hold of the selection
                step = fork[1] if fork is not None else None
                plan = self.planner.decide(
                    prior_run, prior_rows, mode, fork_step=step, fork_only=fork_only
                )
                self._adopt(plan)
        except BaseException as exc:
            gc_release()
            self.claim.fail(exc)
            raise
        assert self.plan is not None
        return self.plan

    def dry_run(self, **how: Any) -> Plan:
        """The plan :meth:`prepare` makes, and nothing executed or written."""
        self.claim.dry = True
        try:
            return self.prepare(**how)
        finally:
            gc_release()

    def prepare_rollback(self, run_id: str, *, steps: int | None = None) -> Plan:
        """Load a stored run to roll it back (on demand, or to finish a rollback); ``steps``:
        undo only that many of its newest finished steps (a completed run only)."""
        self._own_params(run_id)
        with self.store.session("planning a rollback"):
            row, rows = self.planner.select_rollback(run_id)
            if steps is not None and row["status"] != COMPLETED:
                raise RunBusy(
                    f"run {run_id} is {row['status']}: --steps undoes the last steps of a "
                    f"completed run only; roll it back whole with `airun rollback {run_id}`"
                )
            self.claim.take(row, "rollback")
        self.partial = steps
        # compensations are decided again when they run, under the policy in force now
        self.policy = policy_mod.current().tightened(self.spec.policy)
        self.workspace = Workspace()
        self.ledger.failed_step = row.get("failed_step")
        self.ledger.error = row.get("error")
        self.requested_rollback = True
        self._adopt(self.planner.decide(row, rows, "rollback"))
        assert self.plan is not None
        return self.plan

    def _own_params(self, run_id: str) -> None:
        """A resumed (or rolled back) run continues with the params it was started with,
        never the file's defaults; asking for other values is refused (that is a new run)."""
        stored = self.planner.stored_params(run_id)
        if stored is None or stored == self.planner.comparable(self.params):
            return
        for key, value in self._given.items():
            if key not in stored or self.planner.comparable({key: value}) != {key: stored[key]}:
                was = repr(stored[key]) if key in stored else "unset"
                raise RunBusy(
                    f"run {run_id} continues with its own params ({key} was {was}); to run "
                    f"with {key}={value!r} start a new run instead of resuming"
                )
        spec, namespace, listener, source, user = self._made
        dry = self.claim.dry  # a dry run stays one
        self.__init__(  # type: ignore[misc]
            spec,
            self.store,
            namespace=namespace,
            params=stored,
            listener=listener,
            source=source,
            user=user,
        )
        self.claim.dry = dry

    def _adopt(self, plan: Plan) -> None:
        """Take over what the plan continues: the run id, its launcher, its history."""
        ledger = self.ledger
        ledger.run_id = plan.run_id
        ledger.seeded_from = plan.source_run if plan.mode == "seeded" else None
        if plan.mode in ("resume", "rollback"):
            ledger.seeded_from = plan.prior.get("seeded_from")
        if plan.forked_step and plan.source_run:
            ledger.forked_from = (plan.source_run, plan.forked_step)
        if plan.mode in ("resume", "rollback"):
            ledger.launched_by = plan.launched_by or self.user
            ledger.created_at = plan.created_at or time.time()
            ledger.status = plan.prior.get("status") or ledger.status
            if plan.mode == "rollback":
                # A rollback keeps when the run started, and the failure that started it.
                ledger.started_at = timestamp(plan.prior.get("started_at")) or ledger.started_at
                ledger.failed_step = ledger.failed_step or plan.prior.get("failed_step")
                ledger.error = ledger.error or plan.prior.get("error")
        ledger.set_seq(plan.seq)
        self.scope.blob_source.update(self.planner.blob_source)
        self.plan = plan

    # ------------------------------------------------------------------ execute
    def execute(self) -> None:
        assert self.plan is not None, "prepare() first"
        if not owner.claim_in_process(self.run_id):
            raise RunBusy(f"run {self.run_id} is already executing in this kernel")
        if not self.store.hold_run(self.run_id):  # a server store: the run's advisory lock
            owner.release_in_process(self.run_id)
            raise RunBusy(f"run {self.run_id} is executing in another process")
        try:
            if self.plan.mode in ("resume", "rollback"):
                self.ledger.close_dead_attempts()
            if self.plan.mode == "rollback":
                self.listener.planned(self)
                if self.partial is not None:
                    self.undone = compensation.roll_back_last(self, self.partial)
                else:
                    compensation.roll_back(self)
            else:
                self._begin()
                self.listener.planned(self)
                self._schedule()
                self._finish()
                if self.status == COMPLETED:  # the values steps read, as the run leaves them
                    fresh = stepprint.refresh_values(self.states, self.namespace)
                    self.ledger.write([self.ledger.step_record(st) for st in fresh])
        except KeyboardInterrupt:
            self._on_interrupt()
        except Exception as exc:
            rolling_back = self.ledger.status == ROLLING_BACK or (
                self.plan is not None and self.plan.mode == "rollback"
            )
            # recorded failed (or why it could not be)
            error = self.ledger.end_failed(self.states.values(), exc, rolling_back=rolling_back)
            with contextlib.suppress(Exception):
                self.store.sync()
            raise error from None
        finally:
            owner.release_in_process(self.run_id)
            self.store.let_go_run(self.run_id)
            gc_release()
        self._bind_outputs()  # no fold here: the journal holds the run, folded in batches
        self.store.sync()  # but on disk: a run reported finished survives a power loss
        self.listener.finished(self)
        self._raise_for_status()

    def _begin(self) -> None:
        plan = self.plan
        assert plan is not None
        spec_record = None
        if plan.mode != "resume" or plan.prior_spec_hash != self.spec.spec_hash:
            spec_record = {
                "t": "spec",
                "spec_hash": self.spec.spec_hash,
                "workflow": self.spec.name,
                "text": self.spec.source,
            }
        steps: list[tuple[StepState, str | None]] = []
        for entry in plan.entries:
            st = self.states[entry.step_id]
            if entry.action == "run":
                st.reason = None if entry.reason == "not run yet" else entry.reason
                st.status = S_PENDING
                st.error = None
                st.out = {}
                st.started_at = st.finished_at = None
                steps.append((st, st.reason))
            elif plan.mode in ("seeded", "fork"):
                steps.append((st, None))
        self.ledger.begin(
            mode=plan.mode, source_run=plan.source_run, spec_record=spec_record, steps=steps
        )
        changed = plan.code_changed_line()
        if changed:  # one line, and an event: the run goes on with what finished
            self.ledger.note(self.ledger.event("resume_code_changed", message=changed))
            warnings.warn_explicit(changed, ResumeWarning, "airun_nb", 0)

    def _schedule(self) -> None:
        def on_failed(st: StepState) -> None:
            if self.ledger.failed_step is None:
                self.ledger.failed_step = st.id
                self.ledger.error = st.error

        schedule(
            self.spec,
            self.states,
            lambda st: execution.run_step(self, st),
            on_failed,
            lambda: self.ledger.failed_step is not None,
        )

    def _finish(self) -> None:
        ledger = self.ledger
        if ledger.failed_step is None and self.open_gates:
            ledger.set_status(WAITING, gates=[g["gate_id"] for g in self.open_gates])
        elif ledger.failed_step is None:
            ledger.set_status(COMPLETED)
        elif self._failure_policy() == "rollback":
            compensation.roll_back(self)
        else:
            ledger.set_status(FAILED, step=ledger.failed_step, error=ledger.error)

    def _failure_policy(self) -> str:
        assert self.failed_step is not None
        if self.rejected:
            return "rollback"  # a rejection always rolls the run back
        return self.states[self.failed_step].spec.on_failure or self.spec.on_failure

    def _on_interrupt(self) -> None:
        was_rolling_back = self.status == ROLLING_BACK
        self.ledger.interrupted(self.states.values())
        self.store.flush()
        self.listener.finished(self)
        if was_rolling_back:
            raise RunInterrupted(
                f"the rollback of run {self.run_id} was interrupted; re-run the cell or "
                f"`%workflow rollback {self.run_id}` to finish it",
                run_id=self.run_id,
            ) from None
        raise RunInterrupted(
            f"run {self.run_id} was interrupted; re-run the cell or "
            f"`%workflow resume {self.run_id}` to resume it",
            run_id=self.run_id,
        ) from None

    def _raise_for_status(self) -> None:
        if self.status in (COMPLETED, WAITING) or (
            self.status == ROLLED_BACK
            and (self.failed_step is None or self.requested_rollback or self.rejected_by_person)
        ):
            return  # a rejection is a decision, not a failure: the run rolled back as asked
        failure = (
            f"run {self.run_id} failed at step '{self.failed_step}': {self.error}"
            if self.failed_step
            else f"run {self.run_id}"
        )
        if self.status == ROLLED_BACK:
            undone = [st.id for st in compensation.undo_order(self) if st.comp_status == "done"]
            tail = f"; rolled back (undid {', '.join(undone)})" if undone else "; rolled back"
            message = failure + tail
        elif self.status == ROLLBACK_FAILED:
            bad = next((st for st in self.states.values() if st.comp_status == "failed"), None)
            what = f" at '{bad.id}': {bad.comp_error}" if bad else ""
            message = (
                f"{failure}; rollback failed{what}. Fix it, then `%workflow rollback "
                f"{self.run_id}` (or `airun rollback {self.run_id}`) to finish undoing"
            )
        else:
            message = failure
        raise WorkflowFailed(message, run_id=self.run_id, status=self.status)

    def _bind_outputs(self) -> None:
        if not self.bind_output:
            return
        for st in self.states.values():
            if st.spec.output and st.replayed and st.status == "completed":
                self.namespace[st.spec.output] = self.output_of(st.id)  # type: ignore[index]


def stored_spec(store: Backend, run_id: str) -> WorkflowSpec:
    """The workflow a stored run was started from (to resume or undo it outside its notebook)."""
    from airun_nb.spec import cache as speccache

    found = store.stored_definition(run_id)
    if found is None:
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    workflow, text = found
    if not text:
        raise RunNotFound(f"run '{run_id}' has no stored workflow definition")
    return speccache.parse(text, name=workflow, db=store.path)


def roll_back(
    store: Backend,
    run_id: str,
    *,
    namespace: Mapping[str, Any] | None = None,
    listener: Listener | None = None,
    steps: int | None = None,
) -> Runner:
    """Undo a stored run through its compensations, newest first (``steps``: only the N
    newest finished steps of a completed run); the runner that did it."""
    engine = Runner(stored_spec(store, run_id), store, namespace=namespace, listener=listener)
    engine.prepare_rollback(run_id, steps=steps)
    engine.execute()
    return engine
