"""A read over laid-over records returns what the same read returns after folding them.

Generated histories of journal records (runs, steps with the attempt they carry, attempts,
gates), split at a generated point into a folded part and an unfolded tail: every table read
with the tail laid over it (``store/overlay``) equals the table with the tail folded in
(``store/fold``), row for row, whatever the order and repetition of keys.
"""

from __future__ import annotations

from typing import Any

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from airun_nb.store import overlay, schema
from airun_nb.store.fold import fold

RUNS = ["r-1", "r-2", "r-3"]
STEPS = ["a", "b"]
WORDS = st.sampled_from(["running", "completed", "failed", "waiting", None])
TIMES = st.one_of(st.none(), st.floats(min_value=1.7e9, max_value=1.8e9))


def _run() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"t": st.just("run"), "run_id": st.sampled_from(RUNS), "workflow": st.just("w")},
        optional={"status": WORDS, "created_at": TIMES, "error": st.text(max_size=5)},
    )


def _attempt() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"phase": st.sampled_from(["do", "undo"]), "attempt": st.integers(1, 3)},
        optional={"status": WORDS, "started_at": TIMES},
    )


def _step() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"t": st.just("step"), "run_id": st.sampled_from(RUNS), "step_id": st.sampled_from(STEPS)},
        optional={
            "status": WORDS,
            "attempts": st.integers(0, 3),
            "position": st.integers(0, 5),
            "finished_at": TIMES,
            "att": st.one_of(st.just({}), _attempt()),
        },
    )


def _att() -> st.SearchStrategy[dict[str, Any]]:
    return _attempt().map(lambda a: {"t": "att", "run_id": "r-1", "step_id": "a", **a})


def _gate() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"t": st.just("gate"), "run_id": st.sampled_from(RUNS), "gate_id": st.just("g")},
        optional={"status": WORDS},
    )


RECORDS = st.lists(st.one_of(_run(), _step(), _att(), _gate()), max_size=40)
READS = {
    "runs": "SELECT * FROM runs ORDER BY run_id",
    "steps": "SELECT * FROM steps ORDER BY run_id, step_id",
    "attempts": "SELECT * FROM attempts ORDER BY run_id, step_id, phase, attempt",
    "approvals": "SELECT * FROM approvals ORDER BY run_id, gate_id",
}


def _store(records: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    for statement in schema.ddl():
        con.execute(statement)
    if records:
        fold(con, records, [])
    return con


@settings(max_examples=60, deadline=None)
@given(RECORDS, st.data())
def test_laid_over_reads_equal_folded_reads(records: list[dict[str, Any]], data: Any) -> None:
    cut = data.draw(st.integers(0, len(records)))
    stored, tail = records[:cut], records[cut:]
    folded = _store(stored)
    if tail:
        fold(folded, tail, [])
    laid = _store(stored)
    catalog = laid.execute("SELECT current_database()").fetchall()[0][0]
    for table, sql in READS.items():
        want = folded.execute(sql).fetchall()
        over = overlay.lay(laid, catalog, tail, sql) if tail else []
        assert over is not None
        try:
            got = laid.execute(sql).fetchall()
        finally:
            overlay.lift(laid, over)
        assert got == want, table
    # Lifted: the connection reads the stored rows alone again.
    assert (
        laid.execute(READS["runs"]).fetchall() == _store(stored).execute(READS["runs"]).fetchall()
    )


def test_a_read_naming_events_among_unfolded_events_is_not_laid_over() -> None:
    con = _store([])
    ev = {"t": "ev", "ts": 1.75e9, "run_id": "r-1", "step_id": None, "kind": "run_started"}
    run = {"t": "run", "run_id": "r-1", "workflow": "w", "status": "running"}
    assert overlay.lay(con, "memory", [run, ev], "SELECT * FROM events") is None
    laid = overlay.lay(con, "memory", [run, ev], "SELECT * FROM runs")
    assert laid == ["runs"]
    assert con.execute("SELECT status FROM runs").fetchall() == [("running",)]
    overlay.lift(con, laid)
    assert con.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]
