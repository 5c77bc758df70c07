"""Rolling back a run that waits at a gate: the gate closes as cancelled, the run keeps its
start time, and nobody can decide the gate afterwards. Real stores (the DuckDB file and a
PostgreSQL database), real `airun` CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb.spec.approval import ApprovalError
from support import AIRUN

SPEC = """
name: release
steps:
  - id: prepare
    python: result = 1
  - id: review
    needs: [prepare]
    approval: {message: "ok?", approvers: [bob]}
  - id: ship
    needs: [review]
    python: result = 2
"""


def test_airun_rollback_of_a_waiting_run_closes_its_gate_and_keeps_started_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_db: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    db = store_db  # a DuckDB file, or a PostgreSQL database (the test runs on both)
    first = airun_nb.Workflow.from_yaml(SPEC).run(db=db)
    assert first.status == "waiting"
    started = airun_nb.runs(db=db).set_index("run_id").loc[first.run_id, "started_at"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    done = subprocess.run(
        [*AIRUN, "rollback", first.run_id, "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    runs = airun_nb.runs(db=db).set_index("run_id")
    assert runs.loc[first.run_id, "status"] == "rolled_back"
    assert runs.loc[first.run_id, "started_at"] == started
    assert runs.loc[first.run_id, "duration"].total_seconds() >= 0.3
    gates = airun_nb.approvals(first.run_id, db=db)
    assert gates["status"].tolist() == ["cancelled"]
    steps = airun_nb.steps(first.run_id, db=db).set_index("step_id")
    assert steps.loc["review", "status"] == "pending"
    assert "cancelled" in str(steps.loc["review", "reason"])
    with pytest.raises(ApprovalError):
        airun_nb.approve(first.run_id, "review", by="bob", db=db)
