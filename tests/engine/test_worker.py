"""Workers: several `airun worker` processes drain one queue, each run exactly once; a run
parked at a gate is continued by a worker once it is decided, whoever launched it and whether or
not that process still exists; `--exit-when-idle`; SIGTERM hands the run in progress back.
Real worker processes on a real store file; step bodies count themselves in a ledger file."""

from __future__ import annotations

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

GATED = """\
name: gated
steps:
  - id: prepare
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: prepare}
  - id: review
    needs: [prepare]
    approval: {message: "Publish?"}
  - id: publish
    needs: [review]
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: publish}
"""

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


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return tmp_path, env(tmp_path / "s.duckdb", tmp_path / "ledger.txt")


def _submit_many(folder: Path, e: dict[str, str], text: str, n: int) -> list[str]:
    """Queue ``n`` runs in one process (through the engine's submit, as `airun submit` does)."""
    (folder / "wf.yaml").write_text(text)
    script = textwrap.dedent(
        f"""
        from airun_nb.engine.worker import submit
        from airun_nb.store.opening import open_store
        from airun_nb.workflow import Workflow
        spec = Workflow.from_file("wf.yaml").spec
        store = open_store(None)
        for i in range({n}):
            print(submit(spec, store, params={{"n": i}}))
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
    return done.stdout.split()


def _drain(world, n: int, commands: list[list[str]]) -> None:
    folder, e = world
    run_ids = _submit_many(folder, e, TWO_STEPS, n)
    assert len(set(run_ids)) == n
    workers = [worker(["--exit-when-idle", *args], e, folder) for args in commands]
    for w in workers:
        assert w.wait(timeout=TIMEOUT * n // 40) == 0, said(w)  # a safety net only
    ran = counts(folder / "ledger.txt")
    expected = {(r, s): 1 for r in run_ids for s in ("first", "second")}
    assert ran == expected  # every body of every run exactly once, nothing else
    db = e["AIRUN_DB"]
    assert rows(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("completed", n)]
    assert rows(db, "SELECT state, max(claims), count(*) FROM queue GROUP BY state") == [
        ("done", 1, n)
    ]
    taken = sum(said(w).count(" completed\n") for w in workers)
    assert taken == n  # the workers' own accounts agree: n runs, no run twice


def test_four_workers_drain_40_runs_each_exactly_once(world) -> None:
    """Four worker processes racing on one queue of 40 runs (two `airun worker --concurrency
    2`): every run completes, every step body runs exactly once (counted outside the store),
    every queue row was claimed once."""
    _drain(world, 40, [["--concurrency", "2"], ["--concurrency", "2"]])


def test_four_workers_on_a_team_store_drain_40_runs_each_exactly_once(
    tmp_path: Path, pg_url: str
) -> None:
    """The same race on a PostgreSQL team store: four worker processes, 40 runs, each run and
    each step body exactly once."""
    _drain((tmp_path, env(pg_url, tmp_path / "ledger.txt")), 40, [[], [], [], []])


@pytest.mark.slow
@pytest.mark.timeout(3000)  # a safety net on a busy machine, not a measure
def test_four_workers_drain_200_runs_each_exactly_once(world) -> None:
    """Four separate worker processes on one queue of 200 runs: each run exactly once."""
    _drain(world, 200, [[], [], [], []])


def test_a_gate_approved_after_the_submitter_is_gone_is_continued_by_a_worker(world) -> None:
    """A submitted run parks at its gate (the worker goes on and exits idle); every surface
    says a worker continues it; `airun approve` (the submitting process long gone) says so
    too; the next worker continues the run to completed without re-running the step before
    the gate."""
    folder, e = world
    (folder / "gated.yaml").write_text(GATED)
    run_id = airun(["submit", "gated.yaml"], e, folder).stdout.strip()
    first = airun(["worker", "--exit-when-idle"], e, folder)
    assert first.returncode == 0 and f"run {run_id} waits at a gate" in first.stdout
    db = folder / "s.duckdb"
    assert rows(db, "SELECT state FROM queue") == [("parked",)]
    again = airun(["worker", "--exit-when-idle"], e, folder)  # an open gate: nothing to claim
    assert "stops after 0 run(s)" in again.stdout

    from airun_nb.history.readmodels import run_detail
    from airun_nb.store.database import Store

    store = Store.open(db, create=False)
    detail = run_detail(store, run_id)
    store.release()
    assert detail["state"] == "waiting for approval"
    assert "a worker serving queue default continues it" in detail["resumed_by"]

    approved = airun(["approve", run_id, "review"], {**e, "AIRUN_USER": "lead"}, folder)
    assert approved.returncode == 0, approved.stderr
    assert "a worker serving queue default continues it" in approved.stdout
    from airun_nb.service.pages import decided_flash  # what the approvals page then says

    store = Store.open(db, create=False)
    decided = {"run_id": run_id, "gate_id": "review", "status": "approved"}
    flash = decided_flash({**decided, "decision": "approved"}, "lead", store)
    after = run_detail(store, run_id)
    store.release()
    assert "a worker serving queue default continues it" in flash
    assert after["state"] == "approved, waiting to resume"
    assert "a worker serving queue default continues it" in after["resumed_by"]

    last = airun(["worker", "--exit-when-idle"], e, folder)
    assert f"run {run_id} completed" in last.stdout, last.stdout
    assert counts(folder / "ledger.txt") == {(run_id, "prepare"): 1, (run_id, "publish"): 1}
    assert rows(db, "SELECT status FROM runs") == [("completed",)]
    assert rows(db, "SELECT state, claims FROM queue") == [("done", 2)]


def test_a_run_launched_outside_a_queue_and_decided_after_its_process_died_is_adopted(
    world,
) -> None:
    """A run started by a script (not submitted) stops at a gate and the script exits; once
    the gate is approved a worker of the default queue continues it: not left "approved,
    waiting to resume"."""
    folder, e = world
    (folder / "gated.yaml").write_text(GATED)
    script = (
        "from airun_nb.workflow import Workflow\n"
        "r = Workflow.from_file('gated.yaml').run()\n"
        "print(r.run_id, r.status)\n"
    )
    started = subprocess.run(
        [sys.executable, "-c", script],
        env=e,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    run_id, status = started.stdout.split()
    assert status == "waiting"
    idle = airun(["worker", "--exit-when-idle"], e, folder)  # the gate is open: not its run
    assert "stops after 0 run(s)" in idle.stdout
    assert airun(["approve", run_id, "review"], {**e, "AIRUN_USER": "lead"}, folder).returncode == 0
    adopted = airun(["worker", "--exit-when-idle"], e, folder)
    assert f"run {run_id} completed" in adopted.stdout, adopted.stdout
    assert counts(folder / "ledger.txt") == {(run_id, "prepare"): 1, (run_id, "publish"): 1}


def test_exit_when_idle_serves_only_its_queues(world) -> None:
    """A worker with --exit-when-idle on an empty queue exits 0 at once; a run on another
    queue is left queued for that queue's workers, which run it."""
    folder, e = world
    (folder / "wf.yaml").write_text(TWO_STEPS)
    run_id = airun(["submit", "wf.yaml", "--queue", "nightly"], e, folder).stdout.strip()
    idle = airun(["worker", "--exit-when-idle"], e, folder)
    assert idle.returncode == 0 and "stops after 0 run(s)" in idle.stdout
    db = folder / "s.duckdb"
    assert rows(db, "SELECT status FROM runs") == [("queued",)]
    served = airun(["worker", "--queue", "nightly", "--exit-when-idle"], e, folder)
    assert f"run {run_id} completed" in served.stdout
    assert rows(db, "SELECT status FROM runs") == [("completed",)]


def test_sigterm_hands_the_run_back_and_another_worker_finishes_it(world) -> None:
    """SIGTERM to a worker in the middle of a step: the worker records the run interrupted,
    hands it back to the queue and exits 0; the next worker resumes it, and the step that had
    finished before the signal does not run again."""
    folder, e = world
    (folder / "held.yaml").write_text(HELD)
    run_id = airun(["submit", "held.yaml"], e, folder).stdout.strip()
    w = worker([], e, folder)
    wait_for((folder, "ledger.txt.holding.*"), w)
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=TIMEOUT) == 0, said(w)
    assert "handed back" in said(w)
    db = folder / "s.duckdb"
    assert rows(db, "SELECT status FROM runs") == [("interrupted",)]
    assert rows(db, "SELECT state FROM queue") == [("queued",)]
    (folder / "ledger.txt.release").write_text("")
    last = airun(["worker", "--exit-when-idle"], e, folder)
    assert f"run {run_id} completed" in last.stdout, last.stdout
    ran = counts(folder / "ledger.txt")
    assert ran == {(run_id, "first"): 1, (run_id, "slow"): 1, (run_id, "last"): 1}


def test_an_idle_worker_sends_the_reminders_of_a_parked_runs_gate(world) -> None:
    """A submitted run parks at a gate with `remind: 1s` and nobody else watches the store (no
    kernel, no service): the idle worker is the watcher, and the gate's reminder is recorded;
    SIGTERM then stops the worker cleanly."""
    folder, e = world
    (folder / "gated.yaml").write_text(
        GATED.replace('{message: "Publish?"}', '{message: "Publish?", remind: 1s}')
    )
    run_id = airun(["submit", "gated.yaml"], e, folder).stdout.strip()
    w = worker([], e, folder)
    db = e["AIRUN_DB"]

    def reminded() -> bool:
        if w.poll() is not None:
            raise AssertionError(f"the worker ended: {said(w)}")
        found = rows(
            db, f"SELECT count(*) FROM events WHERE run_id = '{run_id}' AND kind = 'gate_reminded'"
        )
        return found[0][0] > 0

    try:
        deadline = time.monotonic() + TIMEOUT  # a safety net: the reminder ends the wait
        while not reminded():
            assert time.monotonic() < deadline, "the idle worker sent no reminder"
            time.sleep(0.2)
    finally:
        w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=TIMEOUT) == 0, said(w)
    assert rows(db, f"SELECT status FROM runs WHERE run_id = '{run_id}'") == [("waiting",)]
