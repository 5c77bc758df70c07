"""A gate decided from the command line between two kernels.

Kernel 1 runs the notebook: the workflow stops at its gate (the run is ``waiting``) and the cell
shows the gate. The kernel is shut down. ``airun approve|reject`` decides in a subprocess. Kernel
2, a fresh one, runs the notebook again: the ``%%workflow`` cell resumes the run from the store,
the step before the gate is not executed again and the step after it runs exactly once.
Real kernels (nbclient), a real DuckDB file, side effects counted in files.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import airun_nb
from support import AIRUN
from support.notebooks import python_notebook

FUNCTIONS = """
from pathlib import Path

def _count(name):
    with open(name, "a") as fh:
        fh.write("1\\n")

def prepare():
    _count("prepare.count")
    return {"rows": 3}

def unprepare():
    _count("unprepare.count")

def ship(decision):
    _count("ship.count")
    return {"approved_by": decision["actor"], "channel": decision["channel"]}
"""

WORKFLOW = """%%workflow release
steps:
  - id: prepare
    call: prepare
    compensate: {call: unprepare}
  - id: review
    needs: [prepare]
    approval:
      message: "Release {{ steps.prepare.output.rows }} rows?"
      approvers: [bob]
  - id: ship
    needs: [review]
    call: ship
    with: {decision: "{{ steps.review.output }}"}
    output: shipped
"""

REPORT = """import airun_nb
_r = airun_nb.last_run()
print("RUN", _r.run_id, _r.status)
print("SHIPPED", globals().get("shipped"))
"""


def notebook() -> nbformat.NotebookNode:
    nb = python_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext airun_nb"),
        nbformat.v4.new_code_cell(FUNCTIONS),
        nbformat.v4.new_code_cell(WORKFLOW),
        nbformat.v4.new_code_cell(REPORT),
    ]
    return nb


def kernel_env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(AIRUN_DB=str(db), AIRUN_USER="alice")
    return env


def run_in_fresh_kernel(
    folder: Path, db: Path, *, allow_errors: bool = False
) -> nbformat.NotebookNode:
    """Execute the notebook in a new kernel, which is shut down when this returns."""
    nb = notebook()
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute(env=kernel_env(db))
    assert client.km is None or not client.km.has_kernel  # the kernel is gone
    return nb


def text_of(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("display_data", "execute_result"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "\n".join(parts)


def count(folder: Path, name: str) -> int:
    p = folder / f"{name}.count"
    return len(p.read_text().split()) if p.exists() else 0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIRUN, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG", "AIRUN_USER"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def gate_views(cell: Any) -> list[Any]:
    """The cell's gate widgets (the run's table above them is a widget too, once it waits)."""
    return [
        o
        for o in cell.outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        and o["data"].get("text/plain", "").startswith("Approval needed")
    ]


def first_kernel_stops_at_the_gate(folder: Path, db: Path) -> tuple[str, nbformat.NotebookNode]:
    nb = run_in_fresh_kernel(folder, db)
    report = text_of(nb.cells[3])
    assert "RUN " in report and report.split()[2] == "waiting", report
    run_id = report.split()[1]
    gate_cell = nb.cells[2]
    assert len(gate_views(gate_cell)) == 1, "the gate widget is drawn once in the workflow cell"
    # one table of the run, above the gate; a headless reader sees it waiting
    tables = [
        o for o in gate_cell.outputs if "· release ·" in o.get("data", {}).get("text/plain", "")
    ]
    assert (
        len(tables) == 1 and f"run {run_id} · release · waiting" in tables[0]["data"]["text/plain"]
    )
    assert "Release 3 rows?" in text_of(gate_cell)
    assert not any(o.get("output_type") == "error" for o in gate_cell.outputs)
    assert count(folder, "prepare") == 1 and count(folder, "ship") == 0
    runs = airun_nb.runs(db=db)
    assert runs["status"].tolist() == ["waiting"]
    return run_id, nb


@pytest.mark.slow
def test_cli_approval_between_two_kernels(folder: Path) -> None:
    db = folder / "store.duckdb"
    run_id, _ = first_kernel_stops_at_the_gate(folder, db)

    listed = cli("approvals", "--db", str(db))
    assert f"{run_id} review [open] release: Release 3 rows?" in listed.stdout, listed
    done = cli("approve", run_id, "review", "--by", "bob", "-m", "go ahead", "--db", str(db))
    assert done.returncode == 0, done.stderr

    nb = run_in_fresh_kernel(folder, db)
    report = text_of(nb.cells[3])
    assert f"RUN {run_id} completed" in report, report
    assert "SHIPPED {'approved_by': 'bob', 'channel': 'cli'}" in report
    assert count(folder, "prepare") == 1  # replayed from the store, not executed again
    assert count(folder, "ship") == 1
    assert count(folder, "unprepare") == 0
    # the resumed cell shows no gate any more
    assert not any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb.cells[2].outputs
    )
    gates = airun_nb.approvals(run_id, db=db)
    assert len(gates) == 1
    row = gates.iloc[0]
    assert (row["status"], row["actor"], row["channel"], row["comment"]) == (
        "approved",
        "bob",
        "cli",
        "go ahead",
    )
    assert airun_nb.runs(db=db)["status"].tolist() == ["completed"]


@pytest.mark.slow
def test_cli_rejection_between_two_kernels_rolls_back(folder: Path) -> None:
    db = folder / "store.duckdb"
    run_id, _ = first_kernel_stops_at_the_gate(folder, db)
    done = cli("reject", run_id, "review", "--by", "bob", "-m", "wrong numbers", "--db", str(db))
    assert done.returncode == 0, done.stderr

    nb = run_in_fresh_kernel(folder, db, allow_errors=True)
    shown = text_of(nb.cells[2])
    assert "Rejected by bob: wrong numbers" in shown and "WorkflowFailed" not in shown, shown
    assert count(folder, "prepare") == 1
    assert count(folder, "unprepare") == 1  # the compensation ran, once
    assert count(folder, "ship") == 0
    assert airun_nb.runs(db=db)["status"].tolist() == ["rolled_back"]


@pytest.mark.slow
def test_the_saved_notebook_tells_a_headless_reader_how_to_decide(folder: Path) -> None:
    """Without a widget renderer (a saved notebook on disk, nbconvert, a code review), the gate's
    plain-text form is what is left: it must keep the message, approvers and both commands."""
    db = folder / "store.duckdb"
    run_id, nb = first_kernel_stops_at_the_gate(folder, db)
    (gate_out,) = gate_views(nb.cells[2])
    plain = gate_out["data"]["text/plain"]
    assert "Release 3 rows?" in plain
    assert "may decide: bob" in plain
    assert f"airun approve {run_id} review" in plain, plain
    assert f"airun reject {run_id} review" in plain, plain
