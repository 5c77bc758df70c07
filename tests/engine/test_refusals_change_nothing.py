"""A refused action changes nothing: the cases where state used to change in more than one place.

Every case drives the real product (a DuckDB store in tmp_path, the real gate widget with its
buttons clicked, the real ``airun`` command in a subprocess) and compares the store's rows
before and after the refusal.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airun_nb import Workflow
from airun_nb.engine.state import StepState
from airun_nb.history.steptable import _attempt_of
from airun_nb.spec.parser import parse
from airun_nb.store.database import Store
from support import AIRUN

GATED = """
name: gated
steps:
  - id: prep
    call: prep
  - id: review
    needs: [prep]
    approval: {message: "Ship?", approvers: [bob]}
  - id: ship
    needs: [review]
    call: ship
"""


def prep() -> int:
    return 1


def ship() -> str:
    Path("shipped.txt").write_text("shipped")
    return "shipped"


def _rows(db: Path, run_id: str) -> dict[str, Any]:
    """Every row of the run that a person would see change (updated_at aside)."""
    store = Store.open(db)
    run = store.run_row(run_id)
    assert run is not None
    steps = store.step_rows(run_id)
    gates = store.open_gates(run_id)
    store.release()
    drop = {"updated_at"}
    return {
        "run": {k: v for k, v in run.items() if k not in drop},
        "steps": [{k: v for k, v in s.items() if k not in drop} for s in steps],
        "gates": gates,
    }


def test_a_refused_click_on_approve_leaves_the_run_waiting_and_decidable(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher clicks Approve on a gate only bob may decide: refused, and the run is still
    waiting (not running, not owned by the kernel), so bob's decision from a terminal
    continues it and a cancel is not refused as 'executing in another process'."""
    from airun_nb.gates import gate
    from airun_nb.jupyter.widgets import GateWidget

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIRUN_USER", "alice")
    ns = {"prep": prep, "ship": ship}
    first = Workflow.from_yaml(GATED).run(db=db, namespace=ns)
    assert first.status == "waiting"
    before = _rows(db, first.run_id)
    row = gate.gate_row(Store.open(db), first.run_id, "review")
    widget = GateWidget(row, db, ns)
    widget.approve_button.click()

    assert "Refused" in widget.status.value and "alice" in widget.status.value
    assert _rows(db, first.run_id) == before  # nothing changed: not running, no new owner
    assert not widget.approve_button.disabled  # bob could still click here

    done = subprocess.run(
        [*AIRUN, "approve", first.run_id, "review", "--by", "bob", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "AIRUN_USER": "bob"},
    )
    assert done.returncode == 0, done.stderr
    assert "executing in another process" not in done.stdout + done.stderr
    resumed = Workflow.from_yaml(GATED).run(db=db, namespace=ns, resume=first.run_id)
    assert resumed.status == "completed"
    assert (tmp_path / "shipped.txt").read_text() == "shipped"


def test_a_resume_refused_for_a_missing_function_leaves_the_waiting_run_as_it_was(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`airun resume` without the notebook's functions is refused in one line; the run stays
    waiting with its gate open (it used to turn failed while its gate still took decisions)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIRUN_USER", "alice")
    first = Workflow.from_yaml(GATED).run(db=db, namespace={"prep": prep, "ship": ship})
    before = _rows(db, first.run_id)
    done = subprocess.run(
        [*AIRUN, "resume", first.run_id, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "ship" in done.stderr  # names what is missing
    assert _rows(db, first.run_id) == before
    assert before["run"]["status"] == "waiting" and before["gates"]


def test_resuming_a_rolled_back_run_says_it_is_rolled_back(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that was rolled back has nothing to resume: one line saying so, nothing
    written, and no 'executing in another process' (RunBusy) about a run nobody runs."""
    from airun_nb import RunBusy, RunEnded, rollback

    monkeypatch.chdir(tmp_path)
    ns = {"prep": prep, "ship": ship}
    first = Workflow.from_yaml(GATED).run(db=db, namespace=ns)
    rollback(first.run_id, db=db, namespace=ns)
    before = _rows(db, first.run_id)
    assert before["run"]["status"] == "rolled_back"
    with pytest.raises(RunEnded) as caught:
        Workflow.from_yaml(GATED).run(db=db, namespace=ns, resume=first.run_id)
    assert not isinstance(caught.value, RunBusy)
    assert "rolled back" in caught.value.message
    assert "\n" not in caught.value.message
    assert _rows(db, first.run_id) == before


def test_a_resumed_step_is_not_shown_as_attempt_2_of_1() -> None:
    """The live table of a step that ran once before a resume and runs again after it."""
    spec = parse("name: w\nsteps:\n  - id: a\n    python: 'result = 1'\n")
    st = StepState(spec.steps[0], status="running", attempts=2)
    assert _attempt_of(st) == "attempt 2 (resumed)"
    st.attempts = 1
    assert _attempt_of(st) == "attempt 1 of 1"


def test_a_decision_taken_by_the_notebooks_own_code_is_continued_by_the_next_cell(
    ipython: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """governance.ipynb, cell by cell by hand: the run waits at a gate (its widget is shown),
    the next cell approves it with `airun_nb.approve`, the cell after it runs the workflow
    again. The gate widget must not continue the run behind the cell's back (which made the
    cell fail with RunBusy naming the notebook's own kernel); the cell continues it."""
    import airun_nb
    from airun_nb.gates import gate
    from airun_nb.jupyter.widgets import GateWidget

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIRUN_USER", "alice")
    ipython.user_ns.update(prep=prep, ship=ship)
    ipython.run_cell_magic("workflow", "", GATED)
    waiting = airun_nb.last_run()
    assert waiting is not None and waiting.status == "waiting"
    row = gate.gate_row(Store.open(db), waiting.run_id, "review")
    widget = GateWidget(row, db, ipython.user_ns)  # the widget the cell displayed
    airun_nb.approve(waiting.run_id, "review", by="bob")
    decided = gate.gate_row(Store.open(db), waiting.run_id, "review")
    widget.decided_elsewhere(decided)  # what the kernel's watcher does when it sees it
    assert "run the workflow's cell again" in widget.status.value
    assert Store.open(db).run_row(waiting.run_id)["status"] == "waiting"  # type: ignore[index]
    ipython.run_cell_magic("workflow", "", GATED)
    done = airun_nb.last_run()
    assert done is not None and done.run_id == waiting.run_id and done.status == "completed"
