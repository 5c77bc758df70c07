"""A worker SIGKILLed mid-run: its claim is taken over by another worker, which finishes the run
without running again a step that had finished. Real worker processes, a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.queued import (
    TIMEOUT,
    TWO_STEPS,
    airun,
    counts,
    env,
    rows,
    said,
    wait_for,
    worker,
)

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


def _submit(folder: Path, e: dict[str, str], batches: list[tuple[str, int]]) -> list[list[str]]:
    """Queue runs in one process, oldest first (through the engine's submit, as `airun submit`
    does): ``count`` runs of each workflow file of ``batches``, in order; their ids by batch."""
    script = textwrap.dedent(
        f"""
        from airun_nb.engine.worker import submit
        from airun_nb.store.opening import open_store
        from airun_nb.workflow import Workflow
        store = open_store(None)
        for name, count in {batches!r}:
            spec = Workflow.from_file(name).spec
            print(" ".join(submit(spec, store, params={{"n": i}}) for i in range(count)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=e,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def _holder_of(folder: Path, run_id: str, procs: list[subprocess.Popen[str]]) -> int:
    """The pid of the worker whose `hold` body runs ``run_id`` (its marker names the run), once
    the marker appears; fails if every worker ends first."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for marker in folder.glob("ledger.txt.holding.*"):
            if marker.read_text() == run_id:
                return int(marker.name.rsplit(".", 1)[1])
        if all(p.poll() is not None for p in procs):
            raise AssertionError("every worker ended before the held run began")
        time.sleep(0.05)
    raise AssertionError(f"no worker began run {run_id}")


@pytest.mark.crash
@pytest.mark.slow
@pytest.mark.timeout(3000)  # a safety net on a busy machine, not a measure
def test_four_workers_drain_200_runs_and_one_killed_mid_run_is_taken_over(
    tmp_path: Path, store_db
) -> None:
    """Four `airun worker --exit-when-idle` processes race on one queue of 200 runs; the worker
    that took the oldest run is SIGKILLed inside its step `slow`. The other three drain the
    queue, and one of them takes the dead worker's claim over and finishes the run: every step
    body of every run ran exactly once (counted in a ledger outside the store; the killed
    `slow` never finished), every run completed, every queue row is done, claimed once, the
    killed run's twice. The youngest run also holds its worker until the kill, so a worker is
    still serving the queue when the claim is orphaned. On the DuckDB file and on a team store
    (where workers claim with FOR UPDATE SKIP LOCKED)."""
    db = store_db
    e = env(db, tmp_path / "ledger.txt")
    (tmp_path / "held.yaml").write_text(HELD)
    (tmp_path / "two.yaml").write_text(TWO_STEPS)
    [killed_run], drained, [last_run] = _submit(
        tmp_path, e, [("held.yaml", 1), ("two.yaml", 198), ("held.yaml", 1)]
    )
    procs = [worker(["--exit-when-idle"], e, tmp_path) for _ in range(4)]
    pid = _holder_of(tmp_path, killed_run, procs)
    victim = next(p for p in procs if p.pid == pid)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=TIMEOUT) == -signal.SIGKILL
    os.unlink(tmp_path / f"ledger.txt.holding.{pid}")
    (tmp_path / "ledger.txt.release").write_text("")  # the youngest run's body may end now

    survivors = [p for p in procs if p is not victim]
    for p in survivors:
        assert p.wait(timeout=TIMEOUT * 5) == 0, said(p)  # a safety net only
    expected = {(r, s): 1 for r in drained for s in ("first", "second")}
    expected |= {(r, s): 1 for r in (killed_run, last_run) for s in ("first", "slow", "last")}
    assert counts(tmp_path / "ledger.txt") == expected
    assert rows(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("completed", 200)]
    claims = rows(db, "SELECT run_id, state, claims FROM queue ORDER BY run_id")
    assert {r: (state, n) for r, state, n in claims} == {
        r: ("done", 2 if r == killed_run else 1) for r in [killed_run, *drained, last_run]
    }
    assert sum(said(p).count(" completed\n") for p in survivors) == 200
    assert f"run {killed_run} completed" in "".join(said(p) for p in survivors)
    crashed = rows(
        db,
        f"SELECT status FROM attempts WHERE run_id = '{killed_run}' AND step_id = 'slow' "
        "ORDER BY attempt",
    )
    assert crashed == [("crashed",), ("completed",)]
