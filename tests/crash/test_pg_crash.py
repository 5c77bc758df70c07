"""Crashes on the PostgreSQL team store: a process SIGKILLed mid-step (and after its gate was
approved, mid-continuation), then three processes resume the run at the same moment.

Exactly one of them executes the rest of the run; the others are refused ("run is busy") or
find nothing left to do, and no step that finished runs twice: a ledger file outside the store
counts every step body with the pid that ran it. Real processes, real SIGKILL, a real server;
the dead owner is told apart by its run lock, which the server dropped with its connection.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import airun_nb
from support.postgres import REPO

BODIES = textwrap.dedent(
    """\
    import os, pathlib, time

    def _tick(name):
        folder = pathlib.Path(os.environ["PG_CRASH_DIR"])
        with open(folder / "ledger", "a") as out:
            out.write(f"{name} {os.getpid()}\\n")
        if os.environ.get("PG_CRASH_HANG") == name:
            (folder / "hanging").touch()
            time.sleep(600)
        return name

    def a():
        return _tick("a")

    def b():
        return _tick("b")

    def c():
        return _tick("c")
    """
)

PLAIN = """
name: crashy
steps:
  - id: a
    call: pgcrashbodies:a
  - id: b
    call: pgcrashbodies:b
    needs: [a]
  - id: c
    call: pgcrashbodies:c
    needs: [b]
"""
GATED = """
name: crashy
steps:
  - id: a
    call: pgcrashbodies:a
  - id: gate
    needs: [a]
    approval: {message: "go?"}
  - id: b
    call: pgcrashbodies:b
    needs: [gate]
  - id: c
    call: pgcrashbodies:c
    needs: [b]
"""

RUNNER = textwrap.dedent(
    """\
    import os, pathlib, sys, time
    import airun_nb
    from airun_nb import Workflow
    folder = pathlib.Path(os.environ["PG_CRASH_DIR"])
    wf = Workflow.from_yaml((folder / "wf.yaml").read_text())
    mode = sys.argv[1]
    if mode == "start":
        result = wf.run(db=os.environ["PG_CRASH_DB"])
    else:
        (folder / f"ready-{os.getpid()}").touch()
        while not (folder / "go").exists():
            time.sleep(0.01)
        try:
            result = wf.run(db=os.environ["PG_CRASH_DB"], resume=sys.argv[2])
        except airun_nb.RunBusy as exc:
            print("BUSY", exc.message)
            sys.exit(0)
    print("STATUS", result.run_id, result.status)
    """
)


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _ledger(folder: Path) -> list[tuple[str, int]]:
    lines = (folder / "ledger").read_text().split("\n")
    return [(ln.split()[0], int(ln.split()[1])) for ln in lines if ln.strip()]


def _env(folder: Path, url: str, hang: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PG_CRASH_DIR=str(folder), PG_CRASH_DB=url, AIRUN_USER="analyst")
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO)])
    env.pop("PG_CRASH_HANG", None)
    if hang:
        env["PG_CRASH_HANG"] = hang
    return env


@pytest.mark.slow
@pytest.mark.parametrize("where", ["mid-step", "after-the-gate"])
def test_killed_run_resumed_by_three_processes_at_once(
    pg_url: str, tmp_path: Path, where: str
) -> None:
    """SIGKILL the process executing `b`; three processes then resume the run at once: one
    of them runs `b` again (it was in flight) and `c`, `a` never runs again, and the run ends
    completed."""
    (tmp_path / "pgcrashbodies.py").write_text(BODIES)
    (tmp_path / "wf.yaml").write_text(GATED if where == "after-the-gate" else PLAIN)
    (tmp_path / "runner.py").write_text(RUNNER)
    runner = [sys.executable, str(tmp_path / "runner.py")]
    if where == "after-the-gate":
        first = subprocess.run(
            [*runner, "start"],
            env=_env(tmp_path, pg_url, None),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "waiting" in first.stdout, first.stdout + first.stderr
        run_id = first.stdout.split()[1]
        airun_nb.approve(run_id, "gate", by="lead", db=pg_url)
        victim = subprocess.Popen(
            [*runner, "resume", run_id],
            env=_env(tmp_path, pg_url, "b"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        (tmp_path / "go").touch()
    else:
        victim = subprocess.Popen(
            [*runner, "start"],
            env=_env(tmp_path, pg_url, "b"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    _wait_for(tmp_path / "hanging", victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    (tmp_path / "go").unlink(missing_ok=True)
    run_id = airun_nb.runs(db=pg_url)["run_id"].iloc[0]
    assert airun_nb.runs(db=pg_url)["status"].iloc[0] == "running"  # as the dead owner left it
    before = _ledger(tmp_path)
    for ready in tmp_path.glob("ready-*"):
        ready.unlink()

    resumers = [
        subprocess.Popen(
            [*runner, "resume", run_id],
            env=_env(tmp_path, pg_url, None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=300) for p in resumers]
    assert [p.returncode for p in resumers] == [0, 0, 0], outs
    after = _ledger(tmp_path)[len(before) :]
    # Exactly one process executed the rest of the run.
    assert len({pid for _, pid in after}) == 1, after
    assert Counter(step for step, _ in after) == Counter({"b": 1, "c": 1})
    total = Counter(step for step, _ in _ledger(tmp_path))
    assert total == Counter({"a": 1, "b": 2, "c": 1})  # b was in flight at the kill
    winners = [out for out, _ in outs if "completed" in out]
    assert len(winners) >= 1
    for out, err in outs:
        assert out.startswith(("STATUS", "BUSY")), out + err
        assert "Traceback" not in err
    final = airun_nb.runs(db=pg_url).set_index("run_id").loc[run_id]
    assert final["status"] == "completed"
    attempts = airun_nb.attempts(run_id, db=pg_url)
    b_attempts = attempts[(attempts["step_id"] == "b") & (attempts["phase"] == "execute")]
    assert len(b_attempts) == 2  # the second attempt of b is recorded as such
