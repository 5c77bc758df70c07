"""The agent's tools: every operation of ``airun mcp``, governed, bounded and on the record.

The server acts as one principal, fixed when it starts; no argument changes it. Before a run
starts, every step's capability (and every compensation's) is put to the policy for that
principal: a denied one refuses the whole run, so nothing executes. Runs launched here are marked
with source ``mcp``; they execute in this process and wait at their gates like a notebook's, and
:mod:`~airun_nb.mcp.continuation` continues them once a person has decided. Each action writes an
audit row of kind ``mcp`` whose arguments name the channel ``mcp``; a refused action writes one
too, and raises :class:`Refused` whose one line says what, why and which rule.
"""

from __future__ import annotations

import ast
import inspect
import tempfile
import textwrap
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airun_nb import capabilities
from airun_nb.engine.runner import Runner
from airun_nb.errors import AirunError, RunNotFound
from airun_nb.gates import gate
from airun_nb.governance import audit as auditlog
from airun_nb.governance import policy as policy_mod
from airun_nb.history import readmodels
from airun_nb.history.relation import bounded_query
from airun_nb.mcp.limits import MAX_WAIT_SECONDS, Limits, RunRate, clip, fit
from airun_nb.settings.environment import StoreURL
from airun_nb.spec import dialect
from airun_nb.spec.parser import WorkflowSpec
from airun_nb.store import launches, transitions
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store

SOURCE = "mcp"  # runs.source of the runs this server launched, and the audit rows' channel
UNFINISHED = ("pending", "running", "waiting", "rolling_back")
OWN_RUNS = "own runs only"  # the server's rule: an agent undoes or cancels only its own runs
_COMP_KIND = (("capability", "capability"), ("call", "call"), ("python", "python"), ("sql", "sql"))


class Refused(AirunError):
    """An action the policy (or the server's limits) refused: one line, what, why, which rule."""


