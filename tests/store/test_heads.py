"""Re-running a finished cell asks the heads folder, not the lease: it starts its new run while
another process holds the store; anything the folder cannot answer still waits for the store."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import airun_nb
from airun_nb import StoreBusy, Workflow

CELL = """
name: heads
steps:
  - id: a
    python: "result = 1"
  - id: b
    python: "result = 2"
    needs: [a]
"""

HOLD = textwrap.dedent(
    """
    import sys, time, pathlib
    from airun_nb.store.database import Store
    store = Store.open(sys.argv[1])
    with store.session("holding the store for a test"):
        pathlib.Path(sys.argv[2]).write_text("1")
        for _ in range(6000):  # until told to let go (guard: ~60 s)
            if pathlib.Path(sys.argv[3]).exists():
                break
            time.sleep(0.01)
    """
)


def test_rerunning_a_finished_cell_starts_anew_while_another_process_holds_the_store(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cell's last run finished with these very steps: re-running it starts a new run, every
    step executed, without waiting for the process that holds the store. A changed cell must
    compare with what is stored, so it waits for the store (here: gives up, naming the
    holder). Once the holder lets go, the store holds all three runs."""
    first = Workflow.from_yaml(CELL).run(db=db)
    assert first.status == "completed"
    held, go = tmp_path / "held", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), str(held), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(6000):  # wait for the child to hold the store (guard: ~60 s)
            if held.exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert held.exists(), proc.stderr.read() if proc.stderr else ""
        monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "3")
        again = Workflow.from_yaml(CELL).run(db=db)
        assert again.run_id != first.run_id
        assert again.executed == ["a", "b"] and again.replayed == []
        changed = CELL.replace("result = 2", "result = 3")
        with pytest.raises(StoreBusy) as info:
            Workflow.from_yaml(changed).run(db=db)
        assert f"pid {proc.pid}" in str(info.value)
    finally:
        go.write_text("1")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    monkeypatch.delenv("AIRUN_LOCK_TIMEOUT")
    third = Workflow.from_yaml(changed).run(db=db)
    assert third.executed == ["b"] and third.replayed == ["a"]  # seeded from the last run
    statuses = airun_nb.runs(db=db)["status"].tolist()
    assert statuses == ["completed"] * 3
