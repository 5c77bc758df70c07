"""Power loss: what each ``AIRUN_SYNC`` mode keeps when the bytes the OS had not written are lost.

A real process runs workflows one after another (every step body is counted in a ledger file
outside the store) and prints each run it reports finished; it is SIGKILLed at a random point,
then every journal slot is cut back to the length it had at its last ``fsync`` (the test hook
``AIRUN_TEST_SYNC_LOG`` records each one): exactly what a power loss may take away. DuckDB's
own commits are fsynced by DuckDB. In every mode, every run that was reported finished is in the
store, completed, with all its steps; the step completions lost in between are reported.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import faults as fs

WRITER = """
import sys
import airun_nb
from support import faults
wf = airun_nb.Workflow.from_yaml(faults.WORKFLOW)
for _ in range(int(sys.argv[2])):
    run = wf.run(db=sys.argv[1], new=True)
    print("DONE", run.run_id, run.status, flush=True)
"""

TRIALS = 3


def _power_loss(db: Path, log: Path) -> int:
    """Cut every journal slot back to its last fsynced length; return the bytes dropped."""
    synced: dict[str, tuple[str, int]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            path, gen, size = line.split("\t")
            synced[path] = (gen, int(size))
    dropped = 0
    for slot in sorted(db.parent.glob(db.name + ".journal*")):
        if ".damaged-" in slot.name:
            continue
        data = slot.read_bytes()
        try:
            gen = json.loads(data.split(b"\n", 1)[0])["gen"]
        except (ValueError, KeyError):
            gen = None
        last = synced.get(str(slot))
        keep = last[1] if last is not None and last[0] == gen else 0
        keep = min(keep, len(data))
        dropped += len(data) - keep
        os.truncate(slot, keep)
    return dropped


def _trial(tmp_path: Path, mode: str, rng: random.Random) -> tuple[list[str], int, int]:
    """One kill + power loss; (runs reported finished, steps run, step completions kept)."""
    db, ledger, log = tmp_path / "s.duckdb", tmp_path / "ledger.txt", tmp_path / "synced.log"
    env = fs.env(ledger, AIRUN_SYNC=mode, AIRUN_TEST_SYNC_LOG=str(log))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), "50"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    finished: list[str] = []
    for _ in range(rng.randint(2, 5)):
        line = proc.stdout.readline()
        assert line.startswith("DONE"), (line, proc.stderr.read() if proc.stderr else "")
        finished.append(line.split()[1])
    # then a few more step bodies: the kill lands anywhere in a run
    target = sum(fs.ledger(ledger).values()) + rng.randint(0, len(fs.STEPS) * 2)
    deadline = time.monotonic() + 120
    while sum(fs.ledger(ledger).values()) < target and proc.poll() is None:
        assert time.monotonic() < deadline, "the writer stopped making progress"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    finished += [line.split()[1] for line in out.splitlines() if line.startswith("DONE")]
    _power_loss(db, log)

    from airun_nb.store.database import Store

    store = Store.open(db)
    try:
        runs = dict(store.query("SELECT run_id, status FROM runs"))
        steps = {
            run_id: n
            for run_id, n in store.query(
                "SELECT run_id, count(*) FROM steps WHERE status = 'completed' GROUP BY run_id"
            )
        }
    finally:
        store.release()
    for run_id in finished:
        assert runs.get(run_id) == "completed", (mode, run_id, runs.get(run_id))
        assert steps.get(run_id) == len(fs.STEPS)
    return finished, sum(fs.ledger(ledger).values()), sum(steps.values())


@pytest.mark.parametrize("mode", ["0", "group", "1"])
def test_every_run_reported_finished_survives_a_power_loss(tmp_path: Path, mode: str) -> None:
    """SIGKILL at a random point, then the unsynced journal bytes dropped: each run the
    process reported finished is still completed, with every step, in every mode."""
    rng = random.Random(f"power-{mode}")
    ran = kept = runs = 0
    for trial in range(TRIALS):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        finished, n_ran, n_kept = _trial(folder, mode, rng)
        runs += len(finished)
        ran += n_ran
        kept += n_kept
    # The figure for the docs (run with -s): step bodies run vs completions kept.
    print(f"\nAIRUN_SYNC={mode}: {runs} finished runs kept; {kept} of {ran} step bodies kept")
    assert runs >= 2 * TRIALS


GATED = """
name: gated
steps:
  - id: review
    approval: {message: "Ship?"}
"""


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_decision_from_a_terminal_survives_a_power_loss(tmp_path: Path, verb: str) -> None:
    """`airun approve` and `airun reject` end without folding their decision into DuckDB (the
    next process that holds the store does). Once the command has said what it recorded, the
    decision survives a power loss (its unsynced journal bytes dropped), even with
    ``AIRUN_SYNC=0``."""
    from airun_nb import Workflow
    from airun_nb.store.database import Store

    db, log = tmp_path / "s.duckdb", tmp_path / "synced.log"
    run = Workflow.from_yaml(GATED).run(db=db)
    assert run.status == "waiting"
    Store.open(db).release()  # this process lets go: the command holds the store alone
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(AIRUN_SYNC="0", AIRUN_TEST_SYNC_LOG=str(log), AIRUN_IDENTITY="env")
    env.update(AIRUN_USER="bob")
    said = {"approve": "approved", "reject": "rejected"}[verb]
    done = subprocess.run(
        [sys.executable, "-m", "airun_nb", verb, run.run_id, "review", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{said} gate review of run {run.run_id} as bob")
    assert log.exists()  # the command synced its journal before it said so
    _power_loss(db, log)
    store = Store.open(db)
    try:
        row = store.gate_row(run.run_id, "review")
    finally:
        store.release()
    assert row is not None
    assert (row["status"], row["actor"], row["channel"]) == (said, "bob", "cli")
