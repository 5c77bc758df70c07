"""The engine: runs one workflow run to an end state, checkpointing every transition.

A run goes through three phases:

1. **plan**: resolve ``call`` targets, hash every step (its definition, its function's source,
   the run's params and the hashes of the steps it needs: a Merkle chain, so a change anywhere
   invalidates everything downstream) and decide, against what the store already holds, which
   steps replay and which run, with a reason for each.
2. **execute**: schedule the DAG, independent steps concurrently (``max_parallel``), with
   ``when`` skips, retries with backoff and timeouts. Each transition is journaled before the
   next thing happens.
3. **finish**: record the end state; a kernel interrupt leaves the run ``interrupted`` and
   resumable; a failed step ends the run ``failed``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import json
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from . import (
    auditlog,
    capabilities,
    compensation,
    config,
    executor,
    gate,
    kinds,
    outputs,
    templates,
)
from . import policy as policy_mod
from .errors import (
    AirunError,
    RunBusy,
    RunInterrupted,
    RunNotFound,
    SpecError,
    TemplateError,
    WorkflowFailed,
)
from .spec import StepSpec, WorkflowSpec, _hash, expand
from .store import Store, crashpoint
from .workspace import Workspace

# Run statuses.
PENDING, RUNNING, WAITING, COMPLETED, FAILED, INTERRUPTED = (
    "pending",
    "running",
    "waiting",
    "completed",
    "failed",
    "interrupted",
)
ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED = "rolling_back", "rolled_back", "rollback_failed"
RESUMABLE = {PENDING, RUNNING, WAITING, FAILED, INTERRUPTED}
TERMINAL = {COMPLETED, ROLLED_BACK, ROLLBACK_FAILED}
# Step statuses.
S_PENDING, S_RUNNING, S_COMPLETED, S_FAILED, S_SKIPPED = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
)
S_INTERRUPTED, S_WAITING = "interrupted", "waiting"
DONE_STEP = {S_COMPLETED, S_SKIPPED}

_MISSING = object()
_ACTIVE: dict[str, Engine] = {}
_ACTIVE_LOCK = threading.Lock()


def _process_token(pid: int) -> str:
    """Start time of a process, to tell a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


_MY_TOKEN = _process_token(os.getpid())


def owner_alive(row: Mapping[str, Any]) -> bool:
    """Is the process recorded as executing this run still alive?"""
    pid = row.get("owner_pid")
    if not pid:
        return False
    if row.get("owner_host") not in (None, socket.gethostname()):
        return True  # cannot tell for another machine: assume it is
    pid = int(pid)
    if pid == os.getpid() and row.get("owner_token") == _MY_TOKEN:
        with _ACTIVE_LOCK:
            return str(row.get("run_id")) in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    token = row.get("owner_token") or ""
    return not token or _process_token(pid) == token


def new_run_id() -> str:
    return "r-" + uuid.uuid4().hex[:8]


@dataclass(slots=True)
class StepState:
    spec: StepSpec
    status: str = S_PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    finish_seq: int | None = None
    out: dict[str, Any] = field(default_factory=dict)
    value: Any = _MISSING
    code_hash: str = ""
    eff_hash: str = ""
    replayed_from: str | None = None
    replayed: bool = False
    reason: str | None = None
    error: str | None = None
    fn: Callable[..., Any] | None = None
    cap_args: Any = None
    compensation: dict[str, Any] | None = None
    comp_status: str | None = None
    comp_attempts: int = 0
    comp_error: str | None = None
    comp_finished_at: float | None = None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass
class PlanEntry:
    step_id: str
    action: str  # "replay" | "run"
    reason: str


@dataclass
class Plan:
    run_id: str
    mode: str  # "new" | "resume" | "seeded"
    source_run: str | None
    entries: list[PlanEntry]

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
        head = (
            f"run {self.run_id}: resuming"
            if self.mode == "resume"
            else f"run {self.run_id}: new run, reusing unchanged steps of {self.source_run}"
        )
        lines = [head]
        if self.replayed:
            lines.append(f"  replayed from the store: {', '.join(self.replayed)}")
        for e in self.to_run:
            lines.append(f"  runs: {e.step_id} ({e.reason})")
        return "\n".join(lines)


class Listener:
    """Receives progress from the engine (the notebook's live table implements this)."""

    def planned(self, engine: Engine) -> None: ...

    def changed(self, engine: Engine, state: StepState | None) -> None: ...

    def finished(self, engine: Engine) -> None: ...


class StepTimeout(Exception):
    pass


class CheckFailed(Exception):
    pass


