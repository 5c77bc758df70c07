#!/usr/bin/env python3
"""The team store on PostgreSQL: per-step cost beside DBOS Transact on the same server, and many
small runs from 4 processes on one PostgreSQL store against 4 processes on one DuckDB file.

    python benchmarks/pgstore.py                 # a few minutes on 2 cores
    python benchmarks/pgstore.py --quick         # a smoke run, < 2 minutes
    python benchmarks/pgstore.py --server URL    # a server of yours (else AIRUN_TEST_PG, else
                                                 # a temporary cluster started here)

Each scenario gets a fresh database. Ratios are printed in one run; the benchmark exits 0
whether the goals are met or not (they are informational, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402

from support import postgres as pgsupport  # noqa: E402

GOAL_STEP_RATIO = 1.0  # airun per step / DBOS per step: no slower
GOAL_RUNS_RATIO = 3.0  # 4 processes: runs/s on PostgreSQL / runs/s on one DuckDB file


def chain(n: int, name: str) -> str:
    lines = [f"name: {name}", "steps:"]
    for i in range(n):
        lines.append(f"  - id: s{i}")
        lines.append("    call: f")
        if i:
            lines.append(f"    needs: [s{i - 1}]")
    return "\n".join(lines) + "\n"


def fresh_database(server: str) -> str:
    return pgsupport.create_database(server)


def airun_per_step(db: str, steps: int, repeats: int) -> float:
    """Seconds per step of a chain of ``steps`` trivial steps (median of ``repeats`` runs)."""
    from airun_nb import Workflow

    wf = Workflow.from_yaml(chain(steps, "bench_chain"))
    ns = {"f": lambda: 1}
    wf.run(db=db, namespace=ns, new=True)  # warm: the store open, the spec cached
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = wf.run(db=db, namespace=ns, new=True)
        times.append(time.perf_counter() - t0)
        assert result.status == "completed"
    return statistics.median(times) / steps


DBOS_SCRIPT = textwrap.dedent(
    """\
    import statistics, sys, time
    from dbos import DBOS
    url, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    @DBOS.step()
    def f():
        return 1

    @DBOS.workflow()
    def chain():
        for _ in range(steps):
            f()

    DBOS(config={"name": "bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    chain()  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chain()
        times.append(time.perf_counter() - t0)
    print(statistics.median(times) / steps)
    DBOS.destroy()
    """
)


def dbos_per_step(db: str, steps: int, repeats: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", DBOS_SCRIPT, db, str(steps), str(repeats)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


MANY_SCRIPT = textwrap.dedent(
    """\
    import sys, time
    from airun_nb import Workflow
    db, runs, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    wf = Workflow.from_yaml(
        "name: small\\nsteps:\\n  - id: a\\n    call: f\\n  - id: b\\n    call: f\\n"
        "    needs: [a]\\n  - id: c\\n    call: f\\n    needs: [b]\\n"
    )
    ns = {"f": lambda: 1}
    wf.run(db=db, namespace=ns, new=True)  # warm
    import pathlib
    while not pathlib.Path(go).exists():
        time.sleep(0.001)
    for _ in range(runs):
        assert wf.run(db=db, namespace=ns, new=True).status == "completed"
    print(time.time())
    """
)


def many_runs(db: str, processes: int, runs: int, work: Path) -> float:
    """Runs per second of ``processes`` processes each starting ``runs`` 3-step runs."""
    go = work / f"go-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MANY_SCRIPT, db, str(runs), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(processes)
    ]
    time.sleep(5.0)  # let every process warm up (a benchmark, not a test)
    t0 = time.time()
    go.touch()
    ends = [float(p.communicate(timeout=3600)[0].strip().splitlines()[-1]) for p in procs]
    return processes * runs / (max(ends) - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server", default=os.environ.get("AIRUN_TEST_PG"))
    args = parser.parse_args()
    steps, repeats, runs = (50, 3, 10) if args.quick else (200, 5, 40)
    folder = None
    server = args.server
    if not server:
        folder = Path(tempfile.mkdtemp(prefix="airun-bench-pg-"))
        server = pgsupport.start(folder)
    work = Path(tempfile.mkdtemp(prefix="airun-bench-"))
    try:
        with psycopg.connect(server) as con:
            version = con.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}; {os.cpu_count()} cores")
        pg_step = airun_per_step(fresh_database(server), steps, repeats)
        duck_step = airun_per_step(str(work / "chain.duckdb"), steps, repeats)
        dbos_step = dbos_per_step(fresh_database(server), steps, repeats)
        print(f"per step, a chain of {steps} trivial steps (median of {repeats} runs):")
        print(f"  airun_nb on PostgreSQL   {pg_step * 1000:8.2f} ms")
        print(f"  airun_nb on DuckDB file  {duck_step * 1000:8.2f} ms")
        print(f"  DBOS Transact, same PG   {dbos_step * 1000:8.2f} ms")
        ratio = pg_step / dbos_step
        print(f"  ratio airun_nb(PG) / DBOS = {ratio:.2f} (goal <= {GOAL_STEP_RATIO:.1f})")
        pg_rps = many_runs(fresh_database(server), 4, runs, work)
        duck_rps = many_runs(str(work / "many.duckdb"), 4, runs, work)
        print(f"many small runs (3 steps each), 4 processes x {runs} runs:")
        print(f"  on one PostgreSQL store  {pg_rps:8.1f} runs/s")
        print(f"  on one DuckDB file       {duck_rps:8.1f} runs/s")
        ratio = pg_rps / duck_rps
        print(f"  ratio PostgreSQL / DuckDB file = {ratio:.2f} (goal >= {GOAL_RUNS_RATIO:.1f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if folder is not None:
            pgsupport.stop(folder)
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
