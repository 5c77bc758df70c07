"""A worker SIGKILLed mid-run: its claim is taken over by another worker, which finishes the run
without running again a step that had finished. Real worker processes, a real SIGKILL."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from support.queued import TIMEOUT, airun, counts, env, rows, said, wait_for, worker

HELD = """\
name: held
steps:
  - id: first
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: first}
  - id: slow
    needs: [first]
    call: support.queued:hold
    with: {run: "{{ run.id }}", step: slow}
  - id: last
    needs: [slow]
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: last}
"""


@pytest.mark.crash
def test_a_killed_workers_run_is_finished_by_another_worker(tmp_path: Path, store_db) -> None:
    """Worker A claims the run and is SIGKILLed inside step `slow` (after `first` finished);
    worker B, started while nothing else runs, takes A's claim over (A is dead), resumes the
    run and completes it: `first` ran once in all, `slow` twice (its first attempt was in
    flight) and the store records the second attempt; the queue row was claimed twice. On the
    DuckDB file and on a team store."""
    db = store_db
    e = env(db, tmp_path / "ledger.txt")
    (tmp_path / "held.yaml").write_text(HELD)
    run_id = airun(["submit", "held.yaml"], e, tmp_path).stdout.strip()
    a = worker([], e, tmp_path)
    marker = wait_for((tmp_path, "ledger.txt.holding.*"), a)
    a.send_signal(signal.SIGKILL)
    assert a.wait(timeout=TIMEOUT) == -signal.SIGKILL
    marker.unlink()
    assert rows(db, "SELECT status FROM runs") == [("running",)]  # its owner is dead
    assert rows(db, "SELECT state FROM queue") == [("claimed",)]

    (tmp_path / "ledger.txt.release").write_text("")
    b = worker(["--exit-when-idle"], e, tmp_path)
    assert b.wait(timeout=TIMEOUT) == 0, said(b)
    assert f"run {run_id} completed" in said(b)
    assert counts(tmp_path / "ledger.txt") == {
        (run_id, "first"): 1,
        (run_id, "slow"): 1,  # counted when it finishes: only B's attempt finished
        (run_id, "last"): 1,
    }
    assert rows(db, "SELECT status FROM runs") == [("completed",)]
    assert rows(db, "SELECT state, claims FROM queue") == [("done", 2)]
    attempts = rows(
        db, "SELECT step_id, count(*) FROM attempts WHERE phase = 'execute' GROUP BY step_id"
    )
    assert dict(attempts) == {"first": 1, "slow": 2, "last": 1}
    crashed = rows(db, "SELECT status FROM attempts WHERE step_id = 'slow' ORDER BY attempt")
    assert crashed == [("crashed",), ("completed",)]  # the killed attempt is on the record
