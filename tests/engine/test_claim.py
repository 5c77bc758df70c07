"""Claiming a run is atomic: of N processes that resume one crashed run, exactly one wins.

Real processes, real SIGKILL: a first process runs the :mod:`support.faults` workflow and kills
itself in step ``c``; then N fresh processes (N = 2, 3, 4), started 0-500 ms apart, resume it at
once. Exactly one run id exists afterwards, every finished step body ran once (ledger file),
and every loser got the one-line "run is busy" message naming the winner. The processes are
forked from a server that has airun_nb imported already, so their starts are as far apart as
the test says (see :class:`support.faults.Forker`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from support import faults as fs


@pytest.fixture(scope="module")
def forker() -> Iterator[fs.Forker]:
    f = fs.Forker()
    yield f
    f.close()


def _crashed_run(tmp_path: Path, forker: fs.Forker) -> tuple[Path, Path, str]:
    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    child = forker.spawn("_main", [str(db)], fs.env(ledger, AIRUN_TEST_KILL="c"), tmp_path)
    code, _, err = child.wait()
    assert code == -9, err
    rows = _runs(db)
    assert [s for _, s, _ in rows] == ["running"]
    return db, ledger, rows[0][0]


def _runs(db: Path) -> list[tuple[str, str, int]]:
    """The run rows, read with plain DuckDB after folding the journal through a store."""
    from airun_nb.store.database import Store

    Store.open(db).release()
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT run_id, status, owner_pid FROM runs").fetchall()
    finally:
        con.close()


def _race(
    forker: fs.Forker,
    func: str,
    argv: list[str],
    env: dict[str, str],
    n: int,
    rng: random.Random,
    out: Path,
    go: Path,
) -> list[tuple[int, str, str]]:
    """Start n children 0-500 ms apart; once all but one have exited, let the last one go."""
    delays = [0.0, *sorted(rng.uniform(0, 0.5) for _ in range(n - 1))]
    t0 = time.monotonic()
    children = []
    for delay in delays:
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        children.append(forker.spawn(func, argv, env, out))
    deadline = time.monotonic() + 20  # two winners would both wait here for the go
    while sum(not c.alive() for c in children) < n - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    return [c.wait() for c in children]


@pytest.mark.parametrize("n", [2, 4])
def test_claim_primitive_has_one_winner(tmp_path: Path, forker: fs.Forker, n: int) -> None:
    db, ledger, run_id = _crashed_run(tmp_path, forker)
    rng = random.Random(n)
    for trial in range(2):
        go = tmp_path / f"go-{trial}"
        argv = [str(db), run_id, str(go)]
        results = _race(forker, "claim_main", argv, fs.env(ledger), n, rng, tmp_path, go)
        winners = [r for r in results if r[0] == 0]
        assert len(winners) == 1, results
        pid = int(winners[0][1].split()[1])
        for code, out, _ in results:
            if code != 0:
                assert code == 3, results
                assert out.startswith(
                    f"BUSY run {run_id} is executing in another process (pid {pid} on"
                )
                assert len(out.strip().splitlines()) == 1
        assert _runs(db) == [(run_id, "running", pid)]


TRIALS = [(2, s) for s in range(7)] + [(3, s) for s in range(7)] + [(4, s) for s in range(6)]


@pytest.mark.parametrize(("n", "seed"), TRIALS)
def test_concurrent_resume_runs_each_step_once(
    tmp_path: Path, forker: fs.Forker, n: int, seed: int
) -> None:
    db, ledger, run_id = _crashed_run(tmp_path, forker)
    go = tmp_path / "go"
    env = fs.env(ledger, AIRUN_TEST_WAIT="c", AIRUN_TEST_GO=str(go), AIRUN_LOCK_TIMEOUT="60")
    results = _race(forker, "_main", [str(db)], env, n, random.Random(seed), tmp_path, go)
    winners = [r for r in results if r[0] == 0]
    assert len(winners) == 1, results
    assert f"RUN {run_id} completed" in winners[0][1]
    for code, out, err in results:
        if code != 0:
            assert code == 3, (code, out, err)
            assert err.startswith(f"error: run {run_id} is executing in another process (pid ")
            assert len(err.strip().splitlines()) == 1
    assert [r[:2] for r in _runs(db)] == [(run_id, "completed")]
    # a and b finished before the kill: once. c was cut short: once more. d, e: once.
    assert fs.ledger(ledger) == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}
