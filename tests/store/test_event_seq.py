"""Events are numbered by the store as they are folded: one total order, kept across upgrades.

A store written before events were numbered (schema 7) is upgraded in place: its events get
numbers in the order of their timestamps, and new events continue after them.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from airun_nb.store.database import Store


def _event(kind: str, ts: float) -> dict[str, object]:
    return {"t": "ev", "ts": ts, "run_id": "r-1", "step_id": None, "kind": kind, "detail": None}


def test_an_older_stores_events_are_numbered_in_time_order_and_new_ones_follow(
    tmp_path: Path,
) -> None:
    """Schema 7 had no events.seq: after the upgrade the old events are 1..3 in time order
    (whatever order they were inserted in) and an event folded now is 4."""
    db = tmp_path / "s.duckdb"
    Store.open(db).release()
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE events DROP COLUMN seq")
    con.execute("UPDATE airun_meta SET value = '7' WHERE key = 'schema_version'")
    now = time.time()
    for kind, ts in (("second", now - 20), ("first", now - 30), ("third", now - 10)):
        con.execute(
            "INSERT INTO events VALUES (make_timestamp(?::BIGINT), 'r-1', NULL, ?, NULL)",
            [int(ts * 1_000_000), kind],
        )
    con.close()

    store = Store.open(db)
    store.record(_event("fourth", now - 3600))  # a writer whose clock is an hour slow
    store.flush()
    rows = store.query("SELECT seq, kind FROM events ORDER BY seq")
    version = store.query("SELECT value FROM airun_meta WHERE key = 'schema_version'")
    store.release()
    assert [tuple(r) for r in rows] == [(1, "first"), (2, "second"), (3, "third"), (4, "fourth")]
    assert int(version[0][0]) >= 8
