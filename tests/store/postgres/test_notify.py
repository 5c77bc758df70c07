"""Waiting on the team store: another process's commit wakes a waiter through the server's
LISTEN/NOTIFY, and a kernel's gate watcher learns of a decision taken by `airun approve`
in another process. A real server, real processes; waits are on events with long safety
timeouts, never on sleeps."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

from airun_nb import Workflow
from airun_nb.jupyter.watcher import GateWatcher
from airun_nb.store.opening import open_store
from support import AIRUN
from support.postgres import REPO

COMMIT = (
    "import sys, time\n"
    "from airun_nb.store.opening import open_store\n"
    "from airun_nb.store import transitions\n"
    "store = open_store(sys.argv[1])\n"
    "transitions.commit(store, [{'t': 'run', 'run_id': 'other', 'workflow': 'w', "
    "'status': 'running', 'created_at': time.time()}])\n"
)


def test_a_commit_elsewhere_wakes_a_waiter(pg_url: str) -> None:
    """A thread waits for a change; another process commits a run: the wait ends notified
    (True), not by its 120 s safety timeout, and the run is there to read."""
    store = open_store(pg_url)
    token = store.change_token()
    woke: list[bool] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        woke.append(store.wait_for_change(120))

    waiter = threading.Thread(target=wait)
    waiter.start()
    started.wait(60)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", COMMIT, pg_url], env=env, check=True, timeout=120)
    waiter.join(180)
    assert woke == [True]
    assert store.change_token() != token
    assert store.run_row("other") is not None


class _Widget:
    """What the watcher needs of a gate's widget: where the gate is, and what to do when it is
    decided elsewhere."""

    def __init__(self, db: Any, run_id: str, gate_id: str) -> None:
        self.db, self.run_id, self.gate_id = db, run_id, gate_id
        self.row: dict[str, Any] = {}
        self.decided = threading.Event()
        self.decision: dict[str, Any] = {}

    def decided_elsewhere(self, row: dict[str, Any]) -> None:
        self.decision = row
        self.decided.set()

    def deadline_reached(self) -> None:
        raise AssertionError("no deadline was set")


def test_the_gate_watcher_sees_a_decision_from_another_process(
    pg_url: str, monkeypatch: Any
) -> None:
    """A kernel watches a waiting gate on the team store; `airun approve` in another process
    decides it; the watcher hands the decided row to the widget."""
    run = Workflow.from_yaml(
        "name: watched\nsteps:\n  - id: g\n    approval: {message: ok?}\n"
    ).run(db=pg_url)
    assert run.status == "waiting"
    store = open_store(pg_url)
    watcher = GateWatcher()
    widget = _Widget(store.path, run.run_id, "g")
    watcher.watch(widget)
    env = {**os.environ, "AIRUN_USER": "lead"}
    done = subprocess.run(
        [*AIRUN, "approve", run.run_id, "g", "--db", pg_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert widget.decided.wait(120)
    assert widget.decision["status"] == "approved" and widget.decision["actor"] == "lead"
    watcher.clear()
