"""Who is executing a run on the team store, seen from another process: while the owner runs a
step its run lock is held and its lease (holder, lease_until on the server's clock) is readable;
once the owner is SIGKILLed the server drops its lock and the run's owner is dead to everyone.
A real server, a real process, a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airun_nb.store.opening import open_store
from support.postgres import REPO

OWNER = textwrap.dedent(
    """\
    import os, pathlib, sys, time
    from airun_nb import Workflow
    folder = pathlib.Path(sys.argv[2])

    def hang():
        (folder / "inside").touch()
        time.sleep(600)

    Workflow.from_yaml("name: held\\nsteps:\\n  - id: h\\n    call: hang\\n").run(
        db=sys.argv[1], namespace={"hang": hang}
    )
    """
)


def test_a_live_owner_holds_its_run_and_a_killed_one_lets_go(pg_url: str, tmp_path: Path) -> None:
    """The owner's run lock and lease are visible from here while it runs; after SIGKILL the
    run's owner is no longer alive, so any host may resume it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, pg_url, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "inside").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    store: Any = open_store(pg_url)
    (row,) = store.runs_with_status("running")
    assert row["owner_pid"] == proc.pid
    assert store.owner_alive(row)
    lease = store.run_lease(row["run_id"])
    assert lease["owner_pid"] == proc.pid
    now = datetime(1970, 1, 1) + timedelta(seconds=store.clock())
    assert lease["lease_until"] > now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60  # the server notices the closed connection
    while store.owner_alive(row):
        assert time.monotonic() < deadline, "the dead owner's run lock was never dropped"
        time.sleep(0.1)
    assert store.run_row(row["run_id"])["status"] == "running"  # as it was left: resumable
