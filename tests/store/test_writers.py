"""Several processes writing one store at once: each appends to a journal slot of its own.

Real processes on one real DuckDB file. Writers never wait for each other to append; whoever
holds the lease folds every slot. Nothing may be lost or folded twice, and a slot left by a
process killed mid-run is folded by the next holder, so its run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airun_nb
from airun_nb.store.journal import Journal, slot_path
from support import faults as fs

WRITER = r"""
import json, os, sys, time
from pathlib import Path
import airun_nb
db, who, runs, folder = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
wf = airun_nb.Workflow.from_dict({
    "name": "parallel",
    "params": {"who": ""},
    "steps": [
        {"id": "a", "python": "result = params['who']"},
        {"id": "b", "python": "result = steps['a'].output + '-b'", "needs": ["a"]},
        {"id": "c", "python": "result = steps['b'].output + '-c'", "needs": ["b"]},
    ],
})
(folder / f"ready-{who}").touch()
while len(list(folder.glob("ready-*"))) < int(sys.argv[5]):
    time.sleep(0.005)
ids = []
for i in range(runs):
    r = wf.run(db=db, params={"who": f"{who}-{i}"}, new=True)
    assert r.status == "completed", r.status
    ids.append(r.run_id)
    if i == 0:  # every writer has the store open before the rest of the runs
        (folder / f"first-{who}").touch()
        while len(list(folder.glob("first-*"))) < int(sys.argv[5]):
            time.sleep(0.005)
print("IDS " + json.dumps(ids))
"""

READER = r"""
import sys, time
from pathlib import Path
import airun_nb
db, stop = Path(sys.argv[1]), Path(sys.argv[2])
reads = 0
while not db.exists() and not stop.exists():  # reading never creates the store: wait for it
    time.sleep(0.01)
while not stop.exists():
    airun_nb.runs(db=db)
    reads += 1
    time.sleep(0.05)
print("READS", reads)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_USER"] = "tester"
    return env


def test_parallel_writers_lose_nothing_and_fold_nothing_twice(tmp_path: Path) -> None:
    db, writers, runs = tmp_path / "airun.duckdb", 4, 30
    stop = tmp_path / "stop"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(db),
                f"w{k}",
                str(runs),
                str(tmp_path),
                str(writers),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for k in range(writers)
    ]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        stop.touch()
        r_out, r_err = reader.communicate(timeout=120)
        for p in procs:
            p.kill()
    ids: list[str] = []
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "busy" not in err and "locked" not in err, err
        ids += json.loads(out.split("IDS ", 1)[1])
    assert reader.returncode == 0, r_err
    assert int(r_out.split()[-1]) > 0
    # more than one journal slot was written: the writers appended side by side
    assert slot_path(db, 1).exists()

    stored = airun_nb.runs(db=db)
    assert sorted(stored["run_id"]) == sorted(ids)
    assert set(stored["status"]) == {"completed"}
    steps = airun_nb.steps(db=db)
    assert len(steps) == writers * runs * 3 and set(steps["status"]) == {"completed"}
    assert len(set(zip(steps["run_id"], steps["step_id"], strict=True))) == len(steps)
    started = airun_nb.query(
        "SELECT run_id, count(*) AS n FROM events WHERE kind = 'run_started' GROUP BY run_id",
        db=db,
    ).itertuples(index=False)
    started = [(r, n) for r, n in started]
    assert sorted(r for r, _ in started) == sorted(ids)
    assert {n for _, n in started} == {1}  # no record folded twice


def test_a_killed_writers_slot_is_folded_and_its_run_resumes(tmp_path: Path) -> None:
    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    # This process takes the first slot (as a writer that is appending would), so the child
    # killed in step c writes its records to the second slot.
    holder = Journal(db)
    holder.open()
    try:
        assert holder.slot == 0
        killed = fs.run(db, ledger, AIRUN_TEST_KILL="c")
        assert killed.returncode == -9, killed.stderr
        assert fs.ledger(ledger) == {"a": 1, "b": 1, "c": 1}
        second = slot_path(db, 1)
        assert second.stat().st_size > 200  # the killed process's records, not folded yet
        # The next process folds the dead slot and resumes the run where it stopped.
        resumed = fs.run(db, ledger)
        assert resumed.returncode == 0, resumed.stderr
        assert fs.ledger(ledger) == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}
        assert "StoreWarning" not in resumed.stderr  # a clean slot: nothing was damaged
    finally:
        holder.close()
    runs = airun_nb.runs(db=db)
    assert list(runs["status"]) == ["completed"]
    assert len(airun_nb.steps(runs["run_id"][0], db=db)) == len(fs.STEPS)


@pytest.mark.parametrize("slot", [0, 1])
def test_slot_names(tmp_path: Path, slot: int) -> None:
    db = tmp_path / "x.duckdb"
    assert slot_path(db, slot).name == ("x.duckdb.journal" if slot == 0 else "x.duckdb.journal.2")
