"""The planner: decides what a run will do, before it does anything.

Given a spec and the store, it resolves ``call`` targets, hashes every step (its definition, its
function's source, the run's params and the hashes of the steps it needs: a Merkle chain, so a
change anywhere invalidates everything downstream), picks the run (new, a resume, or a new run
that reuses unchanged steps of a finished one) and gives every step a decision with its reason.
It reads the store and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airun_nb import capabilities
from airun_nb.capabilities import legacy
from airun_nb.engine import reasons, stepprint
from airun_nb.engine import stepkinds as kinds
from airun_nb.engine.claim import busy_message
from airun_nb.engine.fingerprint import Fingerprinter
from airun_nb.engine.ledger import timestamp
from airun_nb.engine.state import (
    COMPLETED,
    RESUMABLE,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    ROLLING_BACK,
    RUNNING,
    S_COMPLETED,
    StepState,
)
from airun_nb.errors import RunBusy, RunEnded, RunNotFound, SpecError, TemplateError
from airun_nb.spec import approval as gateconfig
from airun_nb.spec import dialect
from airun_nb.spec.parser import StepSpec, WorkflowSpec, _hash
from airun_nb.store import pending as recent
from airun_nb.store.backend import Backend
from airun_nb.store.owner import HOST
from airun_nb.store.queue import queue_of

_STEP_COLUMNS = """run_id, step_id, status, attempts, def_hash, code_hash, eff_hash,
      epoch(started_at) AS started_at, epoch(finished_at) AS finished_at,
      finish_seq, output_kind, output_json, output_table,
      output_blob IS NOT NULL AS has_blob, replayed_from, reason, error,
      compensation, comp_status, comp_attempts, comp_error,
      epoch(comp_finished_at) AS comp_finished_at, fingerprint"""


def new_run_id() -> str:
    return "r-" + uuid.uuid4().hex[:8]


@dataclass
class PlanEntry:
    step_id: str
    action: str  # "replay" | "run"
    reason: str
    changed: list[str] = field(default_factory=list)  # what differs from the stored step


@dataclass
class Plan:
    run_id: str
    mode: str  # "new" | "resume" | "seeded" | "fork" | "rollback"
    source_run: str | None
    entries: list[PlanEntry]
    forked_step: str | None = None  # a fork: the step it runs again from (source_run: the run)
    # What the run takes over from the stored run it continues.
    launched_by: str | None = None
    source_launcher: str | None = None  # who launched the run a fork copies
    prior_spec_hash: str | None = None
    created_at: float | None = None
    prior: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    # A resume: finished steps whose definition or code changed since they ran (they replay).
    code_changed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def replayed(self) -> list[str]:
        return [e.step_id for e in self.entries if e.action == "replay"]

    @property
    def to_run(self) -> list[PlanEntry]:
        return [e for e in self.entries if e.action == "run"]

    def summary(self) -> str:
        """One short paragraph: what resumes, what replays and why the rest runs again."""
        if self.mode == "new":
            return f"run {self.run_id}: new run of {len(self.entries)} steps"
        if self.mode == "rollback":
            return f"run {self.run_id}: rolling back"
        if self.mode == "fork":
            head = f"run {self.run_id}: fork of {self.source_run} from step '{self.forked_step}'"
        elif self.mode == "resume":
            head = f"run {self.run_id}: resuming"
        else:
            head = f"run {self.run_id}: new run, reusing unchanged steps of {self.source_run}"
        lines = [head]
        if self.replayed:
            lines.append(f"  replayed from the store: {', '.join(self.replayed)}")
        for e in self.to_run:
            lines.append(f"  runs: {e.step_id} ({e.reason})")
        return "\n".join(lines)

    def code_changed_line(self) -> str:
        """One line when a resumed run's finished steps changed since they ran; '' if not."""
        if not self.code_changed:
            return ""
        what = "; ".join(f"{sid} ({', '.join(c)})" for sid, c in self.code_changed.items())
        return (
            f"run {self.run_id} resumes with the stored outputs of steps that changed since they "
            f"finished: {what}; a new run or a fork runs them with the new code"
        )