class Tools:
    """The operations behind the MCP tools, for one store and one principal."""

    def __init__(self, db: Path | StoreURL, principal: str, limits: Limits | None = None) -> None:
        self.db = db
        self.principal = principal
        self.limits = limits or Limits()
        self.rate = RunRate(self.limits.runs_per_minute)
        self.changed = threading.Condition()  # notified when a run executing here stops
        self.on_waiting: Any = None  # set by the continuation: called with a run that waits
        self._threads: dict[str, threading.Thread] = {}

    @property
    def store(self) -> Backend:
        return open_store(self.db)

    @property
    def reader(self) -> Backend:
        """The store for reading: reads never create it."""
        return open_store(self.db, create=False)

    # -- record ----------------------------------------------------------------------------
    def audit(
        self,
        tool: str,
        decision: str,
        *,
        run_id: str | None = None,
        rule: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        result: str | None = None,
    ) -> None:
        transitions.commit(
            self.store,
            [
                auditlog.row(
                    kind="mcp",
                    principal=self.principal,
                    run_id=run_id,
                    step_id=None,
                    capability=f"mcp.{tool}",
                    decision=decision,
                    arguments={"channel": SOURCE, **(arguments or {})},
                    result=result,
                    rule=rule,
                )
            ],
        )

    def refuse(
        self,
        tool: str,
        why: str,
        rule: str | None,
        *,
        run_id: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> Refused:
        """Record a refusal and return the error to raise."""
        line = f"{tool} refused: {why}" + (f" (rule '{rule}')" if rule else "")
        self.audit(tool, "refused", run_id=run_id, rule=rule, arguments=arguments, result=why)
        return Refused(line)

    # -- capabilities ------------------------------------------------------------------------
    def list_capabilities(self) -> dict[str, Any]:
        pol = policy_mod.current()
        out = []
        for name, cap in sorted(capabilities.registry._REGISTRY.items()):
            verdict = pol.evaluate(self.principal, name, cap.risk)
            out.append(
                {
                    "name": name,
                    "risk": cap.risk,
                    "description": cap.description or None,
                    "parameters": _parameters(cap),
                    "undo": "undone by its own undo on rollback"
                    if cap.reversible
                    else "not undone unless the step declares compensate:",
                    "policy": _verdict(verdict),
                }
            )
        kinds = [
            {
                "name": policy_name,
                "step": f"{kind}:",
                "risk": capabilities.KIND_RISK.get(policy_name, "medium"),
                "undo": "not undone unless the step declares compensate:",
                "policy": _verdict(
                    pol.evaluate(
                        self.principal,
                        policy_name,
                        capabilities.KIND_RISK.get(policy_name, "medium"),
                    )
                ),
            }
            for kind, policy_name in capabilities.KIND_CAPABILITY.items()
        ]
        return {"principal": self.principal, "capabilities": out, "step_kinds": kinds}

    # -- validate ----------------------------------------------------------------------------
    def validate_workflow(self, text: str) -> dict[str, Any]:
        from airun_nb.spec.validation import problems  # the checks of `airun validate`

        self._check_size("validate_workflow", text)
        with tempfile.TemporaryDirectory(prefix="airun-mcp-") as folder:
            path = Path(folder) / "workflow.yaml"
            path.write_text(text)
            kind, found = problems(path)
        found = [p.replace(str(path), "workflow") for p in found]
        errors = [p for p in found if not p.startswith(("warning:", "note:"))]
        warnings = [p for p in found if p.startswith(("warning:", "note:"))]
        out: dict[str, Any] = {"kind": kind, "ok": not errors, "errors": errors}
        out["warnings"] = warnings
        if kind == "workflow" and not errors:
            spec = _parse(text)
            out["name"] = spec.name
            out["steps"] = [s.id for s in spec.steps]
            out["policy"] = [
                {"step": step, "capability": v.capability, **_verdict(v)}
                for step, v in self._verdicts(spec)
            ]
        return fit(out, self.limits.max_result_chars)

    def _check_size(self, tool: str, text: str) -> None:
        if len(text) > self.limits.max_workflow_chars:
            raise Refused(
                f"{tool} refused: the workflow is {len(text)} characters; at most "
                f"{self.limits.max_workflow_chars}"
            )

    def _verdicts(self, spec: WorkflowSpec) -> list[tuple[str, policy_mod.Verdict]]:
        """The policy's verdict for this principal on every step and compensation of ``spec``."""
        pol = policy_mod.current().tightened(spec.policy)
        out = []
        for s in spec.steps:
            if s.kind in ("parallel", "foreach"):
                continue
            actions = [(s.id, s.kind, s.body, s.risk)]
            for key, kind in _COMP_KIND:
                if isinstance(s.compensate, Mapping) and key in s.compensate:
                    actions.append((f"{s.id} (compensate)", kind, s.compensate[key], None))
            for where, kind, body, declared in actions:
                cap = capabilities.policy_name(kind, body)
                risk = capabilities.risk_of(kind, body, declared)
                verdict = pol.evaluate(self.principal, cap, risk)
                for other in dialect.principals(spec.metadata, s.agent):  # tighten only
                    seen = pol.evaluate(other, cap, risk)
                    if _strictness(seen) > _strictness(verdict):
                        verdict = seen
                out.append((where, verdict))
        return out

    # -- run ---------------------------------------------------------------------------------
    def run_workflow(
        self, text: str, params: Mapping[str, Any] | None, wait_s: float
    ) -> dict[str, Any]:
        self._check_size("run_workflow", text)
        spec = _parse(text)
        args = {"workflow": spec.name, "params": dict(params or {})}
        for where, verdict in self._verdicts(spec):
            if verdict.decision == "deny":
                raise self.refuse(
                    "run_workflow",
                    f"step '{where}' uses {verdict.capability} (risk {verdict.risk}), which the "
                    f"policy denies to {verdict.principal}; nothing was run",
                    verdict.rule or "the policy default",
                    arguments=args,
                )
        if not self.rate.take():
            raise self.refuse(
                "run_workflow",
                f"{self.limits.runs_per_minute} runs were started in the last minute, this "
                "server's limit; try again later",
                "mcp.runs_per_minute",
                arguments=args,
            )
        runner = Runner(spec, self.store, params=params, user=self.principal, source=SOURCE)
        runner.prepare(new=True)
        self.audit("run_workflow", "started", run_id=runner.run_id, arguments=args)
        self._execute(runner)
        return self._settled(runner.run_id, wait_s)

    def continue_run(self, run_id: str) -> None:
        """Continue a run launched here whose gates a person decided (in a thread)."""
        from airun_nb.workflow import Workflow

        wf = Workflow.from_run(run_id, db=self.db)
        runner = Runner(wf.spec, self.store, user=self.principal, source=SOURCE)
        runner.prepare(resume=run_id)
        self.audit("continue", "continued", run_id=run_id, result="a person decided its gate")
        self._execute(runner)

    def _execute(self, runner: Runner) -> None:
        def work() -> None:
            try:
                runner.execute()
            except AirunError:
                pass  # the run's failure is recorded in the store; get_run shows it
            finally:
                with self.changed:
                    self._threads.pop(runner.run_id, None)
                    self.changed.notify_all()
                if runner.status == "waiting" and self.on_waiting is not None:
                    self.on_waiting(runner.run_id)

        thread = threading.Thread(target=work, name=f"airun-mcp-{runner.run_id}", daemon=True)
        with self.changed:
            self._threads[runner.run_id] = thread
        thread.start()

    def _settled(self, run_id: str, wait_s: float) -> dict[str, Any]:
        """Wait (bounded) until the run stops executing here, or leaves running/waiting."""
        deadline = time.monotonic() + max(0.0, min(float(wait_s), MAX_WAIT_SECONDS))
        while True:
            with self.changed:
                executing = run_id in self._threads
            status = launches.status(self.reader, run_id)
            if status is None and not executing:
                raise RunNotFound(f"no run '{run_id}' in {self.db}")
            # (None while executing: the thread has not written the run's first row yet)
            if not executing and status not in ("pending", "running", "rolling_back"):
                break  # finished, or waiting for a person: the agent hears at once
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self.changed:
                self.changed.wait(min(left, 0.5))
        return self.get_run(run_id, brief=True)

    def wait_for_run(self, run_id: str, timeout_s: float) -> dict[str, Any]:
        if launches.status(self.reader, run_id) is None:
            raise RunNotFound(f"no run '{run_id}' in {self.db}")
        deadline = time.monotonic() + max(0.0, min(float(timeout_s), MAX_WAIT_SECONDS))
        while True:
            status = launches.status(self.reader, run_id)
            if status not in UNFINISHED:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self.changed:
                self.changed.wait(min(left, 0.5))
        out = self.get_run(run_id, brief=True)
        out["timed_out"] = out["status"] in UNFINISHED
        return out

    # -- read --------------------------------------------------------------------------------
    def get_run(self, run_id: str, *, brief: bool = False) -> dict[str, Any]:
        store = self.reader
        detail = readmodels.run_detail(store, run_id)
        stored = launches.outputs(store, run_id)
        n = self.limits.preview_chars
        out: dict[str, Any] = {
            "run_id": detail["run_id"],
            "workflow": detail["workflow"],
            "status": detail["status"],
            "launched_by": detail["launched_by"],
            "created_at": detail["created_at"],
            "finished_at": detail["finished_at"],
            "failed_step": detail["failed_step"],
            "error": clip(auditlog.redact_text(detail["error"]), n) if detail["error"] else None,
        }
        if not brief:
            out["params"] = auditlog.redact_json(detail["params"]) if detail["params"] else None
        out["steps"] = [
            {
                "step_id": s["step_id"],
                "kind": s["kind"],
                "status": s["status"],
                "attempts": s["attempts"],
                "reason": clip(auditlog.redact_text(s["reason"]), n) if s["reason"] else None,
                "error": clip(auditlog.redact_text(s["error"]), n) if s["error"] else None,
                **({} if brief else {"output": _preview(stored.get(s["step_id"]), n)}),
            }
            for s in detail["steps"]
        ]
        out["open_gates"] = [_gate(g, n, store) for g in detail["gates"] if g["status"] == "open"]
        if not brief:
            out["decided_gates"] = [
                {k: g[k] for k in ("gate_id", "status", "actor", "channel", "decided_at")}
                for g in detail["gates"]
                if g["status"] != "open"
            ]
        if out["open_gates"]:
            out["note"] = (
                "waiting for a person to decide; this server continues the run when they have"
                if launches.launcher(store, run_id) == (self.principal, SOURCE)
                else "waiting for a person to decide"
            )
        return fit(out, self.limits.max_result_chars)

    def list_runs(self, workflow: str | None, status: str | None, limit: int) -> dict[str, Any]:
        if not _exists(self.db):
            return {"runs": []}
        rows = readmodels.runs(
            self.reader, workflow=workflow, status=status, limit=max(1, min(int(limit), 100))
        )
        for r in rows:
            if r.get("error"):
                r["error"] = clip(auditlog.redact_text(str(r["error"])), self.limits.preview_chars)
        return fit({"runs": rows}, self.limits.max_result_chars)

    def list_approvals(self) -> dict[str, Any]:
        if not _exists(self.db):
            return {"open_gates": []}
        store = self.reader
        gates = readmodels.open_gates(store)
        return fit(
            {"open_gates": [_gate(g, self.limits.preview_chars, store) for g in gates]},
            self.limits.max_result_chars,
        )

    def query_history(self, sql: str) -> dict[str, Any]:
        args = {"sql": clip(sql, 2000)}
        try:
            columns, rows, more = bounded_query(
                sql,
                db=self.db,
                max_rows=self.limits.max_rows,
                seconds=self.limits.query_seconds,
            )
        except AirunError as exc:
            if _exists(self.db):
                self.audit("query_history", "failed", arguments=args, result=exc.message)
            raise
        self.audit("query_history", "answered", arguments=args, result=f"{len(rows)} rows")
        out: dict[str, Any] = {
            "columns": columns,
            "rows": [[_cell(v, self.limits.preview_chars) for v in r] for r in rows],
        }
        if more:
            out["truncated"] = f"first {self.limits.max_rows} rows; narrow the query"
        return fit(out, self.limits.max_result_chars)

    # -- undo, cancel ------------------------------------------------------------------------
    def _own_run(self, tool: str, run_id: str) -> None:
        found = launches.launcher(self.reader, run_id)
        if found is None:
            raise RunNotFound(f"no run '{run_id}' in {self.db}")
        if found[0] != self.principal:
            raise self.refuse(
                tool,
                f"run {run_id} was launched by {found[0]}, not {self.principal}; an agent acts "
                "only on the runs it launched",
                OWN_RUNS,
                run_id=run_id,
            )

    def _allowed(self, tool: str, action: str, run_id: str, by_hand: str) -> None:
        risk = policy_mod.RUN_ACTIONS[action]
        verdict = policy_mod.current().evaluate(self.principal, action, risk)
        if verdict.decision == "deny":
            raise self.refuse(
                tool,
                f"the policy denies {action} (risk {risk}) to {self.principal}",
                verdict.rule or "the policy default",
                run_id=run_id,
            )
        if verdict.decision == "require_approval":
            raise self.refuse(
                tool,
                f"{action} (risk {risk}) needs a person for {self.principal}; ask one to run "
                f"`{by_hand}`",
                verdict.rule or "the policy default",
                run_id=run_id,
            )

    def rollback_run(self, run_id: str, wait_s: float) -> dict[str, Any]:
        from airun_nb.workflow import Workflow

        self._own_run("rollback_run", run_id)
        self._allowed("rollback_run", "run.rollback", run_id, f"airun rollback {run_id}")
        wf = Workflow.from_run(run_id, db=self.db)
        for where, verdict in self._verdicts(wf.spec):
            if verdict.decision == "deny" and "(compensate)" in where:
                raise self.refuse(
                    "rollback_run",
                    f"step '{where}' uses {verdict.capability}, which the policy denies to "
                    f"{verdict.principal}; nothing was undone",
                    verdict.rule or "the policy default",
                    run_id=run_id,
                )
        runner = Runner(wf.spec, self.store, user=self.principal, source=SOURCE)
        runner.prepare_rollback(run_id)
        self.audit("rollback_run", "started", run_id=run_id)
        self._execute(runner)
        return self._settled(run_id, wait_s)

    def cancel_run(self, run_id: str, comment: str | None) -> dict[str, Any]:
        from airun_nb.engine.cancel import cancel

        self._own_run("cancel_run", run_id)
        self._allowed("cancel_run", "run.cancel", run_id, f"airun cancel {run_id}")
        done = cancel(
            run_id,
            by=self.principal,
            authenticated=True,  # the server's principal is its owner's setting
            channel=SOURCE,
            comment=comment,
            db=self.db,
        )
        self.audit("cancel_run", "cancelled", run_id=run_id, arguments={"comment": comment})
        return done


# -- helpers -------------------------------------------------------------------------------------
def _parse(text: str) -> WorkflowSpec:
    import warnings

    from airun_nb.workflow import Workflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what validate_workflow reports as warnings
        return Workflow.from_yaml(text).spec


def _strictness(v: policy_mod.Verdict) -> int:
    return policy_mod.DECISIONS.index(v.decision)


def _verdict(v: policy_mod.Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {"decision": v.decision, "rule": v.rule}
    if v.approvers:
        out["approvers"] = v.approvers
    return out


def _gate(g: Mapping[str, Any], n: int, store: Backend) -> dict[str, Any]:
    """An open gate as an agent sees it: what it asks, who may decide, how a person does."""
    approvers = g.get("approvers_shown") or ["anyone"]
    row = gate.gate_row(store, str(g["run_id"]), str(g["gate_id"])) or {}
    if g.get("launched_by") and gate.four_eyes(row) and not row.get("allow_self_approval"):
        approvers = [*approvers, f"(not {g['launched_by']}, who launched the run)"]
    preview = g.get("preview_text")
    return {
        "run_id": g["run_id"],
        "gate_id": g["gate_id"],
        "workflow": g.get("workflow"),
        "message": clip(str(g.get("message") or ""), n),
        "preview": clip(str(preview), n) if preview else None,
        "who_may_decide": approvers,
        "deadline": g.get("deadline"),
        "a_person_decides_with": g.get("commands"),
    }


def _preview(row: Mapping[str, Any] | None, n: int) -> Any:
    """A step's output, bounded and redacted; tables and Python objects are described only."""
    if not row or row.get("output_kind") in (None, "none"):
        return None
    kind = row["output_kind"]
    if kind == "json":
        text = auditlog.redact_json(str(row["output_json"]))
        return clip(text, n)
    if kind in ("pandas", "arrow"):
        return f"a table (stored as {row.get('output_table')}; not shown here)"
    return f"a Python object ({kind}; not shown here)"


def _cell(value: Any, n: int) -> Any:
    if isinstance(value, str):
        return clip(auditlog.redact_text(value), n)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or timezone.utc).isoformat()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clip(auditlog.redact_text(str(value)), n)


def _parameters(cap: capabilities.Capability) -> list[str] | None:
    """The ``with:`` keys a capability reads: its function's parameters, or the keys its
    ``apply``/``prepare`` look up."""
    closure = inspect.getclosurevars(cap.apply).nonlocals if cap.apply.__closure__ else {}
    user_fn = closure.get("user_fn")
    if callable(user_fn):
        try:
            return [p for p in inspect.signature(user_fn).parameters if p not in ("self",)]
        except (TypeError, ValueError):
            return None
    names: list[str] = []
    for fn in (cap.prepare, cap.apply):
        if fn is None:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            key = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "args"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                key = node.args[0].value
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id == "args"
                and isinstance(node.slice, ast.Constant)
            ):
                key = node.slice.value
            if isinstance(key, str) and key not in names:
                names.append(key)
    return names or None


def _exists(db: Path | StoreURL) -> bool:
    """Is there a store at ``db`` (a server store: it is opened to be asked)?"""
    return isinstance(db, StoreURL) or db.exists()
