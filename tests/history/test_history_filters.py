"""The history functions' filters (``workflow=``, ``status=``, ``since=``, ``limit=``) and how
their durations read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import airun_nb
from airun_nb import Workflow


@pytest.fixture
def db(store_db: Any) -> Any:
    """Every test here runs on both backends: the DuckDB file and a PostgreSQL database."""
    return store_db


def _wf(name: str, fail: bool = False) -> Workflow:
    body = "raise ValueError('no')" if fail else "result = 1"
    return Workflow.from_yaml(
        f"name: {name}\non_failure: stop\nsteps:\n  - id: a\n    python: result = 0\n"
        f'  - id: b\n    needs: [a]\n    python: "{body}"\n'
    )


@pytest.fixture
def mixed(db: Path) -> dict[str, list[str]]:
    """Three runs of `north` (the middle one failed) and one of `south`, oldest first."""
    ids: dict[str, list[str]] = {"north": [], "south": []}
    for name, fail in (("north", False), ("north", True), ("south", False), ("north", False)):
        r = _wf(name, fail).run(db=db, new=True, raise_on_failure=False)
        ids[name].append(r.run_id)
    return ids


def test_runs_filters_by_workflow_status_time_and_newest_n(db: Path, mixed) -> None:
    everything = airun_nb.runs(db=db)
    assert len(everything) == 4
    north = airun_nb.runs(db=db, workflow="north")
    assert north["run_id"].tolist() == mixed["north"]
    failed = airun_nb.runs(db=db, status="failed")
    assert failed["run_id"].tolist() == [mixed["north"][1]]
    done = airun_nb.runs(db=db, status=["completed"], workflow="north")
    assert done["run_id"].tolist() == [mixed["north"][0], mixed["north"][2]]
    newest = airun_nb.runs(db=db, limit=2)
    assert newest["run_id"].tolist() == everything["run_id"].tolist()[-2:]  # still oldest first
    cut = everything["created_at"].iloc[2]
    assert airun_nb.runs(db=db, since=cut)["run_id"].tolist() == everything["run_id"].tolist()[2:]
    assert (
        airun_nb.runs(db=db, since=cut.isoformat(), workflow="south")["run_id"].tolist()
        == (mixed["south"])
    )
    assert airun_nb.runs(db=db, until=cut)["run_id"].tolist() == everything["run_id"].tolist()[:2]
    assert airun_nb.runs(db=db, limit=0).empty


def test_the_other_history_functions_take_the_same_filters(db: Path, mixed) -> None:
    failed_run = mixed["north"][1]
    steps = airun_nb.steps(db=db, status="failed")
    assert steps[["run_id", "step_id"]].values.tolist() == [[failed_run, "b"]]
    assert set(airun_nb.steps(db=db, workflow="south")["run_id"]) == set(mixed["south"])
    assert len(airun_nb.steps(db=db, limit=3)) == 3
    attempts = airun_nb.attempts(db=db, workflow="north", status="failed")
    assert attempts["run_id"].tolist() == [failed_run]
    last = airun_nb.attempts(db=db, limit=1)
    assert last["run_id"].tolist() == [mixed["north"][2]]
    events = airun_nb.events(db=db, workflow="south")
    assert not events.empty and set(events["run_id"]) == set(mixed["south"])
    assert set(airun_nb.events(db=db, status="failed")["run_id"]) == {failed_run}
    cut = airun_nb.runs(db=db)["created_at"].iloc[3]
    assert set(airun_nb.events(db=db, since=cut)["run_id"]) == {mixed["north"][2]}
    assert len(airun_nb.events(db=db, limit=2)) == 2
    assert airun_nb.approvals(db=db, workflow="north").empty
    audit = airun_nb.audit(db=db, workflow="nobody")
    assert audit.empty and "principal" in audit.columns


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [({"since": "not a time"}, "since='not a time'"), ({"limit": -1}, "limit=-1")],
)
def test_bad_filters_are_one_line_errors(db: Path, mixed, kwargs, said: str) -> None:
    with pytest.raises(airun_nb.QueryError, match=said):
        airun_nb.runs(db=db, **kwargs)


def test_durations_read_as_seconds_but_stay_timedeltas(db: Path, mixed) -> None:
    """Tables show ``0.01s``, not ``0 days 00:00:00.010000``; the column is still a timedelta."""
    runs = airun_nb.runs(db=db)
    assert pd.api.types.is_timedelta64_dtype(runs["duration"])
    assert (runs["duration"] >= pd.Timedelta(0)).all()
    for shown in (repr(runs), runs._repr_html_(), repr(airun_nb.last_run(db=db).steps)):
        assert "0 days" not in shown
        assert "s" in shown
    steps = airun_nb.steps(db=db)
    assert "0 days" not in repr(steps[steps["status"] == "completed"])  # a slice reads the same
    column = repr(steps["duration"])
    assert "0 days" not in column and "timedelta64" in column  # the footer keeps the dtype
    per_kind = steps.groupby("kind")["duration"].agg(["count", "sum"])
    assert pd.api.types.is_timedelta64_dtype(per_kind["sum"])
    assert "0 days" not in repr(per_kind) and "0 days" not in per_kind._repr_html_()
    from airun_nb.history.relation import duration_text

    assert [duration_text(s) for s in (0.194005, 123.5, 3 * 3600 + 300, 2 * 86400 + 7200)] == [
        "0.19s",
        "2m03.5s",
        "3h05m",
        "2d02h",
    ]
