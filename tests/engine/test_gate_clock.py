"""Gate deadlines are on the store's clock: no process's own clock decides an approval.

Real processes whose clocks are shifted (an injected time source, ``AIRUN_CLOCK_OFFSET``): an
opener a minute slow, a decider two minutes fast, a resumer two minutes fast. A 30-minute gate
decided at once is approved every time, never timed out; the stored deadline is 30 minutes from
the store's time; each shifted process says so in one line and the store records it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from support import AIRUN

OPEN = """
import sys
import airun_nb
wf = airun_nb.Workflow.from_yaml(
    "name: clocked\\nsteps:\\n  - id: a\\n    python: result = 1\\n"
    "  - id: gate\\n    needs: [a]\\n    approval:\\n      message: go?\\n"
    "      timeout: 30m\\n      allow_self_approval: true\\n"
    "  - id: b\\n    needs: [gate]\\n    python: result = 2\\n"
)
run = wf.run(db=sys.argv[1])
print("RUN", run.run_id, run.status, flush=True)
"""


def _env(offset: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(AIRUN_CLOCK_OFFSET=offset, AIRUN_USER="alice", AIRUN_IDENTITY="env")
    return env


def _open(db: Path, offset: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", OPEN, str(db)],
        env=_env(offset),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("RUN "))
    _, run_id, status = line.split()
    assert status == "waiting"
    return run_id, done.stderr


def _airun(db: Path, offset: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIRUN, *args, "--db", str(db)],
        env=_env(offset),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _query(db: Path, sql: str, params: list[object]) -> list[tuple[object, ...]]:
    from airun_nb.store.database import Store

    store = Store.open(db)  # folds every process's journal first
    try:
        return [tuple(r) for r in store.query(sql, params)]
    finally:
        store.release()


def _gate(db: Path, run_id: str) -> tuple[str, float, float, str | None]:
    ((status, opened_at, deadline, channel),) = _query(
        db,
        "SELECT status, epoch(opened_at), epoch(deadline), channel FROM approvals WHERE run_id = ?",
        [run_id],
    )
    return str(status), float(opened_at), float(deadline), channel  # type: ignore[arg-type]


def _events(db: Path, kind: str) -> list[object]:
    return [r[0] for r in _query(db, "SELECT detail FROM events WHERE kind = ?", [kind])]


def _said(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if "clock is" in x and "the store's" in x]


def test_a_slow_openers_gate_is_approved_by_a_decider_on_time(tmp_path: Path) -> None:
    """The opener is 60 s slow: its 30-minute deadline is still 30 minutes from the store's
    time; the decider's approval is recorded as an approval and the run completes."""
    db = tmp_path / "s.duckdb"
    before = time.time()
    run_id, opener_err = _open(db, "-60")
    said = _said(opener_err)
    assert len(said) == 1 and "60 s behind the store's" in said[0], opener_err
    approved = _airun(db, "0", "approve", run_id, "gate")
    assert approved.returncode == 0, approved.stderr
    status, opened_at, deadline, channel = _gate(db, run_id)
    assert (status, channel) == ("approved", "cli")
    assert deadline - opened_at == 30 * 60
    assert opened_at >= before - 5  # the store's time, not the opener's minute-slow one
    resumed = _airun(db, "0", "resume", run_id)
    assert resumed.returncode == 0 and "completed" in resumed.stdout, resumed.stderr
    assert len(_events(db, "clock_skew")) == 1


def test_a_fast_deciders_approval_is_not_turned_into_a_timeout(tmp_path: Path) -> None:
    """The decider's clock is 31 minutes fast, past the gate's deadline by its own reckoning:
    its approval is still an approval."""
    db = tmp_path / "s.duckdb"
    run_id, opener_err = _open(db, "0")
    assert _said(opener_err) == []
    approved = _airun(db, str(31 * 60), "approve", run_id, "gate")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    said = _said(approved.stderr)
    assert len(said) == 1 and "ahead of the store's" in said[0]
    status, _, _, channel = _gate(db, run_id)
    assert (status, channel) == ("approved", "cli")
    assert _airun(db, "0", "resume", run_id).returncode == 0


def test_a_fast_resumer_does_not_time_the_gate_out(tmp_path: Path) -> None:
    """A process 31 minutes fast resumes the waiting run: the gate is still open (the run waits
    again), not rejected for a deadline that has not passed."""
    db = tmp_path / "s.duckdb"
    run_id, _ = _open(db, "0")
    resumed = _airun(db, str(31 * 60), "resume", run_id)
    assert "waiting" in resumed.stdout, resumed.stdout + resumed.stderr
    status, _, _, channel = _gate(db, run_id)
    assert status == "open" and channel is None
    assert len(_events(db, "clock_skew")) == 1
