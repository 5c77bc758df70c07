"""SQL over the history: query(), history_relation(), steps() filters, the journal overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import airun_nb
from airun_nb import QueryError, Workflow

SMALL = """
name: small
steps:
  - id: a
    call: one
  - id: b
    call: one
    needs: [a]
"""
OTHER = """
name: other
steps:
  - id: x
    call: one
"""


def one() -> int:
    return 1


@pytest.fixture
def db(store_db: Any) -> Any:
    """Every test here runs on both backends: the DuckDB file and a PostgreSQL database."""
    return store_db


@pytest.fixture
def store_with_runs(db: Path) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {"small": [], "other": []}
    for _ in range(3):
        runs["small"].append(
            Workflow.from_yaml(SMALL).run(db=db, namespace={"one": one}, new=True).run_id
        )
    runs["other"].append(Workflow.from_yaml(OTHER).run(db=db, namespace={"one": one}).run_id)
    return runs


def test_query_returns_a_frame_with_history_dtypes(db: Path, store_with_runs) -> None:
    df = airun_nb.query(
        "SELECT run_id, workflow, created_at, owner_pid FROM runs WHERE workflow = ? "
        "ORDER BY created_at",
        ["small"],
        db=db,
    )
    assert df["run_id"].tolist() == store_with_runs["small"]
    assert df["run_id"].dtype == "string"
    assert isinstance(df["created_at"].dtype, pd.DatetimeTZDtype)
    assert str(df["created_at"].dtype.tz) == "UTC"
    counts = airun_nb.query(
        "SELECT r.workflow, count(*) AS n FROM steps s JOIN runs r USING (run_id) "
        "GROUP BY ALL ORDER BY 1",
        db=db,
    )
    assert dict(zip(counts["workflow"], counts["n"], strict=True)) == {"other": 1, "small": 6}


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ("DELETE FROM runs", "only SELECT"),
        ("DROP TABLE steps", "only SELECT"),
        ("SELECT 1; DELETE FROM runs", "expected one SELECT statement, got 2"),
        ("SELECT nope FROM runs", "query: Binder Error"),
        ("SELEC * FROM runs", "query: Parser Error"),
    ],
)
def test_query_refuses_anything_but_one_select(db: Path, store_with_runs, sql, said) -> None:
    with pytest.raises(QueryError) as info:
        airun_nb.query(sql, db=db)
    assert said in str(info.value)
    assert "\n" not in str(info.value)
    assert len(airun_nb.runs(db=db)) == 4  # nothing changed


def test_history_relation_pushes_filters_and_aggregates_into_duckdb(
    db: Path, store_with_runs
) -> None:
    rel = airun_nb.history_relation("steps", db=db)
    done = rel.filter("status = 'completed'").aggregate("run_id, count(*) AS n", "run_id")
    assert "count" in done.sql.lower() and "completed" in done.sql
    df = done.order("run_id").df()
    assert sorted(df["run_id"]) == sorted(store_with_runs["small"] + store_with_runs["other"])
    assert set(df["n"]) == {1, 2}
    runs = airun_nb.history_relation("runs", db=db).filter("workflow = 'other'")
    joined = rel.join(runs, "run_id").project("step_id").fetchall()
    assert joined == [("x",)]
    assert rel.filter("step_id = 'b'").aggregate("count(*)").fetchone() == (3,)
    table = rel.project("run_id, started_at").limit(2).arrow()
    assert table.num_rows == 2


def test_history_relation_errors_are_one_line(db: Path, store_with_runs) -> None:
    with pytest.raises(QueryError, match="no history table 'tokens'"):
        airun_nb.history_relation("tokens", db=db)
    with pytest.raises(QueryError) as info:
        airun_nb.history_relation("steps", db=db).filter("nope = 1").df()
    assert "history_relation('steps')" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AttributeError, match="relational methods"):
        airun_nb.history_relation("steps", db=db).insert  # noqa: B018


def test_steps_filters_run_in_sql(db: Path, store_with_runs) -> None:
    everything = airun_nb.steps(db=db)
    assert len(everything) == 7
    small = airun_nb.steps(db=db, workflow="small")
    assert set(small["run_id"]) == set(store_with_runs["small"])
    assert list(small.columns) == list(everything.columns)
    assert list(small.dtypes) == list(everything.dtypes)
    assert len(airun_nb.steps(db=db, status="completed")) == 7
    assert len(airun_nb.steps(db=db, status=["failed", "running"])) == 0
    middle = everything.sort_values("started_at")["started_at"].iloc[3]
    later = airun_nb.steps(db=db, since=middle)
    earlier = airun_nb.steps(db=db, until=middle)
    assert len(later) + len(earlier) == 7
    assert (later["started_at"] >= middle).all() and (earlier["started_at"] < middle).all()
    # naive times and ISO strings are UTC
    iso = middle.tz_convert("UTC").tz_localize(None).isoformat()
    assert len(airun_nb.steps(db=db, since=iso)) == len(later)
    one_run = airun_nb.steps(store_with_runs["small"][0], db=db, status="completed")
    assert one_run["step_id"].tolist() == ["a", "b"]
    with pytest.raises(QueryError, match="since='yesterday-ish' is not a date"):
        airun_nb.steps(db=db, since="yesterday-ish")


def test_an_empty_store_has_the_same_step_dtypes(db: Path, tmp_path: Path, store_with_runs) -> None:
    from airun_nb.store.database import Store

    full = airun_nb.steps(db=db)
    Store.open(tmp_path / "empty.duckdb")  # a store with no runs yet
    empty = airun_nb.steps(db=tmp_path / "empty.duckdb")
    assert list(empty.columns) == list(full.columns)
    assert dict(empty.dtypes) == dict(full.dtypes)


def test_a_resume_sees_the_records_of_a_run_that_was_not_folded(db: Path) -> None:
    calls: list[str] = []

    def flaky() -> int:
        calls.append("b")
        if len(calls) == 1:
            raise OSError("flaky disk")
        return 2

    ns = {"one": one, "flaky": flaky}
    text = "on_failure: stop\n" + SMALL.replace("call: one\n    needs", "call: flaky\n    needs")
    with pytest.raises(airun_nb.WorkflowFailed):
        Workflow.from_yaml(text).run(db=db, namespace=ns)
    # The failed run lives in the journal and in DuckDB's rows laid over each other; the next
    # run of the cell must find it, resume it and replay step a.
    second = Workflow.from_yaml(text).run(db=db, namespace=ns)
    assert second.executed == ["b"]
    runs = airun_nb.runs(db=db)
    assert runs["run_id"].tolist() == [second.run_id]
    assert runs["status"].tolist() == ["completed"]


def test_sums_and_decimals_come_back_as_numbers_not_python_objects(
    db: Path, store_with_runs
) -> None:
    df = airun_nb.query(
        "SELECT sum(attempts) AS attempts, 1.5::DECIMAL(4, 1) AS d, "
        "sum(attempts) FILTER (WHERE false) AS none FROM steps",
        db=db,
    )
    assert df["attempts"].dtype == "int64" and df["attempts"].iloc[0] == 7
    assert df["d"].dtype == "float64" and df["d"].iloc[0] == 1.5
    assert df["none"].dtype == "Int64" and df["none"].isna().all()
