"""History as DataFrames: right rows, UTC timestamps, timedelta durations."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import airun_nb
from airun_nb import Workflow

TEXT = """
name: hist
steps:
  - id: a
    call: a
  - id: b
    call: b
    needs: [a]
    retry: {attempts: 2, initial: 0.01s}
  - id: c
    python: "result = steps.b.output * 2"
"""


@pytest.fixture
def db(store_db: Any) -> Any:
    """Every test here runs on both backends: the DuckDB file and a PostgreSQL database."""
    return store_db


@pytest.fixture
def two_runs(db: Path):
    calls = Counter()

    def a():
        calls["a"] += 1
        return 1

    def b():
        calls["b"] += 1
        if calls["b"] == 1:
            raise OSError("flaky disk")
        return 2

    before = pd.Timestamp.now(tz="UTC")
    first = Workflow.from_yaml(TEXT).run(db=db, namespace={"a": a, "b": b})
    second = Workflow.from_yaml(TEXT).run(db=db, namespace={"a": a, "b": b}, new=True)
    after = pd.Timestamp.now(tz="UTC")
    return first, second, before, after


def _is_utc(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype) and str(series.dtype.tz) == "UTC"


def test_runs_frame(db: Path, two_runs) -> None:
    first, second, before, after = two_runs
    df = airun_nb.runs(db=db)
    assert df["run_id"].tolist() == [first.run_id, second.run_id]
    assert df["status"].tolist() == ["completed", "completed"]
    assert df["workflow"].tolist() == ["hist", "hist"]
    assert df["steps"].tolist() == [3, 3]
    assert df["completed_steps"].tolist() == [3, 3]
    for col in ("created_at", "started_at", "finished_at"):
        assert _is_utc(df[col]), (col, df[col].dtype)
        assert ((df[col] >= before) & (df[col] <= after)).all(), col
    assert pd.api.types.is_timedelta64_dtype(df["duration"])
    assert (df["duration"] == df["finished_at"] - df["started_at"]).all()
    assert (df["duration"] >= pd.Timedelta(0)).all()


def test_steps_frame(db: Path, two_runs) -> None:
    first, _second, before, after = two_runs
    assert len(airun_nb.steps(db=db)) == 6
    df = airun_nb.steps(first.run_id, db=db)
    assert df["step_id"].tolist() == ["a", "b", "c"]
    assert (df["run_id"] == first.run_id).all()
    assert df["status"].tolist() == ["completed"] * 3
    assert df["attempts"].tolist() == [1, 2, 1]
    for col in ("started_at", "finished_at"):
        assert _is_utc(df[col]), (col, df[col].dtype)
        assert ((df[col] >= before) & (df[col] <= after)).all(), col
    assert pd.api.types.is_timedelta64_dtype(df["duration"])
    assert (df["duration"] >= pd.Timedelta(0)).all()


def test_attempts_frame(db: Path, two_runs) -> None:
    first, _, before, after = two_runs
    # The first run retried b once; in the second run b succeeds at once.
    assert len(airun_nb.attempts(db=db)) == 4 + 3
    df = airun_nb.attempts(first.run_id, db=db)
    assert len(df) == 4
    b = df[df["step_id"] == "b"].sort_values("attempt")
    assert b["attempt"].tolist() == [1, 2]
    assert b["status"].tolist() == ["failed", "completed"]
    assert "flaky disk" in b["error"].iloc[0]
    for col in ("started_at", "finished_at"):
        assert _is_utc(df[col]), (col, df[col].dtype)
        assert ((df[col] >= before) & (df[col] <= after)).all(), col
    assert pd.api.types.is_timedelta64_dtype(df["duration"])
    assert (df["duration"] >= pd.Timedelta(0)).all()


def test_events_frame(db: Path, two_runs) -> None:
    first, _, before, after = two_runs
    df = airun_nb.events(first.run_id, db=db)
    assert _is_utc(df["ts"])
    assert ((df["ts"] >= before) & (df["ts"] <= after)).all()
    assert df["ts"].is_monotonic_increasing
    kinds = df["kind"].tolist()
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed"
    retries = df[df["kind"] == "step_retry"]
    assert retries["step_id"].tolist() == ["b"]
    assert json.loads(retries["detail"].iloc[0])["attempt"] == 1
    assert kinds == ["run_started", "step_retry", "run_completed"]
    assert airun_nb.events(db=db)["kind"].tolist() == [*kinds, "run_started", "run_completed"]


def test_empty_store_frames_have_the_same_dtypes(db: Path) -> None:
    """A store with no runs yet gives empty frames with the same dtypes as full ones."""
    from airun_nb.store.opening import open_store

    open_store(db)
    runs = airun_nb.runs(db=db)
    assert len(runs) == 0
    assert _is_utc(runs["started_at"])
    assert pd.api.types.is_timedelta64_dtype(runs["duration"])
    assert _is_utc(airun_nb.events(db=db)["ts"])


def test_stored_run_shows_the_step_table(db: Path, two_runs) -> None:
    from airun_nb.history.frames import stored_run

    first, *_ = two_runs
    text = repr(stored_run(first.run_id, db=db))
    assert first.run_id in text and "completed" in text
    for step in ("a", "b", "c"):
        assert f"  {step} " in text
    with pytest.raises(airun_nb.RunNotFound):
        stored_run("r-missing", db=db)
