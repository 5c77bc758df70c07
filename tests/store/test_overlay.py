"""Reads beside writers lay the writers' unfolded records over the tables instead of folding them.

A live writer process keeps its records in its journal slot (its keeper is told not to fold
them, so the slot stays unfolded for as long as the test looks). A read in this process must
return them all the same, and leave them unfolded; a read that names events folds them, since
events are numbered as they are folded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import airun_nb
from airun_nb.store import idle
from airun_nb.store.database import Store

WRITER = r"""
import sys
from pathlib import Path
import airun_nb
from airun_nb.store import idle
idle.IDLE_RELEASE = 1e9  # this process never folds its own slot: it waits to be read
db, ready = Path(sys.argv[1]), Path(sys.argv[2])
wf = airun_nb.Workflow.from_dict({
    "name": "unfolded",
    "steps": [{"id": "a", "python": "result = 1"}, {"id": "b", "python": "result = 2"}],
})
r = wf.run(db=db, new=True)
ready.write_text(r.run_id)
sys.stdin.read()  # alive (its slot locked) until the test closes stdin
"""


def _stored(db: Path, sql: str) -> int:
    """A count from the DuckDB tables alone, nothing laid over and nothing folded."""
    store = Store.open(db)
    with store.session("looking at the stored rows", fold=False, peers=False) as con:
        rows = con.execute(sql).fetchall()
    return int(rows[0][0])


def test_a_read_returns_a_live_writers_unfolded_run_and_leaves_it_unfolded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's keeper would fold everything as it lets go of the idle store (after
    # 0.25 s, which a busy machine can take between two lines here): it keeps the store.
    monkeypatch.setattr(idle, "IDLE_RELEASE", 1e9)
    db = tmp_path / "airun.duckdb"
    airun_nb.Workflow.from_dict(
        {"name": "seed", "steps": [{"id": "s", "python": "result = 1"}]}
    ).run(db=db)
    Store.open(db).release()
    ready = tmp_path / "ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(ready)],
        stdin=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # a safety net: the wait is on the writer's file
        while not ready.exists() or not ready.read_text():
            assert writer.poll() is None, "the writer stopped early"
            assert time.monotonic() < deadline, "the writer made no run"
            time.sleep(0.01)
        run_id = ready.read_text()

        runs = airun_nb.runs(db=db)
        assert run_id in set(runs["run_id"])
        row = runs.set_index("run_id").loc[run_id]
        assert row["status"] == "completed" and row["completed_steps"] == 2
        steps = airun_nb.steps(run_id, db=db)
        assert list(steps["step_id"]) == ["a", "b"]
        assert Store.open(db).run_row(run_id)["status"] == "completed"
        # Read, not folded: the tables themselves do not hold the run yet.
        assert _stored(db, f"SELECT count(*) FROM runs WHERE run_id = '{run_id}'") == 0
        assert _stored(db, f"SELECT count(*) FROM steps WHERE run_id = '{run_id}'") == 0

        # Events are numbered as they are folded: a read of them folds the writer's records.
        events = airun_nb.events(run_id, db=db)
        assert len(events) > 0
        assert _stored(db, f"SELECT count(*) FROM events WHERE run_id = '{run_id}'") == len(events)
        assert _stored(db, f"SELECT count(*) FROM runs WHERE run_id = '{run_id}'") == 1
    finally:
        if writer.stdin is not None:
            writer.stdin.close()
        writer.wait(timeout=120)
    assert writer.returncode == 0