class Engine:
    def __init__(
        self,
        spec: WorkflowSpec,
        store: Store,
        *,
        namespace: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        listener: Listener | None = None,
        source: str | None = None,
        user: str | None = None,
    ) -> None:
        self.params: dict[str, Any] = {**spec.params, **(params or {})}
        spec = expand(spec, self.params)
        self.spec = spec
        self.store = store
        self.namespace: Mapping[str, Any] = namespace if namespace is not None else {}
        self.listener = listener or Listener()
        self.source = source
        self.user = user or config.current_user()
        self.launched_by = self.user  # a resumed run keeps its original launcher
        self._prior_spec_hash: str | None = None
        self._order: list[StepSpec] = list(spec.steps)
        self.states: dict[str, StepState] = {s.id: StepState(s) for s in spec.steps}
        self.run_id = ""
        self.status = PENDING
        self.error: str | None = None
        self.failed_step: str | None = None
        self.plan: Plan | None = None
        self.created_at = time.time()
        self.started_at = time.time()
        self.finished_at: float | None = None
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._sql = kinds.SqlEngine()
        self._bind_output = isinstance(namespace, dict)
        self._blob_source: dict[str, str] = {}
        self.requested_rollback = False
        self.rejected = False
        self.open_gates: list[dict[str, Any]] = []
        self.policy = policy_mod.Policy()
        self.workspace = Workspace()
        self.executed: list[str] = []

    # ------------------------------------------------------------------ plan
    def prepare(self, *, resume: str | None = None, new: bool = False) -> Plan:
        try:
            with gc_paused():  # released when the run ends (execute), or on failure here
                self._govern()
                self._resolve()
                self._hash_steps()
                self._check_templates()
                with self.store.session("planning a run"):
                    prior_run, prior_rows, mode = self._select_run(resume, new)
                self.plan = self._decide(prior_run, prior_rows, mode)
        except BaseException:
            gc_release()
            raise
        return self.plan

    def _govern(self) -> None:
        self.policy = policy_mod.current().tightened(self.spec.policy)
        self.workspace = Workspace()

    def _resolve(self) -> None:
        for st in self.states.values():
            if st.spec.kind == "call":
                st.fn = kinds.resolve_callable(str(st.spec.body), self.namespace, step=st.id)
                st.code_hash = kinds.code_hash(st.fn)
            elif st.spec.kind == "python":
                kinds.compile_python(str(st.spec.body), st.id)
            elif st.spec.kind == "approval":
                gate.parse_config(st.spec.body, step=st.id)
            elif st.spec.kind == "capability":
                try:
                    capabilities.get(str(st.spec.body))
                except capabilities.CapabilityError as exc:
                    raise SpecError(f"step '{st.id}': {exc.message}") from None

    def _hash_steps(self) -> None:
        params_hash = _hash(self.params)
        self._order = self._topo()
        for s in self._order:
            st = self.states[s.id]
            text = "|".join(
                [s.def_hash, st.code_hash, params_hash, *(self.states[n].eff_hash for n in s.needs)]
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

    def _check_templates(self) -> None:
        if self.spec.seed_dialect:
            return  # seed lookups ({{draft}}) resolve against outputs at run time
        known = {"params", "steps", "run", "result", *self.namespace.keys()}
        for step_id, field_path, names in self.spec.template_names():
            allowed = (
                known if field_path.split(".")[0] in ("check", "compensate") else known - {"result"}
            )
            allowed = allowed | set(self.spec.by_id[step_id].bindings)
            for name in sorted(names - allowed):
                raise TemplateError(
                    f"step '{step_id}', field '{field_path}': name '{name}' is undefined "
                    "(templates see params, steps, run and notebook variables)"
                )

    def _select_run(
        self, resume: str | None, new: bool
    ) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], str]:
        store = self.store
        if resume:
            row = _one(store.query_dicts("SELECT * FROM runs WHERE run_id = ?", [resume]))
            if row is None:
                raise RunNotFound(f"no run '{resume}' in {store.path}")
            self._check_not_busy(row)
            if row["status"] in (ROLLED_BACK, ROLLBACK_FAILED):
                raise RunBusy(
                    f"run {resume} is {row['status']}: its finished steps were undone, so it "
                    "cannot resume; start a new run"
                    + (
                        f", or finish the rollback with `airun rollback {resume}`"
                        if row["status"] == ROLLBACK_FAILED
                        else ""
                    )
                )
            mode = "rollback" if row["status"] == ROLLING_BACK else "resume"
            return row, self._load_rows(resume), mode
        if not new:
            row = _one(
                store.query_dicts(
                    "SELECT * FROM runs WHERE workflow = ? ORDER BY created_at DESC LIMIT 1",
                    [self.spec.name],
                )
            )
            if row is not None and row["status"] == ROLLBACK_FAILED:
                raise RunBusy(
                    f"run {row['run_id']} of {self.spec.name} is rollback_failed: finish undoing "
                    f"it with `%workflow rollback {row['run_id']}` (or `airun rollback "
                    f"{row['run_id']}`), or start anew with --new"
                )
            if row is not None and row["status"] == ROLLING_BACK:
                self._check_not_busy(row)
                return row, self._load_rows(row["run_id"]), "rollback"
            if row is not None and row["status"] in RESUMABLE:
                self._check_not_busy(row)
                return row, self._load_rows(row["run_id"]), "resume"
            if row is not None and row["status"] == COMPLETED:
                rows = self._load_rows(row["run_id"])
                changed = any(
                    rows.get(s.id, {}).get("eff_hash") != self.states[s.id].eff_hash
                    for s in self.spec.steps
                ) or set(rows) != set(self.states)
                if changed:
                    return row, rows, "seeded"
        return None, {}, "new"

    def _check_not_busy(self, row: Mapping[str, Any]) -> None:
        if row["status"] in (RUNNING, ROLLING_BACK) and owner_alive(row):
            raise RunBusy(
                f"run {row['run_id']} is executing in another process (pid {row['owner_pid']} "
                f"on {row['owner_host']}); wait for it or interrupt it there"
            )

    def _load_rows(self, run_id: str) -> dict[str, dict[str, Any]]:
        rows = self.store.query_dicts(
            """SELECT run_id, step_id, status, attempts, def_hash, code_hash, eff_hash,
                      epoch(started_at) AS started_at, epoch(finished_at) AS finished_at,
                      finish_seq, output_kind, output_json, output_table,
                      output_blob IS NOT NULL AS has_blob, replayed_from, reason, error,
                      compensation, comp_status, comp_attempts, comp_error,
                      epoch(comp_finished_at) AS comp_finished_at
               FROM steps WHERE run_id = ?""",
            [run_id],
        )
        return {r["step_id"]: r for r in rows}

    def _decide(
        self, prior_run: dict[str, Any] | None, rows: dict[str, dict[str, Any]], mode: str
    ) -> Plan:
        if mode in ("resume", "rollback") and prior_run is not None:
            self.run_id = prior_run["run_id"]
            self.launched_by = prior_run.get("launched_by") or self.user
            self._prior_spec_hash = prior_run.get("spec_hash")
            if mode == "rollback":
                # Finishing a rollback: the run keeps the failure that started it.
                self.status = prior_run["status"]
                self.failed_step = self.failed_step or prior_run.get("failed_step")
                self.error = self.error or prior_run.get("error")
            self.created_at = _ts(prior_run.get("created_at")) or time.time()
        else:
            self.run_id = new_run_id()
        source = prior_run["run_id"] if prior_run is not None else None
        entries: list[PlanEntry] = []
        prior_params = (
            json.loads(prior_run["params"]) if prior_run and prior_run.get("params") else None
        )
        for s in self._order:
            st = self.states[s.id]
            row = rows.get(s.id)
            reason = self._reason(st, row, prior_params)
            if mode == "rollback" and row is not None:
                self._apply_row(st, row)
                entries.append(PlanEntry(s.id, "replay", "rolling back"))
            elif reason is None and row is not None:
                self._apply_row(st, row)
                st.replayed = True
                if mode == "seeded":
                    st.replayed_from = row.get("replayed_from") or row["run_id"]
                    st.comp_status = st.comp_error = None
                    st.comp_attempts = 0
                entries.append(PlanEntry(s.id, "replay", "unchanged"))
            else:
                if mode == "resume" and row is not None:
                    st.attempts = int(row.get("attempts") or 0)
                    comp = json.loads(row["compensation"]) if row.get("compensation") else None
                    if comp and "prepared_attempt" in comp and row["status"] != S_COMPLETED:
                        st.compensation = comp  # the undo captured before the first effect
                entries.append(PlanEntry(s.id, "run", reason or "not run yet"))
        seqs = [int(r["finish_seq"]) for r in rows.values() if r.get("finish_seq") is not None]
        self._seq = max(seqs) if seqs and mode in ("resume", "rollback") else 0
        return Plan(self.run_id, mode, source if mode == "seeded" else None, entries)

    def _apply_row(self, st: StepState, row: Mapping[str, Any]) -> None:
        """Take a step's state as the store has it."""
        st.status = row["status"]
        st.attempts = int(row.get("attempts") or 0)
        st.started_at = _ts(row.get("started_at"))
        st.finished_at = _ts(row.get("finished_at"))
        st.finish_seq = row.get("finish_seq")
        st.out = {k: row.get(k) for k in ("output_kind", "output_json", "output_table")}
        st.out["has_blob"] = bool(row.get("has_blob"))
        st.compensation = json.loads(row["compensation"]) if row.get("compensation") else None
        st.comp_status = row.get("comp_status")
        st.comp_attempts = int(row.get("comp_attempts") or 0)
        st.comp_error = row.get("comp_error")
        st.comp_finished_at = _ts(row.get("comp_finished_at"))
        st.replayed_from = row.get("replayed_from")
        st.error = row.get("error")
        st.reason = row.get("reason")
        self._blob_source[st.id] = row["run_id"]

    def _reason(
        self, st: StepState, row: Mapping[str, Any] | None, prior_params: Any
    ) -> str | None:
        """Why this step must run (None: it can replay)."""
        s = st.spec
        if row is None:
            return "not run yet"
        status = row["status"]
        if status in (S_COMPLETED, S_SKIPPED):
            if row.get("eff_hash") == st.eff_hash:
                if status == S_COMPLETED and not outputs.storable(row):
                    return "its output could not be stored"
                return None
            if row.get("def_hash") != s.def_hash:
                return "definition changed"
            if row.get("code_hash") != st.code_hash:
                return f"function {s.body} changed"
            if prior_params is not None and prior_params != self.params:
                return "params changed"
            for n in s.needs:
                if self.states[n].status not in DONE_STEP or not self.states[n].replayed:
                    return f"upstream '{n}' runs again"
            return "inputs changed"
        if status == S_WAITING:
            return "waiting for approval"
        if status == S_RUNNING:
            return f"was in flight when its process died (attempt {row.get('attempts')})"
        if status == S_INTERRUPTED:
            return "was interrupted"
        if status == S_FAILED:
            return "failed before"
        return "not run yet"

    # ------------------------------------------------------------------ records
    def _run_record(self) -> dict[str, Any]:
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
            "owner_pid": os.getpid(),
            "owner_host": socket.gethostname(),
            "owner_token": _MY_TOKEN,
            "seeded_from": self.plan.source_run if self.plan else None,
            "failed_step": self.failed_step,
            "error": self.error,
            "source": self.source,
            "on_failure": self.spec.on_failure,
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
        }
        rec.update({k: v for k, v in st.out.items() if k != "has_blob"})
        if att is not None:
            rec["att"] = att
        return rec

    def event(self, kind: str, step_id: str | None = None, **detail: Any) -> dict[str, Any]:
        return {
            "t": "ev",
            "ts": time.time(),
            "run_id": self.run_id,
            "step_id": step_id,
            "kind": kind,
            "detail": json.dumps(detail, default=str) if detail else None,
        }

    def _set_status(self, status: str, **detail: Any) -> None:
        self.status = status
        if status in TERMINAL or status in (FAILED, INTERRUPTED, WAITING):
            self.finished_at = time.time()
        self.store.record_many([self._run_record(), self.event(f"run_{status}", **detail)])

    # ------------------------------------------------------------------ execute
    def execute(self) -> None:
        assert self.plan is not None, "prepare() first"
        with _ACTIVE_LOCK:
            if self.run_id in _ACTIVE:
                raise RunBusy(f"run {self.run_id} is already executing in this kernel")
            _ACTIVE[self.run_id] = self
        try:
            if self.plan.mode in ("resume", "rollback"):
                self._close_dead_attempts()
            if self.plan.mode == "rollback":
                self.listener.planned(self)
                compensation.roll_back(self)
            else:
                self._begin()
                self.listener.planned(self)
                self._schedule()
                if self.failed_step is None and self.open_gates:
                    self._set_status(WAITING, gates=[g["gate_id"] for g in self.open_gates])
                elif self.failed_step is None:
                    self._set_status(COMPLETED)
                elif self._failure_policy() == "rollback":
                    compensation.roll_back(self)
                else:
                    self._set_status(FAILED, step=self.failed_step, error=self.error)
        except KeyboardInterrupt:
            was_rolling_back = self.status == ROLLING_BACK
            self._interrupted()
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
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.pop(self.run_id, None)
            gc_release()
        self._bind_outputs()
        self.store.flush()
        self.listener.finished(self)
        self._raise_for_status()

    def _close_dead_attempts(self) -> None:
        """Attempts left ``running`` by a process that died are closed as ``crashed``."""
        rows = self.store.query_dicts(
            "SELECT * FROM attempts WHERE run_id = ? AND status = 'running'", [self.run_id]
        )
        recs = []
        for r in rows:
            rec: dict[str, Any] = {"t": "att", **r}
            rec["started_at"] = _ts(r.get("started_at"))
            rec["finished_at"] = None
            rec["status"] = "crashed"
            rec["error"] = "its process died during this attempt"
            recs.append(rec)
        if recs:
            self.store.record_many(recs)

    def _failure_policy(self) -> str:
        assert self.failed_step is not None
        if self.rejected:
            return "rollback"  # a rejection always rolls the run back
        return self.states[self.failed_step].spec.on_failure or self.spec.on_failure

    def _raise_for_status(self) -> None:
        if self.status in (COMPLETED, WAITING) or (
            self.status == ROLLED_BACK and (self.failed_step is None or self.requested_rollback)
        ):
            return
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

    def prepare_rollback(self, run_id: str) -> Plan:
        """Load a stored run to roll it back (on demand, or to finish a rollback)."""
        with self.store.session("planning a rollback"):
            row = _one(self.store.query_dicts("SELECT * FROM runs WHERE run_id = ?", [run_id]))
            if row is None:
                raise RunNotFound(f"no run '{run_id}' in {self.store.path}")
            if row["status"] in (RUNNING, ROLLING_BACK, WAITING) and owner_alive(row):
                raise RunBusy(
                    f"run {run_id} is still executing in another process (pid "
                    f"{row['owner_pid']} on {row['owner_host']}); stop it there before rolling "
                    "it back"
                )
            if row["status"] == ROLLED_BACK:
                raise RunBusy(f"run {run_id} is already rolled back")
            rows = self._load_rows(run_id)
        self.workspace = Workspace()
        self.failed_step = row.get("failed_step")
        self.error = row.get("error")
        self.requested_rollback = True
        self.plan = self._decide(row, rows, "rollback")
        return self.plan

    def _begin(self) -> None:
        recs: list[dict[str, Any]] = []
        assert self.plan is not None
        if self.plan.mode != "resume" or self._prior_spec_hash != self.spec.spec_hash:
            recs.append(
                {
                    "t": "spec",
                    "spec_hash": self.spec.spec_hash,
                    "workflow": self.spec.name,
                    "text": self.spec.source,
                }
            )
        self.status = RUNNING
        self.started_at = time.time()
        self.finished_at = None
        recs.append(self._run_record())
        recs.append(
            self.event(
                "run_resumed" if self.plan.mode == "resume" else "run_started",
                mode=self.plan.mode,
                source_run=self.plan.source_run,
            )
        )
        for entry in self.plan.entries:
            st = self.states[entry.step_id]
            if entry.action == "run":
                st.reason = None if entry.reason == "not run yet" else entry.reason
                if st.reason:
                    recs.append(self.event("step_invalidated", st.id, reason=st.reason))
                st.status = S_PENDING
                st.error = None
                st.out = {}
                st.started_at = st.finished_at = None
                recs.append(self.step_record(st))
            elif self.plan.mode == "seeded":
                recs.append(self.step_record(st))
        self.store.record_many(recs)

    def _schedule(self) -> None:
        spec = self.spec
        if all(st.status in DONE_STEP for st in self.states.values()):
            return  # everything replayed
        waiting: dict[str, int] = {}
        downstream = spec.downstream()
        ready: list[tuple[int, str]] = []
        for s in spec.steps:
            st = self.states[s.id]
            if st.status in DONE_STEP:
                continue
            waiting[s.id] = sum(1 for n in s.needs if self.states[n].status not in DONE_STEP)
            if waiting[s.id] == 0:
                heapq.heappush(ready, (s.index, s.id))
        inflight: dict[Future[None], StepState] = {}
        pool: ThreadPoolExecutor | None = None
        try:
            while True:
                while ready and len(inflight) < spec.max_parallel and self.failed_step is None:
                    _, sid = heapq.heappop(ready)
                    st = self.states[sid]
                    inline = not inflight and not ready and st.spec.timeout is None
                    if inline:
                        self.run_step(st)
                        self._after(st, waiting, downstream, ready)
                        continue
                    if pool is None:
                        pool = ThreadPoolExecutor(
                            max_workers=spec.max_parallel, thread_name_prefix="airun-step"
                        )
                    inflight[pool.submit(self.run_step, st)] = st
                if not inflight:
                    break
                done, _ = wait(list(inflight), timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    st = inflight.pop(fut)
                    fut.result()
                    self._after(st, waiting, downstream, ready)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _after(
        self,
        st: StepState,
        waiting: dict[str, int],
        downstream: Mapping[str, list[str]],
        ready: list[tuple[int, str]],
    ) -> None:
        if st.status == S_FAILED:
            if self.failed_step is None:
                self.failed_step = st.id
                self.error = st.error
            return
        if st.status not in DONE_STEP:
            return  # e.g. a gate waiting for its decision: what needs it waits too
        for d in downstream[st.id]:
            if d not in waiting:
                continue
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, (self.spec.by_id[d].index, d))

    # ------------------------------------------------------------------ one step
    def run_step(self, st: StepState) -> None:
        s = st.spec
        ctx = self.context()
        if s.bindings:
            ctx.update(s.bindings)
        skip_reason = self._skip_reason(st, ctx)
        if s.kind == "approval" and skip_reason is None:
            self._run_gate(st, ctx)
            return
        if skip_reason is not None:
            st.status = S_SKIPPED
            st.reason = skip_reason
            st.started_at = st.finished_at = time.time()
            st.finish_seq = self._next_seq()
            st.value = None
            st.out = {"output_kind": "none"}
            self.store.record_many(
                [self.step_record(st), self.event("step_skipped", st.id, reason=skip_reason)]
            )
            self.listener.changed(self, st)
            return
        verdict, first_audit = self._check_policy(st)
        policy_audit = first_audit
        if verdict.decision == "deny":
            st.status = S_FAILED
            st.started_at = st.finished_at = time.time()
            st.finish_seq = self._next_seq()
            st.error = f"denied by the policy ({verdict.reason})"
            self.store.record_many(
                [
                    *([first_audit] if first_audit else []),
                    self.step_record(st),
                    self.event("step_denied", st.id, rule=verdict.rule),
                ]
            )
            self.listener.changed(self, st)
            return
        if verdict.decision == "require_approval":
            if first_audit is not None:
                self.store.record(first_audit)
            policy_audit = None
            approved = self._policy_gate(st, verdict)
            if not approved:
                return
        policy = s.retry
        tries = 0
        while True:
            tries += 1
            st.attempts += 1
            attempt = st.attempts
            now = time.time()
            st.status = S_RUNNING
            st.started_at = st.started_at if tries > 1 and st.started_at else now
            st.error = None
            running = self.step_record(
                st,
                {
                    "phase": "execute",
                    "attempt": attempt,
                    "status": S_RUNNING,
                    "started_at": now,
                    "pid": os.getpid(),
                },
            )
            if policy_audit is not None:
                self.store.record_many([policy_audit, running])
                policy_audit = None
            else:
                self.store.record(running)
            self.listener.changed(self, st)
            crashpoint("step:started")
            try:
                value = self._attempt(st, ctx)
                crashpoint("step:returned")
                out = outputs.encode(value, self.store, f"{self.run_id}/{st.id}/{attempt}")
            except KeyboardInterrupt:
                st.status = S_INTERRUPTED
                st.error = "interrupted"
                self.store.record(
                    self.step_record(
                        st,
                        {
                            "phase": "execute",
                            "attempt": attempt,
                            "status": S_INTERRUPTED,
                            "started_at": now,
                            "finished_at": time.time(),
                            "error": "interrupted",
                            "pid": os.getpid(),
                        },
                    )
                )
                raise
            except Exception as exc:
                err = _describe(exc)
                retry = tries < policy.attempts and policy.retries(exc)
                st.error = err
                end = time.time()
                att = {
                    "phase": "execute",
                    "attempt": attempt,
                    "status": S_FAILED,
                    "started_at": now,
                    "finished_at": end,
                    "error": err,
                    "pid": os.getpid(),
                }
                if retry:
                    delay = policy.delay(tries)
                    self.store.record_many(
                        [
                            self.step_record(st, att),
                            self.event(
                                "step_retry", st.id, attempt=attempt, error=err, delay=delay
                            ),
                        ]
                    )
                    self.listener.changed(self, st)
                    time.sleep(delay)
                    continue
                st.status = S_FAILED
                st.finished_at = end
                st.finish_seq = self._next_seq()
                if s.compensate_on_failure:
                    st.compensation = self._render_compensation(st) or st.compensation
                self.store.record_many(
                    [
                        self.step_record(st, att),
                        self.event("step_failed", st.id, attempt=attempt, error=err),
                        self._execution_audit(st, "failed", err),
                    ]
                )
                self.listener.changed(self, st)
                return
            st.value = value
            st.out = out
            st.status = S_COMPLETED
            st.finished_at = time.time()
            st.finish_seq = self._next_seq()
            user_comp = self._render_compensation(st)
            if user_comp is not None:
                st.compensation = user_comp
            elif st.compensation and "args" in (st.compensation.get("with") or {}):
                st.compensation["with"]["result"] = _jsonable(value)
            self.store.record_many(
                [
                    self.step_record(
                        st,
                        {
                            "phase": "execute",
                            "attempt": attempt,
                            "status": S_COMPLETED,
                            "started_at": now,
                            "finished_at": st.finished_at,
                            "pid": os.getpid(),
                        },
                    ),
                    self._execution_audit(st, "executed", capabilities.summarize(value)),
                ]
            )
            crashpoint("step:recorded")
            self.executed.append(st.id)
            if s.output and self._bind_output:
                self.namespace[s.output] = value  # type: ignore[index]
            self.listener.changed(self, st)
            return

    # ------------------------------------------------------------------ approval gates
    def _run_gate(self, st: StepState, ctx: Mapping[str, Any]) -> None:
        s = st.spec
        conf = gate.parse_config(s.body, step=s.id)
        message = templates.render(
            conf.message or f"Approve step '{s.id}' of {self.spec.name}?",
            ctx,
            step=s.id,
            field="approval.message",
        )
        preview = None
        if conf.show is not None:
            preview = templates.render(conf.show, ctx, step=s.id, field="approval.show")
        row = self._await_gate(st, s.id, conf, str(message), preview, counts_attempt=True)
        if row is None:
            return
        st.finished_at = time.time()
        st.finish_seq = self._next_seq()
        if row["status"] == "approved":
            st.value = gate.output_of(row)
            st.out = outputs.encode(st.value, self.store, f"{self.run_id}/{s.id}/{st.attempts}")
            st.status = S_COMPLETED
            st.reason = gate.describe_decision(row)
            self.executed.append(s.id)
        else:
            self._gate_refused(st, row)
        self.store.record(self.step_record(st))
        self.listener.changed(self, st)

    def _gate_refused(self, st: StepState, row: Mapping[str, Any]) -> None:
        st.status = S_FAILED
        st.finished_at = time.time()
        st.error = (
            gate.describe_decision(row) if row["status"] == "rejected" else str(row.get("comment"))
        )
        self.rejected = row["status"] == "rejected"

    def _await_gate(
        self,
        st: StepState,
        gate_id: str,
        conf: gate.GateConfig,
        message: str,
        preview: Any,
        *,
        counts_attempt: bool,
    ) -> dict[str, Any] | None:
        """Open (or find) a gate and get its decision; None while it waits (suspend mode)."""
        preview_text = preview_html = None
        if preview is not None:
            preview_text, preview_html = _preview(preview)
        row, opened = gate.open_gate(
            self.store,
            run_id=self.run_id,
            workflow=self.spec.name,
            gate_id=gate_id,
            config=conf,
            message=message,
            preview_text=preview_text,
            preview_html=preview_html,
            launched_by=self.launched_by,
        )
        if opened:
            if counts_attempt:
                st.attempts += 1
            st.started_at = time.time()
            st.status = S_WAITING
            self.store.record(self.step_record(st))
            target = conf.notify or st.spec.notify
            if target:
                self._notify(st, gate_id, target, row)
        mode = gate.resolve_mode(conf)
        while row["status"] == "open":
            if gate.deadline_passed(row):
                if conf.on_timeout == "fail":
                    row = gate.expire(self.store, self.run_id, gate_id)
                    break
                gate.decide(
                    self.store,
                    self.run_id,
                    gate_id,
                    conf.on_timeout,
                    actor="timeout",
                    channel="timeout",
                    comment="no decision before the deadline",
                )
            elif mode == "policy":
                found = gate.policy_decision(self.spec.name, gate_id)
                if found is None:
                    row = gate.expire(
                        self.store,
                        self.run_id,
                        gate_id,
                        reason="no policy decision for this gate (set AIRUN_APPROVAL=approve or "
                        "reject, or 'approvals:' in the settings)",
                    )
                    break
                gate.decide(
                    self.store,
                    self.run_id,
                    gate_id,
                    found[0],
                    actor=f"policy:{found[1]}",
                    channel="policy",
                )
            elif mode == "suspend":
                st.status = S_WAITING
                self.open_gates.append(row)
                self.store.record(self.step_record(st))
                self.listener.changed(self, st)
                return None
            else:  # wait: poll the store for a decision from any channel
                time.sleep(0.25)
            found_row = gate.gate_row(self.store, self.run_id, gate_id)
            assert found_row is not None
            row = found_row
        return row

    # ------------------------------------------------------------------ governance
    def _check_policy(self, st: StepState) -> tuple[policy_mod.Verdict, dict[str, Any] | None]:
        s = st.spec
        if s.kind in ("parallel", "foreach"):  # structure, not an action: nothing to decide
            return policy_mod.Verdict("allow", None, None, self.user, s.kind, "low"), None
        cap = capabilities.policy_name(s.kind, s.body)
        risk = capabilities.risk_of(s.kind, s.body, s.risk)
        verdict = self.policy.evaluate(self.user, cap, risk)
        if not self.policy.active:
            return verdict, None  # no policy configured: nothing was decided
        rec = auditlog.row(
            kind="policy",
            principal=self.user,
            run_id=self.run_id,
            step_id=s.id,
            capability=cap,
            decision=verdict.decision,
            risk=risk,
            rule=verdict.rule,
        )
        return verdict, rec

    def _policy_gate(self, st: StepState, verdict: policy_mod.Verdict) -> bool | None:
        """A gate the policy inserted before a step: True approved, False refused, None waits."""
        s = st.spec
        conf = gate.GateConfig(approvers=verdict.approvers, on_timeout="reject")
        message = (
            f"The policy requires approval before step '{s.id}' runs {verdict.capability} "
            f"(risk {verdict.risk}) for {verdict.principal}"
            + (f" (rule '{verdict.rule}')" if verdict.rule else "")
        )
        preview = templates.render(s.with_, self.context(), step=s.id, field="with") or None
        row = self._await_gate(st, f"{s.id}.approval", conf, message, preview, counts_attempt=False)
        if row is None:
            return None
        if row["status"] == "approved":
            return True
        self._gate_refused(st, row)
        st.finish_seq = self._next_seq()
        self.store.record(self.step_record(st))
        self.listener.changed(self, st)
        return False

    def _run_capability(self, st: StepState, ctx: Mapping[str, Any]) -> Any:
        s = st.spec
        cap = capabilities.get(str(s.body))
        args = templates.render(s.with_, ctx, step=s.id, field="with")
        cctx = self.capability_context(st.id)
        prepared = (
            st.compensation if st.compensation and "prepared_attempt" in st.compensation else None
        )
        if cap.prepare is not None and prepared is None and not s.compensate:
            # (a step that declares `compensate` undoes itself: no automatic snapshot)
            undo_rec = cap.prepare(args, cctx)
            if cap.undo is not None:
                # Durable before the effect: a crash from here on still knows how to undo.
                st.compensation = {
                    "undo": cap.name,
                    "with": undo_rec,
                    "prepared_attempt": st.attempts,
                }
                self.store.record(self.step_record(st))
                crashpoint("capability:prepared")
        st.cap_args = args
        return cap.apply(args, cctx)

    def capability_context(self, step_id: str) -> capabilities.Context:
        undo_dir = self.store.path.with_name(self.store.path.name + ".undo") / self.run_id / step_id
        return capabilities.Context(self.workspace, undo_dir, self.store)

    def _notify(self, st: StepState, gate_id: str, target: Any, row: Mapping[str, Any]) -> None:
        payload = {
            "run_id": self.run_id,
            "workflow": self.spec.name,
            "gate": gate_id,
            "message": row.get("message"),
            "approvers": json.loads(row["approvers"]) if row.get("approvers") else None,
            "deadline": gate.iso_utc(row.get("deadline")),
            "preview": row.get("preview_text"),
            "commands": gate.commands(self.run_id, gate_id),
        }
        error = gate.notify(
            target, payload, lambda name: kinds.resolve_callable(name, self.namespace, step=st.id)
        )
        self.store.record(self.event("notify_failed" if error else "notified", st.id, error=error))

    def _execution_audit(self, st: StepState, decision: str, result: str) -> dict[str, Any]:
        s = st.spec
        args: Any = st.cap_args if s.kind == "capability" else (s.with_ or None)
        undo_ref = (
            f"{self.run_id}/{s.id}/{st.attempts}"
            if st.compensation and decision == "executed"
            else None
        )
        return auditlog.row(
            kind="capability" if s.kind == "capability" else "step",
            principal=self.user,
            run_id=self.run_id,
            step_id=s.id,
            capability=capabilities.policy_name(s.kind, s.body),
            decision=decision,
            risk=capabilities.risk_of(s.kind, s.body, s.risk),
            arguments=args,
            result=result,
            undo_ref=undo_ref,
        )

    def _skip_reason(self, st: StepState, ctx: Mapping[str, Any]) -> str | None:
        for n in st.spec.needs:
            if self.states[n].status == S_SKIPPED:
                return f"upstream '{n}' was skipped"
        when = st.spec.when
        if when is not None and not templates.evaluate_condition(when, ctx, step=st.id):
            return f"when: {when.strip()} is false"
        return None

    def _attempt(self, st: StepState, ctx: Mapping[str, Any]) -> Any:
        s = st.spec
        if s.timeout is None:
            value = self._invoke(st, ctx)
        else:
            value = _with_timeout(lambda: self._invoke(st, ctx), s.timeout)
        if isinstance(value, Exception):
            raise value  # a step that returns an error value fails
        if s.check:
            ok = templates.evaluate_condition(s.check, {**ctx, "result": value}, step=st.id)
            if not ok:
                raise CheckFailed(f"check failed: {s.check.strip()} (result: {_short(value)})")
        return value

    def _invoke(self, st: StepState, ctx: Mapping[str, Any]) -> Any:
        s = st.spec
        if s.kind == "call":
            kwargs = templates.render(s.with_, ctx, step=s.id, field="with")
            assert st.fn is not None
            if (s.executor or self.spec.executor) == "dask":
                key = f"airun-{self.run_id}-{s.id}-{st.attempts}"
                return executor.submit(st.fn, kwargs, key=key)
            return st.fn(**kwargs)
        if s.kind == "python":
            env = dict(self.namespace)
            env.update(ctx)
            env.update(templates.render(s.with_, ctx, step=s.id, field="with"))
            return kinds.run_python(str(s.body), s.id, env)
        if s.kind == "sql":
            refs = _StepRefs(self)
            sql = templates.render(str(s.body), {**ctx, "steps": refs}, step=s.id, field="sql")
            relations = {sid: self.output_of(sid) for sid in refs.used}
            return self._sql.run(str(sql), relations, self.namespace)
        if s.kind == "parallel":
            return None
        if s.kind == "foreach":
            return [self.output_of(child) for child in s.body]
        if s.kind == "capability":
            return self._run_capability(st, ctx)
        raise AirunError(f"step '{s.id}': kind '{s.kind}' cannot run here")

    def _render_compensation(self, st: StepState) -> dict[str, Any] | None:
        """Render ``compensate`` now (it may use the step's own output) to store it."""
        comp = st.spec.compensate
        if not comp:
            return None
        try:
            rendered: dict[str, Any] = templates.render(
                comp, self.context(), step=st.id, field="compensate"
            )
        except AirunError as exc:
            return {"error": f"cannot prepare its compensation: {exc.message}"}
        return rendered

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    # ------------------------------------------------------------------ outputs & context
    def context(self) -> dict[str, Any]:
        ctx: dict[str, Any] = {}
        if self.spec.seed_dialect:
            ctx.update(self.namespace)
            for st in self.states.values():
                if st.status == S_COMPLETED:
                    val = self.output_of(st.id)
                    if isinstance(val, dict):
                        ctx.update(val)
            ctx.update(self.params)
        else:
            ctx.update(self.namespace)
        ctx["params"] = self.params
        ctx["steps"] = _Steps(self)
        ctx["run"] = {"id": self.run_id, "workflow": self.spec.name, "user": self.user}
        return ctx

    def output_of(self, step_id: str) -> Any:
        st = self.states[step_id]
        if st.value is _MISSING:
            if st.status not in DONE_STEP:
                raise TemplateError(f"step '{step_id}' has not finished; add it to 'needs'")
            row = dict(st.out)
            if row.get("output_kind") == "pickle":
                run = self._blob_source.get(step_id, self.run_id)
                blob = self.store.query(
                    "SELECT output_blob FROM steps WHERE run_id = ? AND step_id = ?", [run, step_id]
                )
                row["output_blob"] = blob[0][0] if blob else None
            st.value = outputs.decode(row, self.store)
        return st.value

    def _bind_outputs(self) -> None:
        if not self._bind_output:
            return
        for st in self.states.values():
            if st.spec.output and st.replayed and st.status == S_COMPLETED:
                self.namespace[st.spec.output] = self.output_of(st.id)  # type: ignore[index]

    def _interrupted(self) -> None:
        recs = []
        for st in self.states.values():
            if st.status == S_RUNNING:
                st.status = S_INTERRUPTED
                recs.append(self.step_record(st))
        if self.status == ROLLING_BACK:
            recs.append(self.event("rollback_interrupted"))
            with contextlib.suppress(Exception):
                self.store.record_many(recs)
            return
        self.status = INTERRUPTED
        self.finished_at = time.time()
        recs.append(self._run_record())
        recs.append(self.event("run_interrupted"))
        with contextlib.suppress(Exception):
            self.store.record_many(recs)


