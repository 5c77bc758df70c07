"""`airun runs`, `airun show` and `airun approve` with `--db` naming either backend: a DuckDB
file's path, or a PostgreSQL team store's URL. Real `airun` processes, a real server."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import airun_nb
from airun_nb import Workflow
from support import AIRUN

GATED = """
name: gated
steps:
  - id: prep
    python: "result = 1"
  - id: review
    approval: {message: "Ship?"}
    needs: [prep]
"""


def _airun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIRUN_DB"}  # --db says where
    return subprocess.run(
        [*AIRUN, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_runs_show_and_approve_with_db(store_db: Any, monkeypatch: Any) -> None:
    """A run waiting at its gate is listed by `airun runs --db`, its steps shown by `airun show
    --db`, and `airun approve --db` (as another user) records the decision in that store."""
    run = Workflow.from_yaml(GATED).run(db=store_db)
    assert run.status == "waiting"
    listed = _airun("runs", "--db", str(store_db))
    assert listed.returncode == 0, listed.stderr
    assert run.run_id in listed.stdout and "waiting" in listed.stdout
    shown = _airun("show", run.run_id, "--db", str(store_db))
    assert shown.returncode == 0, shown.stderr
    assert "prep" in shown.stdout and "review" in shown.stdout
    monkeypatch.setenv("AIRUN_USER", "lead")
    approved = _airun("approve", run.run_id, "review", "--db", str(store_db))
    assert approved.returncode == 0, approved.stderr
    gates = airun_nb.approvals(run.run_id, db=store_db)
    assert list(gates["status"]) == ["approved"]
    assert list(gates["actor"]) == ["lead"]
    again = _airun("approve", run.run_id, "review", "--db", str(store_db))
    assert again.returncode != 0
    assert len(again.stderr.strip().splitlines()) == 1  # already decided: one line
