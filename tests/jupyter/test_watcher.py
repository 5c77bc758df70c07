"""The kernel's gate watcher: a decision recorded elsewhere reaches the widget even when a look
at the store fails (another process holding the store longer than the lock timeout, as on a
loaded machine). Real store file, real `airun approve` and holder processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airun_nb import Workflow
from airun_nb.jupyter.watcher import GateWatcher
from support import AIRUN

GATED = """\
name: watched
steps:
  - id: review
    approval: {message: "Ship it?"}
  - id: ship
    needs: [review]
    python: result = 1
"""

HOLD = """\
import pathlib, sys, time
from airun_nb.store.opening import open_store
store = open_store(sys.argv[1])
with store.session("holding the store"):
    pathlib.Path(sys.argv[2]).write_text("held")
    while not pathlib.Path(sys.argv[3]).exists():
        time.sleep(0.05)
"""
SAFETY = 120.0  # seconds: a safety net only, every wait ends on an event first


class Widget:
    """What the watcher needs of a gate's widget, and what it was told."""

    def __init__(self, db: Path, run_id: str) -> None:
        self.db, self.run_id, self.gate_id = str(db), run_id, "review"
        self.row: dict[str, Any] = {"deadline": None}
        self.decided = threading.Event()
        self.seen: dict[str, Any] = {}

    def decided_elsewhere(self, row: dict[str, Any]) -> None:
        self.seen = row
        self.decided.set()

    def deadline_reached(self) -> None:
        raise AssertionError("the gate has no deadline")


def _until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + SAFETY
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_a_look_that_failed_while_the_store_was_busy_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bob approves from the terminal; then another process holds the store past the lock
    timeout, so the watcher's look fails; the watcher looks again (not taking the failed look
    for a read), and once the store is free the widget hears of bob's decision."""
    db = tmp_path / "s.duckdb"
    run = Workflow.from_yaml(GATED).run(db=db)
    assert run.status == "waiting"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    approved = subprocess.run(
        [*AIRUN, "approve", run.run_id, "review", "--db", str(db)],
        env={**env, "AIRUN_USER": "bob", "AIRUN_IDENTITY": "env"},
        capture_output=True,
        text=True,
        timeout=SAFETY,
    )
    assert approved.returncode == 0, approved.stderr
    held, let_go = tmp_path / "held", tmp_path / "let-go"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), str(held), str(let_go)])
    try:
        _until(held.exists, "the other process to hold the store")
        monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "1")
        watcher, widget = GateWatcher(), Widget(db, run.run_id)
        watcher.watch(widget)
        # Two looks while the store is held: the first failed, and was made again.
        _until(lambda: watcher.reads >= 2, "the watcher to look again after a failed look")
        assert not widget.decided.is_set()
    finally:
        let_go.write_text("go")
        assert holder.wait(timeout=SAFETY) == 0
    assert widget.decided.wait(SAFETY), "the decision never reached the widget"
    assert widget.seen["status"] == "approved" and widget.seen["actor"] == "bob"
    watcher.clear()