class Planner:
    """Plans one run of ``spec`` against ``store``; fills in the step states it is given."""

    def __init__(
        self,
        spec: WorkflowSpec,
        store: Backend,
        states: dict[str, StepState],
        *,
        params: dict[str, Any],
        namespace: Mapping[str, Any],
    ) -> None:
        self.spec = spec
        self.store = store
        self.states = states
        self.params = params
        self.namespace = namespace
        self.order: list[StepSpec] = list(spec.steps)
        self.blob_source: dict[str, str] = {}
        # call targets not defined here: fine for a resumed run's finished steps only
        self.unresolved: dict[str, kinds.ResolveError] = {}

    # ------------------------------------------------------------------ checks
    def resolve(self) -> None:
        """Find every ``call`` target, fingerprint the code of every step (see
        :mod:`airun_nb.engine.fingerprint`) and check every body that can be checked now."""
        prints = Fingerprinter(self.namespace)
        for st in self.states.values():
            if st.spec.kind == "call":
                try:
                    st.fn = kinds.resolve_callable(str(st.spec.body), self.namespace, step=st.id)
                except kinds.ResolveError as exc:
                    self.unresolved[st.id] = exc  # decide() raises it if the step must run
                    continue
            elif st.spec.kind == "python":
                kinds.compile_python(str(st.spec.body), st.id)
            elif st.spec.kind == "approval":
                gateconfig.parse_config(st.spec.body, step=st.id)
            elif st.spec.kind == "capability":
                try:
                    capabilities.get(str(st.spec.body))
                except capabilities.CapabilityError as exc:
                    err = SpecError(f"step '{st.id}': {legacy.hint(exc)}")
                    err.exit_kind = "not_found"
                    raise err from None
            fp = stepprint.of_step(st, prints)
            if fp is not None and fp.components:
                st.code_hash = fp.digest
                st.fingerprint = {"components": fp.components}

    def hash_steps(self) -> None:
        params_hash = _hash(self.params)
        self.order = self._topo()
        self._params_hash = params_hash
        for s in self.order:
            self._chain(self.states[s.id])

    def _chain(self, st: StepState) -> None:
        s = st.spec
        text = "|".join(
            [
                s.def_hash,
                st.code_hash,
                self._params_hash,
                *(self.states[n].eff_hash for n in s.needs),
            ]
        )
        st.eff_hash = hashlib.sha256(text.encode()).hexdigest()[:16]

    def _topo(self) -> list[StepSpec]:
        order: list[StepSpec] = []
        seen: set[str] = set()
        for s in self.spec.steps:
            stack = [(s, False)]
            while stack:
                node, expanded = stack.pop()
                if node.id in seen:
                    continue
                if expanded:
                    seen.add(node.id)
                    order.append(node)
                    continue
                stack.append((node, True))
                for n in reversed(node.needs):
                    if n not in seen:
                        stack.append((self.spec.by_id[n], False))
        return order

    def check_templates(self) -> None:
        if self.spec.seed_dialect:  # flat lookups ({{draft}}) resolve against outputs
            return dialect.check_flat_names(self.spec, set(self.namespace))
        known = {"params", "steps", "run", "result", "secrets", *self.namespace.keys()}
        for step_id, field_path, names in self.spec.template_names():
            allowed = (
                known if field_path.split(".")[0] in ("check", "compensate") else known - {"result"}
            )
            allowed = allowed | set(self.spec.by_id[step_id].bindings)
            for name in sorted(names - allowed):
                raise TemplateError(
                    f"step '{step_id}', field '{field_path}': name '{name}' is undefined "
                    "(templates see params, steps, run, secrets and notebook variables)"
                )

    # ------------------------------------------------------------------ which run
    def select_run(
        self, resume: str | None, new: bool
    ) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], str]:
        store = self.store
        if resume:
            row = store.run_row(resume)
            if row is None:
                raise RunNotFound(f"no run '{resume}' in {store.path}")
            check_not_busy(row, self.store)
            if row["status"] == "cancelled":
                raise RunEnded(f"run {resume} was cancelled and cannot resume; start a new run")
            if row["status"] == ROLLED_BACK:
                raise RunEnded(
                    f"run {resume} was rolled back: its finished steps were undone, so it "
                    "cannot resume; start a new run (or fork it)"
                )
            # A rollback that stopped (killed, or a compensation failed) is unfinished too:
            # resuming it continues the rollback.
            mode = "rollback" if row["status"] in (ROLLING_BACK, ROLLBACK_FAILED) else "resume"
            return row, self.load_rows(resume), mode
        if not new:
            row = recent.latest_run(store, self.spec.name)
            if row is not None and _elsewhere(row, store) and recent.started_by_owner(store, row):
                return None, {}, "new"  # a live process's run belongs to it
            if row is not None and queue_of(row.get("source")) is not None:
                return None, {}, "new"  # a submitted run belongs to its queue's workers
            if row is not None and row["status"] == ROLLBACK_FAILED:
                raise RunBusy(
                    f"run {row['run_id']} of {self.spec.name} is rollback_failed: finish undoing "
                    f"it with `%workflow rollback {row['run_id']}` (or `airun rollback "
                    f"{row['run_id']}`), or start anew with --new"
                )
            if row is not None and row["status"] == ROLLING_BACK:
                check_not_busy(row, self.store)
                return row, self.load_rows(row["run_id"]), "rollback"
            if (
                row is not None
                and row["status"] in RESUMABLE
                and self.stored_params(row["run_id"], row) == self.comparable(self.params)
            ):  # other params: a new run, never this one with different inputs
                check_not_busy(row, self.store)
                return row, self.load_rows(row["run_id"]), "resume"
            if row is not None and row["status"] == COMPLETED:
                rows = self.load_rows(row["run_id"])
                if self._changed(rows):
                    return row, rows, "seeded"
        return None, {}, "new"

    def _changed(self, rows: Mapping[str, Mapping[str, Any]]) -> bool:
        """Do these stored steps of a completed run differ from the workflow as it is now?"""
        return (
            any(
                rows.get(s.id, {}).get("eff_hash") != self.states[s.id].eff_hash
                for s in self.spec.steps
            )
            or set(rows) != set(self.states)
            or any(stepprint.values_changed(self.states, r) for r in rows.values())
        )

    def starts_new(self) -> bool:
        """Without the lease: does the store's index of latest runs already tell that running
        this workflow (not ``new``, no ``resume``) starts a new run? Its latest run finished
        with these very steps, or is executing in another live process. False: ask the store."""
        head = recent.latest_head(self.store, self.spec.name)
        if head is None:
            return False
        if head["run_id"] is None:
            return True  # no run of this workflow yet
        if head["status"] == COMPLETED and head.get("steps") is not None:
            rows = {
                sid: {"step_id": sid, "eff_hash": eff, "fingerprint": fp}
                for sid, (eff, fp) in head["steps"].items()
            }
            return not self._changed(rows)
        return bool(head.get("fresh")) and _elsewhere(head, self.store)

    def select_rollback(self, run_id: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The stored run to roll back (on demand, or to finish a rollback)."""
        row = self.store.run_row(run_id)
        if row is None:
            raise RunNotFound(f"no run '{run_id}' in {self.store.path}")
        if row["status"] in (RUNNING, ROLLING_BACK) and self.store.owner_alive(
            row
        ):  # idle: waiting
            raise RunBusy(
                f"run {run_id} is still executing in another process (pid "
                f"{row['owner_pid']} on {row['owner_host']}); stop it there before rolling "
                "it back"
            )
        if row["status"] == ROLLED_BACK:
            raise RunEnded(f"run {run_id} is already rolled back; there is nothing left to undo")
        return row, self.load_rows(run_id)

    def stored_params(
        self, run_id: str, row: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The params a stored run was started with (None: no such run)."""
        if row is None:
            row = self.store.run_row(run_id)
        if row is None:
            return None
        value = json.loads(row["params"]) if row.get("params") else {}
        return dict(value) if isinstance(value, dict) else {}

    @staticmethod
    def comparable(params: Mapping[str, Any]) -> dict[str, Any]:
        """Params as the store keeps them (JSON), to compare with a stored run's."""
        value = json.loads(json.dumps(dict(params), default=str, sort_keys=True))
        return dict(value)

    def load_rows(self, run_id: str) -> dict[str, dict[str, Any]]:
        return recent.step_rows(self.store, run_id, _STEP_COLUMNS)

    def select_fork(
        self, run_id: str, from_step: str
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The stored run a fork starts from, and its steps."""
        row = self.store.run_row(run_id)
        if row is None:
            raise RunNotFound(f"no run '{run_id}' in {self.store.path}")
        if from_step not in self.states:
            known = ", ".join(self.states)
            raise SpecError(f"fork: the workflow has no step '{from_step}' (steps: {known})")
        check_not_busy(row, self.store)
        return row, self.load_rows(run_id)

    # ------------------------------------------------------------------ decisions
    def decide(
        self,
        prior_run: dict[str, Any] | None,
        rows: dict[str, dict[str, Any]],
        mode: str,
        *,
        fork_step: str | None = None,
        fork_only: bool = False,
    ) -> Plan:
        plan = Plan(new_run_id(), mode, None, [])
        if mode in ("resume", "rollback") and prior_run is not None:
            plan.run_id = prior_run["run_id"]
            plan.launched_by = prior_run.get("launched_by")
            plan.prior_spec_hash = prior_run.get("spec_hash")
            plan.created_at = timestamp(prior_run.get("created_at")) or time.time()
            plan.prior = prior_run
            fork_step = prior_run.get("forked_step") or None
            plan.source_run = prior_run.get("forked_from") or None
        if mode in ("seeded", "fork") and prior_run is not None:
            plan.source_run = prior_run["run_id"]
            if mode == "fork":  # a fork acts for the launcher of the run it copies too
                plan.source_launcher = prior_run.get("launched_by")
        plan.forked_step = fork_step
        forced = _downstream(self.spec, fork_step) if fork_step in self.states else set()
        if fork_only and fork_step:
            forced = {fork_step}  # the step alone, against the recorded outputs of the rest
        prior_params = (
            json.loads(prior_run["params"]) if prior_run and prior_run.get("params") else None
        )
        moved: set[str] = set()  # steps whose hash changed here: those downstream re-chain
        for s in self.order:
            st = self.states[s.id]
            row = rows.get(s.id)
            if s.id in self.unresolved:
                if mode not in ("resume", "rollback") or row is None:
                    raise self.unresolved[s.id]
                # Not defined here: the step is taken as it was stored (code and chain hash).
                st.code_hash = row.get("code_hash") or ""
                st.eff_hash = row.get("eff_hash") or st.eff_hash
                moved.add(s.id)
            if mode == "rollback":
                if row is not None:
                    self.apply_row(st, row)
                    plan.entries.append(PlanEntry(s.id, "replay", "rolling back"))
                else:
                    plan.entries.append(PlanEntry(s.id, "run", "not run yet"))
                continue
            if moved and any(n in moved for n in s.needs):
                before = st.eff_hash
                self._chain(st)  # an upstream step brought the hash it was stored with
                if st.eff_hash != before:
                    moved.add(s.id)
            reason, changed = self.explain(st, row, prior_params, mode)
            reason, changed, replay_why = reasons.overridden(
                st, row, mode, forced, fork_step, plan.source_run, (reason, changed)
            )
            if reason is not None and mode == "resume" and reasons.finished_here(row):
                # Resume is replay: a step that finished in this run is loaded, never executed
                # again, whatever changed since; it keeps the hashes it finished with.
                reason, replay_why = None, "finished in this run"
                what = [c for c in changed if not c.startswith("upstream ")]
                if what:
                    plan.code_changed[s.id] = what
                assert row is not None
                st.code_hash = row.get("code_hash") or ""
                st.fingerprint = reasons.json_of(row.get("fingerprint"))
                if row.get("eff_hash") and row["eff_hash"] != st.eff_hash:
                    st.eff_hash = row["eff_hash"]
                    moved.add(s.id)
            if reason is None and row is not None:
                self.apply_row(st, row)
                st.replayed = True
                if mode in ("seeded", "fork") and reasons.reuse(st, row):
                    moved.add(s.id)
                plan.entries.append(PlanEntry(s.id, "replay", replay_why, changed))
            else:
                if mode == "resume" and row is not None:
                    st.attempts = int(row.get("attempts") or 0)
                    comp = json.loads(row["compensation"]) if row.get("compensation") else None
                    if comp and "prepared_attempt" in comp and row["status"] != S_COMPLETED:
                        st.compensation = comp  # the undo captured before the first effect
                plan.entries.append(PlanEntry(s.id, "run", reason or "not run yet", changed))
            entry = plan.entries[-1]
            untracked = reasons.untracked(st)
            if untracked:
                entry.reason += f" ({', '.join(untracked)} not tracked)"
            st.fingerprint = {**(st.fingerprint or {}), "changed": changed, "why": entry.reason}
        seqs = [int(r["finish_seq"]) for r in rows.values() if r.get("finish_seq") is not None]
        plan.seq = max(seqs) if seqs and mode in ("resume", "rollback") else 0
        missing = [
            e.step_id for e in plan.entries if e.action == "run" and e.step_id in self.unresolved
        ]
        if missing:
            raise self.missing_functions(missing)
        return plan

    def missing_functions(self, steps: list[str]) -> kinds.ResolveError:
        """One error naming every function the steps that still have to run need."""
        if len(steps) == 1:
            return self.unresolved[steps[0]]
        names = ", ".join(dict.fromkeys(str(self.states[s].spec.body).strip() for s in steps))
        return kinds.ResolveError(
            f"steps {', '.join(steps)} still have to run and call {names}, which are not "
            "defined here (define them in the notebook's cells, or give 'package.module:function')"
        )

    def apply_row(self, st: StepState, row: Mapping[str, Any]) -> None:
        """Take a step's state as the store has it."""
        st.status = row["status"]
        st.attempts = int(row.get("attempts") or 0)
        st.started_at = timestamp(row.get("started_at"))
        st.finished_at = timestamp(row.get("finished_at"))
        st.finish_seq = row.get("finish_seq")
        st.out = {k: row.get(k) for k in ("output_kind", "output_json", "output_table")}
        st.out["has_blob"] = bool(row.get("has_blob"))
        st.compensation = json.loads(row["compensation"]) if row.get("compensation") else None
        st.comp_status = row.get("comp_status")
        st.comp_attempts = int(row.get("comp_attempts") or 0)
        st.comp_error = row.get("comp_error")
        st.comp_finished_at = timestamp(row.get("comp_finished_at"))
        st.replayed_from = row.get("replayed_from")
        st.error = row.get("error")
        st.reason = row.get("reason")
        self.blob_source[st.id] = row["run_id"]

    def explain(
        self, st: StepState, row: Mapping[str, Any] | None, prior_params: Any, mode: str
    ) -> tuple[str | None, list[str]]:
        """Why this step must run (None: it can replay), and what differs from ``row``."""
        return reasons.explain(st, row, self.states, self.params, prior_params, mode)


def _elsewhere(row: Mapping[str, Any], store: Backend) -> bool:
    """Is the run executing its steps in another live process? (When that process started it,
    it is its own: re-running the cell here starts anew. A run it resumed is busy, see
    check_not_busy.)"""
    return (
        row["status"] == RUNNING  # one rolling back elsewhere stays busy (check_not_busy)
        and row.get("owner_pid") is not None
        and (int(row["owner_pid"]) != os.getpid() or row.get("owner_host") != HOST)
        and store.owner_alive(row)
    )


def check_not_busy(row: Mapping[str, Any], store: Backend) -> None:
    if row["status"] in (RUNNING, ROLLING_BACK) and store.owner_alive(row):
        raise RunBusy(busy_message(row))


def _downstream(spec: WorkflowSpec, step_id: str | None) -> set[str]:
    """``step_id`` and every step that needs it, directly or not."""
    below = spec.downstream()
    out: set[str] = set()
    todo = [step_id] if step_id else []
    while todo:
        sid = todo.pop()
        if sid not in out:
            out.add(sid)
            todo.extend(below.get(sid, []))
    return out
