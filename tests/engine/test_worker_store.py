"""The queue in the store: a store of schema 9 (before queues) is upgraded in place and takes
submitted runs; the queue's transitions are checked by the one writer."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from airun_nb.engine.worker import submit
from airun_nb.store.database import SCHEMA_VERSION, Store
from airun_nb.store.transitions import TransitionError
from airun_nb.workflow import Workflow

WORKFLOW = "name: small\nsteps:\n  - id: a\n    python: 'result = 1'\n"


def test_a_store_from_before_queues_is_upgraded_in_place_and_takes_a_submitted_run(
    tmp_path: Path,
) -> None:
    """Schema 9 had no queue table: opening it adds the table and the current version, the runs
    already in it stay, and a run can be submitted and claimed."""
    db = tmp_path / "s.duckdb"
    Workflow.from_yaml(WORKFLOW).run(db=db)
    Store.open(db).release()
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE queue")
    con.execute("UPDATE airun_meta SET value = '9' WHERE key = 'schema_version'")
    con.close()

    store = Store.open(db)
    try:
        version = store.query("SELECT value FROM airun_meta WHERE key = 'schema_version'")
        assert version == [(str(SCHEMA_VERSION),)]
        assert store.query("SELECT status FROM runs") == [("completed",)]
        run_id = submit(Workflow.from_yaml(WORKFLOW).spec, store, queue="q")
        assert store.claim_queued(["q"], "w1", 5) == [run_id]
        assert store.claim_queued(["q"], "w2", 5) == []  # claimed: never twice
    finally:
        store.release()


def test_a_queue_entry_cannot_skip_its_states(tmp_path: Path) -> None:
    """Parking an entry no worker claimed is refused by the one writer, and nothing is
    written: the entry stays queued."""
    store = Store.open(tmp_path / "s.duckdb")
    try:
        run_id = submit(Workflow.from_yaml(WORKFLOW).spec, store)
        from airun_nb.store import transitions
        from airun_nb.store.queue import queue_record

        row = store.queue_row(run_id)
        assert row is not None and row["state"] == "queued"
        with pytest.raises(TransitionError, match="cannot go from queued to parked"):
            transitions.commit(store, [queue_record(row, state="parked")])
        assert store.queue_row(run_id)["state"] == "queued"  # type: ignore[index]
    finally:
        store.release()
