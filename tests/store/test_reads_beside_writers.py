"""Readers beside writers: a read sees every change committed before it began.

Writers fold their own records in small batches as they go (a reader folds only a short tail);
these tests hold the guarantee that makes that safe: whatever the writers are doing, a reader
in another process sees every run another process reported finished before the read started,
through every kind of read (the history frame, a named read, the command line), and never a
raw lock error. Real processes on one real DuckDB file; nothing here is timed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import airun_nb
from airun_nb.store.database import Store
from support import AIRUN

WRITER = r"""
import sys, time
from pathlib import Path
import airun_nb
db, who, log, stop = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
wf = airun_nb.Workflow.from_dict({
    "name": "beside",
    "params": {"who": ""},
    "steps": [
        {"id": "a", "python": "result = params['who']"},
        {"id": "b", "python": "result = steps['a'].output + '-b'", "needs": ["a"]},
    ],
})
i = 0
with log.open("a") as out:
    while not stop.exists() and i < 5000:
        r = wf.run(db=db, params={"who": f"{who}-{i}"}, new=True)
        assert r.status == "completed", r.status
        out.write(r.run_id + "\n")  # reported finished: a read that starts now must see it
        out.flush()
        i += 1
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_USER"] = "tester"
    return env


def _finished(logs: list[Path]) -> list[str]:
    out: list[str] = []
    for log in logs:
        if log.exists():
            out += [line for line in log.read_text().splitlines() if line.strip()]
    return out


def _wait_for(logs: list[Path], n: int, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120  # a safety net only: the wait is on the writers' logs
    while len(_finished(logs)) < n:
        assert all(p.poll() is None for p in procs), "a writer stopped early"
        assert time.monotonic() < deadline, "the writers made no runs"
        time.sleep(0.01)


def test_a_read_sees_every_run_finished_elsewhere_before_it_began(tmp_path: Path) -> None:
    """Two processes keep running workflows (their records folded as they go, by whichever
    process holds the store). Each time, the runs they reported finished *before* a read
    began are all in what the read returns, completed, through ``runs()``, a named read
    (``run_row``) and ``airun runs``; no read fails."""
    db = tmp_path / "airun.duckdb"
    airun_nb.Workflow.from_dict(
        {"name": "seed", "steps": [{"id": "s", "python": "result = 1"}]}
    ).run(db=db)
    Store.open(db).release()
    stop = tmp_path / "stop"
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), f"w{i}", str(logs[i]), str(stop)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        _wait_for(logs, 4, procs)
        for round_ in range(6):
            before = _finished(logs)  # finished before the reads below began
            frame = airun_nb.runs(db=db)
            seen = dict(zip(frame["run_id"], frame["status"], strict=True))
            missing = [r for r in before if r not in seen]
            assert not missing, f"round {round_}: runs() misses {missing[:3]}"
            assert all(seen[r] == "completed" for r in before)

            newest = _finished(logs)[-1]
            row = Store.open(db).run_row(newest)
            assert row is not None and row["status"] == "completed", (newest, row)

            before = _finished(logs)
            done = subprocess.run(
                [*AIRUN, "runs", "--db", str(db), "--workflow", "beside", "--limit", "100000"],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            missing = [r for r in before if r not in done.stdout]
            assert not missing, f"round {round_}: airun runs misses {missing[:3]}"
            _wait_for(logs, len(before) + 2, procs)  # the writers went on meanwhile
    finally:
        stop.touch()
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
    total = len(airun_nb.runs(db=db))
    assert total == 1 + len(_finished(logs))  # every run once: nothing lost or doubled
