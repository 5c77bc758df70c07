"""One writer of state, proved by random sequences of what people and crashes do to runs.

A Hypothesis state machine drives real runs on a real DuckDB store: start a run, inject a
step failure, approve, a refused approve (someone who is not an approver), reject, cancel,
resume, a refused resume (the notebook function it needs is missing), roll back, and SIGKILL a
real process in the middle of a step. After every action it checks what a user relies on:

* no run is ``running`` or ``rolling_back`` with a live owner once every action has returned
  (nobody is executing it, so nobody may hold it), and one left by a killed process has a dead
  owner that a resume takes over;
* every change of a run's status is a path through the transition tables;
* a refused action leaves every row of the store as it was;
* no step body ran twice in one run (every body writes a line to a ledger file outside the
  store, from whichever process runs it), and no compensation ran twice.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections import Counter, deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from airun_nb import AirunError, Workflow
from airun_nb.engine.cancel import cancel
from airun_nb.gates import gate
from airun_nb.store.database import Store
from airun_nb.store.owner import owner_alive
from airun_nb.store.transitions import RUN_TRANSITIONS
from airun_nb.workflow import rollback

TESTS = Path(__file__).resolve().parents[1]

WORKFLOW = """
name: sm
on_failure: stop
steps:
  - id: load
    call: support.bodies:load
    with: {run: "{{ run.id }}"}
    compensate: {call: "support.bodies:unload", with: {run: "{{ run.id }}"}}
  - id: review
    needs: [load]
    approval: {message: "Go?", approvers: [bob]}
  - id: publish
    needs: [review]
    call: support.bodies:publish
    with: {run: "{{ run.id }}"}
  - id: finish
    needs: [publish]
    call: finish
