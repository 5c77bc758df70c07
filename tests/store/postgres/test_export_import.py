"""A run moves between two team stores whole: its run, steps, attempts, gates, events and its
DataFrame outputs, in one transaction; a run id the target already has is refused and nothing
is written. Two real databases on a real server."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import airun_nb
from airun_nb import Workflow
from airun_nb.errors import StoreError
from airun_nb.store import transitions
from airun_nb.store.opening import open_store
from support.postgres import create_database, drop_database

WF = """
name: moved
steps:
  - id: load
    call: load
  - id: gate
    needs: [load]
    approval: {message: "ok?"}
"""


def test_a_run_exported_and_imported_is_the_same_run(pg_server: str, pg_url: str) -> None:
    """Export from one store, import into another: the history frames of the run are equal,
    the output DataFrame reads back the same, and the target's own events keep one order."""
    frame = pd.DataFrame({"x": [1, 2, 3], "y": ["a", None, "c"]})
    run = Workflow.from_yaml(WF).run(db=pg_url, namespace={"load": lambda: frame})
    source = open_store(pg_url)
    bundle = source.export_run(run.run_id)
    assert set(bundle["__outputs__"]) == {
        r["output_table"] for r in bundle["steps"] if r["output_table"]
    }
    target_url = create_database(pg_server)
    try:
        target = open_store(target_url)
        transitions.commit(
            target,
            [{"t": "ev", "ts": 0.0, "run_id": "other", "step_id": None, "kind": "before"}],
        )
        target.import_run(bundle)
        for frame_of in (airun_nb.steps, airun_nb.approvals):
            a = frame_of(run.run_id, db=pg_url).drop(columns=["duration"], errors="ignore")
            b = frame_of(run.run_id, db=target_url).drop(columns=["duration"], errors="ignore")
            pd.testing.assert_frame_equal(a, b)
        loaded = airun_nb.load_run(run.run_id, db=target_url)
        assert loaded.outputs["load"].equals(frame)
        seqs = [e["seq"] for e in target.events_after(0, None, 1000)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) == 1 + len(bundle["events"])
        with pytest.raises(StoreError, match="already in"):
            target.import_run(bundle)
        assert len(target.events_after(0, None, 1000)) == len(seqs)  # nothing written
    finally:
        drop_database(pg_server, target_url)


def test_exporting_a_missing_run_is_one_line(pg_url: str) -> None:
    store: Any = open_store(pg_url)
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.export_run("nope")
