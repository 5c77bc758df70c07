"""`airun doctor` sees every unfinished state a killed process or a missing continuation leaves,
and `--repair` finishes what it can: a half-done rollback, a run whose process died, a decided
gate nobody continued; it names what is needed for a run whose code it does not have.

Real processes killed with SIGKILL (a step's own kill, or a crash point), the real `airun`
command, a ledger file outside the store counting every step body and every undo.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import AIRUN
from support import faults as fs

UNDOABLE = """\
name: undoable
on_failure: rollback
steps:
  - id: a
    call: support.faults:step
    with: {name: a}
    compensate: {call: support.faults:undo, with: {name: a}}
  - id: b
    needs: [a]
    call: support.faults:step
    with: {name: b}
    compensate: {call: support.faults:undo, with: {name: b}}
  - id: c
    needs: [b]
    call: support.faults:step
    with: {name: c}
    compensate: {call: support.faults:undo, with: {name: c}}
  - id: fail
    needs: [c]
    call: support.faults:boom
"""

GATED = """\
name: gated
steps:
  - id: a
    call: support.faults:step
    with: {name: a}
  - id: review
    needs: [a]
    approval: {message: go?, allow_self_approval: true}
  - id: b
    needs: [review]
    call: support.faults:step
    with: {name: b}
"""

NOTEBOOK_ONLY = """\
name: notebook
steps:
  - id: a
    call: support.faults:step
    with: {name: a}
  - id: b
    needs: [a]
    call: local_step
"""

RUN = """
import sys
import airun_nb
from support import faults
text = open(sys.argv[2]).read()
ns = {"local_step": lambda: faults.step("b")}
run = airun_nb.Workflow.from_yaml(text).run(db=sys.argv[1], namespace=ns, raise_on_failure=False)
print("RUN", run.run_id, run.status)
"""


def _run(tmp_path: Path, text: str, **extra: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "wf.yaml"
    spec.write_text(text)
    return subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path / "s.duckdb"), str(spec)],
        env=fs.env(tmp_path / "ledger.txt", **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _airun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIRUN, *args, "--db", str(tmp_path / "s.duckdb")],
        env=fs.env(tmp_path / "ledger.txt"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _line(out: str, check: str) -> str:
    found = [x for x in out.splitlines() if x.startswith(check)]
    assert len(found) == 1, out
    return found[0]


def _status(tmp_path: Path, run_id: str) -> str:
    shown = _airun(tmp_path, "show", run_id)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.splitlines()[0].split(" · ")[2]


def _only_run(tmp_path: Path) -> str:
    listed = _airun(tmp_path, "runs")
    ids = [w for w in listed.stdout.split() if w.startswith("r-")]
    assert len(set(ids)) == 1, listed.stdout
    return ids[0]


def test_doctor_finishes_a_rollback_whose_process_died(tmp_path: Path) -> None:
    """Killed after the first undo was recorded: the run is `rolling_back` with a dead owner.
    doctor calls it a problem (exit 1); --repair finishes the rollback, each undo exactly once."""
    killed = _run(tmp_path, UNDOABLE, AIRUN_CRASH_AT="compensate:recorded")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    ledger = tmp_path / "ledger.txt"
    assert fs.ledger(ledger)["undo-c"] == 1 and fs.ledger(ledger)["undo-b"] == 0
    run_id = _only_run(tmp_path)
    assert _status(tmp_path, run_id) == "rolling_back"

    seen = _airun(tmp_path, "doctor")
    assert seen.returncode == 1, seen.stdout
    line = _line(seen.stdout, "rollbacks left by a dead process")
    assert "problem" in line and run_id in line

    fixed = _airun(tmp_path, "doctor", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    line = _line(fixed.stdout, "rollbacks left by a dead process")
    assert "repaired" in line and f"{run_id} rolled_back" in line
    assert _status(tmp_path, run_id) == "rolled_back"
    counts = fs.ledger(ledger)
    assert (counts["undo-a"], counts["undo-b"], counts["undo-c"]) == (1, 1, 1)
    assert (counts["a"], counts["b"], counts["c"]) == (1, 1, 1)
    assert _airun(tmp_path, "doctor").returncode == 0


def test_doctor_resumes_a_run_whose_process_died(tmp_path: Path) -> None:
    """Killed in step c: --repair resumes the run (its code is importable); finished steps
    never run again, c runs a second time, and the run completes."""
    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    assert fs.run(db, ledger, AIRUN_TEST_KILL="c").returncode == -9
    run_id = _only_run(tmp_path)
    seen = _airun(tmp_path, "doctor")
    assert seen.returncode == 1
    assert run_id in _line(seen.stdout, "runs left running by a dead process")
    fixed = _airun(tmp_path, "doctor", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"{run_id} completed" in _line(fixed.stdout, "dead processes' runs resumed")
    assert fs.ledger(ledger) == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}
    assert _status(tmp_path, run_id) == "completed"


def test_doctor_continues_a_decided_gate_nobody_continued(tmp_path: Path) -> None:
    """The run waits at a gate; it is approved from the CLI and nobody resumes it: doctor sees
    a decided gate with no continuation; --repair continues the run to its end."""
    waiting = _run(tmp_path, GATED)
    assert " waiting" in waiting.stdout, waiting.stderr
    run_id = _only_run(tmp_path)
    assert _airun(tmp_path, "approve", run_id, "review").returncode == 0
    seen = _airun(tmp_path, "doctor")
    assert seen.returncode == 1
    line = _line(seen.stdout, "decided gates nobody continued")
    assert "problem" in line and run_id in line
    fixed = _airun(tmp_path, "doctor", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"{run_id} completed" in _line(fixed.stdout, "decided gates nobody continued")
    assert fs.ledger(tmp_path / "ledger.txt") == {"a": 1, "b": 1}


def test_doctor_says_what_a_run_without_its_code_needs(tmp_path: Path) -> None:
    """Killed mid-run, with its remaining step's function defined only in the dead process:
    --repair cannot resume it and says which function it needs and where to resume it; the
    run is no longer left `running`, and nothing ran again."""
    killed = _run(tmp_path, NOTEBOOK_ONLY, AIRUN_TEST_KILL="b")
    assert killed.returncode == -9
    run_id = _only_run(tmp_path)
    fixed = _airun(tmp_path, "doctor", "--repair")
    line = _line(fixed.stdout, "dead processes' runs resumed")
    assert "problem" in line and run_id in line and "local_step" in line
    assert "%workflow resume" in line
    assert fixed.returncode == 1
    assert _status(tmp_path, run_id) != "running"
    assert fs.ledger(tmp_path / "ledger.txt") == {"a": 1, "b": 1}