"""

# A process that resumes a run and SIGKILLs itself as a step starts (a crash mid-step).
_KILLED = textwrap.dedent(
    """
    import sys
    from airun_nb import Workflow
    def finish():
        return "finished"
    Workflow.from_yaml(sys.argv[1]).run(
        db=sys.argv[2], resume=sys.argv[3], namespace={"finish": finish},
        raise_on_failure=False,
    )
    """
)


def finish() -> str:
    return "finished"


def _reachable(old: str, new: str) -> bool:
    seen, todo = {old}, deque([old])
    while todo:
        cur = todo.popleft()
        if cur == new:
            return True
        for nxt in RUN_TRANSITIONS.get(cur, set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


class Runs(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        # One store for every sequence (each sequence checks only its own runs), so the machine
        # keeps one store handle instead of one per sequence.
        self.dir = Path(os.environ["SM_TMP"])
        self.db = self.dir / "s.duckdb"
        self.bodies = self.dir / "bodies.log"
        os.environ["AIRUN_TEST_BODIES"] = str(self.bodies)
        self.seen: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        store = Store.open(self.db)
        out: dict[str, Any] = {}
        for run_id in self.seen:
            row = store.run_row(run_id) or {}
            out[run_id] = (
                {k: v for k, v in row.items() if k != "updated_at"},
                [
                    {k: v for k, v in s.items() if k != "updated_at"}
                    for s in store.step_rows(run_id)
                ],
                store.gate_row(run_id, "review"),
            )
        store.release()
        return out

    def _status(self, run_id: str) -> str:
        row = Store.open(self.db).run_row(run_id)
        assert row is not None
        return str(row["status"])

    def _refused(self, action: Any) -> None:
        before = self._snapshot()
        with pytest.raises(AirunError):
            action()
        assert self._snapshot() == before, "a refused action changed the store"

    def _continue(self, run_id: str) -> None:
        # A refusal (the run ended, or was cancelled) is fine: the invariants say whether the
        # store is still right.
        with contextlib.suppress(AirunError):
            Workflow.from_yaml(WORKFLOW).run(
                db=self.db, resume=run_id, namespace={"finish": finish}, raise_on_failure=False
            )

    # -- what people and crashes do ------------------------------------------------------------
    @rule(target=runs)
    def start(self) -> str:
        result = Workflow.from_yaml(WORKFLOW).run(
            db=self.db, namespace={"finish": finish}, new=True, raise_on_failure=False
        )
        self.seen[result.run_id] = result.status
        return result.run_id

    @rule(step=st.sampled_from(["load", "publish", ""]))
    def inject_failure(self, step: str) -> None:
        Path(str(self.bodies) + ".fail").write_text(step)

    @rule(run_id=runs, verdict=st.sampled_from(["approve", "reject"]))
    def decide_and_continue(self, run_id: str, verdict: str) -> None:
        row = gate.gate_row(Store.open(self.db), run_id, "review")
        if row is None or row["status"] != "open":
            return
        decide = gate.approve if verdict == "approve" else gate.reject
        decide(run_id, "review", by="bob", db=self.db)
        self._continue(run_id)

    @rule(run_id=runs)
    def refused_approve(self, run_id: str) -> None:
        row = gate.gate_row(Store.open(self.db), run_id, "review")
        if row is None or row["status"] != "open":
            return
        self._refused(lambda: gate.approve(run_id, "review", by="carol", db=self.db))

    @rule(run_id=runs)
    def resume(self, run_id: str) -> None:
        self._continue(run_id)

    @rule(run_id=runs)
    def refused_resume(self, run_id: str) -> None:
        status = self._status(run_id)
        before = self._snapshot()
        try:
            Workflow.from_yaml(WORKFLOW).run(db=self.db, resume=run_id, namespace={})
        except AirunError:
            assert self._snapshot() == before, "a refused resume changed the store"
        else:  # only a run with nothing left to run may resume without the notebook function
            assert status not in ("waiting", "failed", "interrupted", "running"), status

    @rule(run_id=runs, undo=st.booleans())
    def cancel_run(self, run_id: str, undo: bool) -> None:
        before = self._snapshot()
        try:
            cancel(run_id, rollback=undo, by="alice", db=self.db)
        except AirunError:
            if self._status(run_id) not in ("rolling_back", "rollback_failed"):
                assert self._snapshot() == before, "a refused cancel changed the store"

    @rule(run_id=runs)
    def roll_back(self, run_id: str) -> None:
        before = self._snapshot()
        try:
            rollback(run_id, db=self.db)
        except AirunError:
            if self._status(run_id) not in ("rolling_back", "rollback_failed"):
                assert self._snapshot() == before, "a refused rollback changed the store"

    @rule(run_id=runs)
    def sigkill_mid_step(self, run_id: str) -> None:
        if self._status(run_id) not in ("waiting", "failed", "interrupted", "running"):
            return
        env = {
            **os.environ,
            "AIRUN_CRASH_AT": "step:started",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        done = subprocess.run(
            [sys.executable, "-c", _KILLED, WORKFLOW, str(self.db), run_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode in (0, -9), done.stderr  # finished, or killed mid-step

    # -- what must always hold -----------------------------------------------------------------
    @invariant()
    def statuses_follow_the_tables(self) -> None:
        for run_id, old in list(self.seen.items()):
            new = self._status(run_id)
            assert _reachable(old, new), f"run {run_id}: {old} -> {new} is not in the tables"
            self.seen[run_id] = new

    @invariant()
    def nobody_holds_a_run_nobody_executes(self) -> None:
        store = Store.open(self.db)
        for run_id in self.seen:
            row = store.run_row(run_id)
            assert row is not None
            if row["status"] in ("running", "rolling_back"):
                assert not owner_alive(row), f"run {run_id} is {row['status']} with a live owner"

    @invariant()
    def no_body_ran_twice(self) -> None:
        if not self.bodies.exists():
            return
        lines = [line.split()[:2] for line in self.bodies.read_text().splitlines() if line]
        twice = [k for k, n in Counter(map(tuple, lines)).items() if n > 1]
        assert twice == [], f"ran twice: {twice}"

    def teardown(self) -> None:
        Path(str(self.bodies) + ".fail").unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a safety net for a busy machine; a sequence takes seconds
def test_random_sequences_of_actions_keep_the_store_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SM_TMP", str(tmp_path))
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.syspath_prepend(str(TESTS))
    Runs.TestCase.settings = settings(
        max_examples=8,
        stateful_step_count=10,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )
    Runs.TestCase().runTest()
