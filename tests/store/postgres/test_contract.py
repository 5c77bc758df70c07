"""The store's contract, on both backends: the DuckDB file and a real PostgreSQL database.

Every test here runs twice (``backend`` = duckdb, postgres) and asks the same questions of the
store through the one boundary (``open_store``): the named reads, the one checked writer
(``transitions.commit``), the events' one order, and DataFrame outputs kept as tables.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import airun_nb
from airun_nb.store import transitions
from airun_nb.store.opening import open_store


def _run(run_id: str, status: str, created: float, **more: Any) -> dict[str, Any]:
    return {
        "t": "run",
        "run_id": run_id,
        "workflow": "w",
        "status": status,
        "created_at": created,
        "updated_at": created,
        "params": "{}",
        **more,
    }


def _step(run_id: str, step_id: str, position: int, status: str) -> dict[str, Any]:
    return {
        "t": "step",
        "run_id": run_id,
        "step_id": step_id,
        "position": position,
        "kind": "call",
        "status": status,
        "attempts": 1,
        "output_blob": None,
    }


def _event(run_id: str, kind: str) -> dict[str, Any]:
    return {"t": "ev", "ts": time.time(), "run_id": run_id, "step_id": None, "kind": kind}


def test_named_reads_answer_what_was_committed(store_db: Any) -> None:
    """A run, its steps and a gate committed through the one writer are what every named read
    returns, in step order, with the latest record of a row winning."""
    store = open_store(store_db)
    t0 = time.time()
    transitions.commit(
        store,
        [
            _run("r1", "running", t0),
            _step("r1", "b", 2, "pending"),
            _step("r1", "a", 1, "running"),
            _step("r1", "a", 1, "completed"),  # the latest record of (r1, a) wins
            {
                "t": "gate",
                "run_id": "r1",
                "gate_id": "g",
                "workflow": "w",
                "status": "open",
                "message": "go?",
                "opened_at": t0,
            },
            _event("r1", "run_started"),
        ],
    )
    transitions.commit(store, [_run("r1", "waiting", t0)])
    assert store.run_row("r1")["status"] == "waiting"
    assert store.has_run("r1") and not store.has_run("nope")
    assert [r["step_id"] for r in store.step_rows("r1")] == ["a", "b"]
    assert [r["status"] for r in store.step_rows("r1")] == ["completed", "pending"]
    assert [r["step_id"] for r in store.step_rows("r1", "pending")] == ["b"]
    assert store.gate_row("r1", "g")["message"] == "go?"
    assert [g["gate_id"] for g in store.open_gates()] == ["g"]
    assert store.latest_unfinished_run() == "r1"
    assert [r["run_id"] for r in store.runs_with_status("waiting")] == ["r1"]
    assert store.decided_gates([("r1", "g")]) == []
    assert store.stored_definition("r1") == ("w", None)
    kinds = [e["kind"] for e in store.events_after(0, "r1", 10)]
    assert kinds == ["run_started"]


def test_a_refused_transition_writes_nothing(store_db: Any) -> None:
    """A transition the tables forbid (completed -> waiting) raises before anything of the
    commit is written, on either backend."""
    store = open_store(store_db)
    transitions.commit(store, [_run("r2", "completed", time.time())])
    with pytest.raises(transitions.TransitionError, match="cannot go from completed to waiting"):
        transitions.commit(store, [_step("r2", "x", 1, "running"), _run("r2", "waiting", 0.0)])
    assert store.run_row("r2")["status"] == "completed"
    assert store.step_rows("r2") == []


def test_events_have_one_order_without_gaps(store_db: Any) -> None:
    """Four threads commit events at once: the store numbers them 1..N with no gap and no
    repeat, and a reader that follows the cursor sees every event exactly once."""
    store = open_store(store_db)
    per_thread, threads = 25, 4
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        cursor = 0
        while True:
            rows = store.events_after(cursor, None, 1000)
            for row in rows:
                seen.append(int(row["seq"]))
                cursor = int(row["seq"])
            if done.is_set() and not rows and cursor >= per_thread * threads:
                return

    def write(n: int) -> None:
        for i in range(per_thread):
            store.record_many([_event(f"run{n}", f"e{i}")])

    reader = threading.Thread(target=follow)
    reader.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join(timeout=120)
    assert not reader.is_alive()
    assert seen == list(range(1, per_thread * threads + 1))
    assert store.event_cursor() == per_thread * threads
    # Each writer's own events keep their order.
    for n in range(threads):
        kinds = [e["kind"] for e in store.events_after(0, f"run{n}", 1000)]
        assert kinds == [f"e{i}" for i in range(per_thread)]


def test_output_tables_keep_their_types(store_db: Any) -> None:
    """A DataFrame output stored as a table comes back with the same columns, types and
    values as pandas sees them (Arrow in, Arrow out), and history's SQL can read it as ``outputs."name"``."""
    store = open_store(store_db)
    frame = pd.DataFrame(
        {
            "region": ["north", "south", None],
            "amount": [1.5, None, 3.25],
            "n": [1, 2, 3],
            "when": pd.to_datetime(["2024-01-01 00:00", "2024-06-30 12:00", None]),
            "ok": [True, False, True],
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    store.put_table("r1__out", table)
    back = store.get_table("r1__out")
    assert back.schema.names == table.schema.names
    pd.testing.assert_frame_equal(back.to_pandas(), frame)  # dtypes included
    store.put_table("r1__out", pa.table({"x": [7]}))  # replaced, not appended
    assert store.get_table("r1__out").to_pydict() == {"x": [7]}
    total = airun_nb.query('SELECT sum(x) AS total FROM outputs."r1__out"', db=store_db)
    assert total["total"].tolist() == [7]


def test_history_sql_runs_on_duckdb_in_a_session(store_db: Any) -> None:
    """Inside a session the store's tables answer DuckDB SQL (a window function and a
    DuckDB-only ``UNION ALL BY NAME``), whichever backend holds them."""
    store = open_store(store_db)
    t0 = time.time()
    transitions.commit(
        store,
        [
            _run("r3", "running", t0),
            _step("r3", "a", 1, "completed"),
            _step("r3", "b", 2, "failed"),
        ],
    )
    with store.session("answering a history query") as con:
        rows = con.execute(
            "SELECT step_id, row_number() OVER (ORDER BY position DESC) AS n FROM steps "
            "WHERE run_id = ? ORDER BY step_id",
            ["r3"],
        ).fetchall()
        assert rows == [("a", 2), ("b", 1)]
        union = con.sql(
            "SELECT run_id FROM runs UNION ALL BY NAME SELECT 'x' AS run_id ORDER BY run_id"
        ).fetchall()
        assert union == [("r3",), ("x",)]
    frame = store.query_df("SELECT status, count(*) AS n FROM steps GROUP BY status ORDER BY 1")
    assert frame.to_dict("list") == {"status": ["completed", "failed"], "n": [1, 1]}
