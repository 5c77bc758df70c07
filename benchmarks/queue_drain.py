"""Queued runs drained by worker processes: runs per second with 1 and with 4 workers.

    python benchmarks/queue_drain.py [--runs 200] [--workers 1,4] [--pg SERVER_URL]

For each worker count: a fresh store in a temporary folder, ``--runs`` runs of a two-step
workflow (inline Python) submitted through the engine's ``submit`` (as ``airun submit`` does),
then that many ``airun worker --exit-when-idle`` processes started at once and waited for. The
time is from the first worker's start to the last one's exit (process start-up included). Every
run must end ``completed`` and every queue row must have been claimed once, else it exits 1.
With ``--pg`` (or ``AIRUN_TEST_PG``) each worker count runs on a fresh database of that server
instead of a store file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKFLOW = {
    "name": "drain",
    "params": {"n": 0},
    "steps": [
        {"id": "a", "python": "result = params['n'] * 2"},
        {"id": "b", "needs": ["a"], "python": "result = steps.a.output + 1"},
    ],
}


def drain(runs: int, workers: int, server: str | None = None) -> tuple[float, float]:
    """(seconds to submit, seconds to drain) on a fresh store (a database of ``server``)."""
    from airun_nb.engine.worker import submit
    from airun_nb.store.opening import open_store
    from airun_nb.workflow import Workflow

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "airun.duckdb")
        if server:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from support.postgres import create_database

            db = create_database(server)
        store = open_store(db)
        spec = Workflow.from_dict(WORKFLOW).spec
        t0 = time.perf_counter()
        for i in range(runs):
            submit(spec, store, params={"n": i})
        submitted = time.perf_counter() - t0
        store.release()
        cmd = [sys.executable, "-m", "airun_nb", "worker", "--exit-when-idle", "--db", db]
        env = {**os.environ, "AIRUN_DB": db}
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([*cmd, "--poll", "0.05"], env=env, stdout=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        codes = [p.wait() for p in procs]
        drained = time.perf_counter() - t0
        if any(codes):
            sys.exit(f"a worker exited {codes}")
        found = store.query("SELECT status, count(*) FROM runs GROUP BY status")
        claims = store.query("SELECT max(claims), count(*) FROM queue WHERE state = 'done'")
        store.release()
        if found != [("completed", runs)] or claims != [(1, runs)]:
            sys.exit(f"not every run ran exactly once: {found} {claims}")
    return submitted, drained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--pg", default=os.environ.get("AIRUN_TEST_PG"), help="a server's URL")
    args = ap.parse_args()
    print(f"{'workers':>7} {'runs':>5} {'submit s':>9} {'drain s':>8} {'runs/s':>7}")
    for k in (int(x) for x in args.workers.split(",")):
        submitted, drained = drain(args.runs, k, args.pg)
        print(
            f"{k:>7} {args.runs:>5} {submitted:>9.2f} {drained:>8.2f} {args.runs / drained:>7.1f}"
        )


if __name__ == "__main__":
    main()
