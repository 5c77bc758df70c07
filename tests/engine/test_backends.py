"""The engine on both backends: the same workflow behaves the same on the DuckDB file and on a
PostgreSQL team store (``backend`` = duckdb, postgres).

A run waits at a gate; it is approved and resumes without running its finished step again (a
counter outside the store counts the bodies); a rejected gate rolls the run back through its
compensation; and history's DataFrames (``runs()``, ``steps()``) have the same columns, dtypes
and values on both backends.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

import airun_nb
from airun_nb import Workflow

GATED = """
name: gated
steps:
  - id: a
    call: f
    compensate: {call: undo_f}
  - id: gate
    needs: [a]
    approval:
      message: "go on?"
      allow_self_approval: true
  - id: b
    needs: [gate]
    call: g
"""


def _bodies(counts: Counter[str]) -> dict[str, Any]:
    def f() -> pd.DataFrame:
        counts["a"] += 1
        return pd.DataFrame({"x": [1, 2, 3], "y": ["p", "q", None]})

    def g() -> int:
        counts["b"] += 1
        return 42

    def undo_f() -> None:
        counts["undo_a"] += 1

    return {"f": f, "g": g, "undo_f": undo_f}


def test_approved_gate_resumes_without_running_a_finished_step(store_db: Any) -> None:
    """A run waits at its gate with `a` done; after an approval the resume runs `b` only: `a`'s
    DataFrame output is loaded from the store, never recomputed."""
    counts: Counter[str] = Counter()
    wf = Workflow.from_yaml(GATED)
    first = wf.run(db=store_db, namespace=_bodies(counts))
    assert first.status == "waiting"
    assert counts == Counter({"a": 1})
    airun_nb.approve(first.run_id, "gate", by="lead", db=store_db)
    again = wf.run(db=store_db, namespace=_bodies(counts), resume=first.run_id)
    assert again.status == "completed"
    assert counts == Counter({"a": 1, "b": 1})
    assert again.run_id == first.run_id
    assert again.outputs["a"].equals(pd.DataFrame({"x": [1, 2, 3], "y": ["p", "q", None]}))
    steps = airun_nb.steps(first.run_id, db=store_db).set_index("step_id")
    assert steps.loc["a", "attempts"] == 1 and steps.loc["b", "status"] == "completed"


def test_rejected_gate_rolls_back_through_the_compensation(store_db: Any) -> None:
    """A rejected gate rolls the run back: `a`'s compensation runs once, `b` never runs, and
    the run ends rolled_back."""
    counts: Counter[str] = Counter()
    wf = Workflow.from_yaml(GATED)
    first = wf.run(db=store_db, namespace=_bodies(counts))
    airun_nb.reject(first.run_id, "gate", by="lead", comment="no", db=store_db)
    again = wf.run(db=store_db, namespace=_bodies(counts), resume=first.run_id)
    assert again.status == "rolled_back"
    assert counts == Counter({"a": 1, "undo_a": 1})
    runs = airun_nb.runs(db=store_db)
    assert runs.set_index("run_id").loc[first.run_id, "status"] == "rolled_back"
    gate = airun_nb.approvals(first.run_id, db=store_db).iloc[0]
    assert (gate["decision"], gate["actor"]) == ("reject", "lead")


def _history(db: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts: Counter[str] = Counter()
    wf = Workflow.from_yaml(GATED.replace("name: gated", "name: same"))
    run = wf.run(db=db, namespace=_bodies(counts))
    airun_nb.approve(run.run_id, "gate", by="lead", db=db)
    wf.run(db=db, namespace=_bodies(counts), resume=run.run_id)
    return airun_nb.runs(db=db), airun_nb.steps(run.run_id, db=db)


VARYING = {"run_id", "created_at", "started_at", "finished_at", "updated_at", "duration"}
VARYING |= {"owner_pid", "owner_host", "launched_by", "source", "finish_seq", "output_table"}


def test_history_frames_are_the_same_on_both_backends(db: Path, pg_url: str) -> None:
    """The same run on the DuckDB file and on PostgreSQL: runs() and steps() have the same
    columns and dtypes, and the same values in every column that does not name a time, a
    process or an id."""
    runs_duck, steps_duck = _history(db)
    runs_pg, steps_pg = _history(pg_url)
    for duck, pg in ((runs_duck, runs_pg), (steps_duck, steps_pg)):
        assert list(duck.columns) == list(pg.columns)
        assert duck.dtypes.astype(str).to_dict() == pg.dtypes.astype(str).to_dict()
        keep = [c for c in duck.columns if c not in VARYING]
        pd.testing.assert_frame_equal(
            duck[keep].reset_index(drop=True), pg[keep].reset_index(drop=True)
        )
    assert list(steps_pg["status"]) == ["completed", "completed", "completed"]