class _StepView:
    def __init__(self, engine: Engine, step_id: str) -> None:
        self._engine = engine
        self.id = step_id

    @property
    def output(self) -> Any:
        return self._engine.output_of(self.id)

    @property
    def status(self) -> str:
        return self._engine.states[self.id].status

    def __getattr__(self, name: str) -> Any:
        out = self.output
        if isinstance(out, Mapping) and name in out:
            return out[name]
        raise AttributeError(f"step '{self.id}' has no attribute '{name}' (use .output)")

    def __str__(self) -> str:
        return kinds.sql_relation_name(self.id)


class _Steps:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> _StepView:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self._engine.states:
            raise AttributeError(f"no step '{name}'")
        return _StepView(self._engine, name)

    __getitem__ = __getattr__

    def __contains__(self, name: object) -> bool:
        return name in self._engine.states


class _StepRefs(_Steps):
    """``steps`` inside SQL: ``{{ steps.clean }}`` names the step's output as a relation."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> _StepView:
        view = super().__getattr__(name)
        self.used.add(name)
        return view

    __getitem__ = __getattr__


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while planning allocates its many small objects.

    What planning built lives as long as the run, so it is also frozen (kept out of the
    collector's scans) until the run ends, instead of being rescanned the moment collection
    resumes. :func:`gc_release` unfreezes it.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


def gc_release() -> None:
    gc.unfreeze()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _preview(value: Any) -> tuple[str, str]:
    """Text and HTML forms of a gate's ``show`` value (a DataFrame renders as a table)."""
    import html as _html

    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return value.to_string(max_rows=20, max_cols=12), value.to_html(max_rows=20, max_cols=12)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, indent=2, default=str)
    else:
        text = str(value)
    return text, f"<pre>{_html.escape(text)}</pre>"


def _with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="airun-step-timeout", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise StepTimeout(f"timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (StepTimeout, CheckFailed, kinds.SqlError)):
        return str(exc)
    if isinstance(exc, AirunError):
        return exc.message
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        where = f" (at {os.path.basename(last.filename)}:{last.lineno})"
    return f"{type(exc).__name__}: {msg}{where}" if msg else f"{type(exc).__name__}{where}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import timezone

    return float(value.replace(tzinfo=timezone.utc).timestamp())


def _one(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return rows[0] if rows else None
