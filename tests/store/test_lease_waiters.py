"""A process killed while it waits for the lease leaves a marker in ``<store>.waiters/``; the
next process that looks removes it, and so does ``airun doctor --repair``. Real processes: a
holder, a waiter SIGKILLed while it waits, the real `airun doctor`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import AIRUN

HOLD = """
import sys, time
from pathlib import Path
from airun_nb.store.lease import Lease
lease = Lease(Path(sys.argv[1]))
lease.acquire(60, "holding for a test")
print("HELD", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.01)
lease.release()
"""

WAIT = """
import sys
from pathlib import Path
from airun_nb.store.lease import Lease
Lease(Path(sys.argv[1])).acquire(600, "waiting for a test")
"""


def _wait_for(cond, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _dead_waiter(tmp_path: Path, db: Path) -> tuple[subprocess.Popen[str], Path, str]:
    """A holder that keeps the lease until ``go`` exists, and the marker of a waiter that was
    SIGKILLed while waiting for it."""
    go = tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), str(go)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
    waiter = subprocess.Popen([sys.executable, "-c", WAIT, str(db)])
    waiters = db.with_name(db.name + ".waiters")
    marker = f"{waiter.pid}-"
    _wait_for(
        lambda: waiters.exists() and any(p.name.startswith(marker) for p in waiters.iterdir()),
        "the waiter's marker",
    )
    os.kill(waiter.pid, signal.SIGKILL)
    assert waiter.wait(timeout=60) == -signal.SIGKILL
    names = [p.name for p in waiters.iterdir()]
    assert any(n.startswith(marker) for n in names)  # the dead process could not remove it
    return holder, go, marker


def test_the_next_process_that_looks_removes_a_dead_waiters_marker(tmp_path: Path) -> None:
    """The holder asks "is anyone waiting?": nobody is, and the dead waiter's marker is gone,
    so no holder hands the lease over for a process that no longer exists."""
    from airun_nb.store.lease import Lease

    db = tmp_path / "s.duckdb"
    holder, go, marker = _dead_waiter(tmp_path, db)
    try:
        assert Lease(db).waiters() is False
        waiters = db.with_name(db.name + ".waiters")
        assert not any(p.name.startswith(marker) for p in waiters.iterdir())
    finally:
        go.touch()
        holder.wait(timeout=60)


def test_a_live_waiters_marker_is_kept(tmp_path: Path) -> None:
    """A process that really waits is still seen as waiting (its marker stays)."""
    from airun_nb.store.lease import Lease

    db = tmp_path / "s.duckdb"
    go = tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), str(go)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
    waiter = subprocess.Popen([sys.executable, "-c", WAIT, str(db)])
    waiters = db.with_name(db.name + ".waiters")
    try:
        _wait_for(
            lambda: (
                waiters.exists()
                and any(p.name.startswith(f"{waiter.pid}-") for p in waiters.iterdir())
            ),
            "the waiter's marker",
        )
        assert Lease(db).waiters() is True
        assert Lease(db).dead_waiters(remove=True) == []
        assert any(p.name.startswith(f"{waiter.pid}-") for p in waiters.iterdir())
    finally:
        go.touch()
        holder.wait(timeout=60)
        assert waiter.wait(timeout=60) == 0  # it got the lease once the holder let go


def test_doctor_reports_and_repair_removes_a_dead_waiters_marker(tmp_path: Path) -> None:
    """`airun doctor` names the dead waiter's marker as a problem; `--repair` removes it."""
    db = tmp_path / "s.duckdb"
    from support import faults as fs

    assert fs.run(db, tmp_path / "ledger.txt").returncode == 0
    holder, go, marker = _dead_waiter(tmp_path, db)
    go.touch()
    holder.wait(timeout=60)
    go.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    seen = subprocess.run(
        [*AIRUN, "doctor", "--db", str(db)], env=env, capture_output=True, text=True, timeout=120
    )
    assert seen.returncode == 1, seen.stdout + seen.stderr
    line = next(x for x in seen.stdout.splitlines() if x.startswith("lease waiters"))
    assert "problem" in line and marker in line
    holder, go, marker = _dead_waiter(tmp_path, db)  # and another one, for the repair
    go.touch()
    holder.wait(timeout=60)
    fixed = subprocess.run(
        [*AIRUN, "doctor", "--repair", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    line = next(x for x in fixed.stdout.splitlines() if x.startswith("lease waiters"))
    assert "repaired" in line and "removed 1" in line
    waiters = db.with_name(db.name + ".waiters")
    assert not any(p.name.startswith(marker) for p in waiters.iterdir())
