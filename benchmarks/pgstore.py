#!/usr/bin/env python3
"""The team store on PostgreSQL: per-step cost beside DBOS Transact on the same server; many
small runs from 4 processes on one PostgreSQL store against 4 processes on one DuckDB file (with
the CPU each run costs); ``steps()`` over 1M step rows from PostgreSQL against a DuckDB file.

    python benchmarks/pgstore.py                 # about 10 minutes on 2 busy cores
    python benchmarks/pgstore.py --quick         # a smoke run (100,000 history rows)
    python benchmarks/pgstore.py --pg URL        # a server of yours (also --server; else
                                                 # AIRUN_TEST_PG, else a temporary cluster
                                                 # started here, skipped without initdb)

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
    cpu = time.process_time()
    for _ in range(runs):
        assert wf.run(db=db, namespace=ns, new=True).status == "completed"
    print(time.time(), time.process_time() - cpu)
    """
)


def _cpu(pid: int) -> tuple[float, int]:
    """(CPU seconds of ``pid`` and of its children it reaped, its parent's pid)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / ticks, int(fields[1])


def server_cpu(data_dir: Path | None) -> float | None:
    """CPU seconds the server (postmaster, live and ended backends, its helper processes) has
    used so far; None when its data folder is not readable here (a remote server)."""
    try:
        assert data_dir is not None
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        total = _cpu(postmaster)[0]
    except (AssertionError, OSError, ValueError):
        return None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                used, parent = _cpu(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile: its time is in the postmaster's reaped children
            if parent == postmaster:
                total += used
    return total


def data_dir_of(server: str) -> Path | None:
    try:
        with psycopg.connect(server) as con:
            row = con.execute("SHOW data_directory").fetchone()
    except psycopg.Error:
        return None
    return Path(row[0]) if row else None


def many_runs(
    db: str, processes: int, runs: int, work: Path, data_dir: Path | None = None
) -> tuple[float, float, float | None]:
    """Runs per second of ``processes`` processes each starting ``runs`` 3-step runs, and the
    CPU milliseconds per run of the clients and of the server (None: not measurable here).
    CPU per run does not depend on what else the machine does: with ``C`` cores, ``C`` over
    the sum bounds the runs per second."""
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
    before = server_cpu(data_dir)
    t0 = time.time()
    go.touch()
    ends, cpus = [], []
    for p in procs:
        end, cpu = p.communicate(timeout=3600)[0].strip().splitlines()[-1].split()
        ends.append(float(end))
        cpus.append(float(cpu))
    after = server_cpu(data_dir)
    total = processes * runs
    server = None if before is None or after is None else (after - before) * 1000 / total
    return total / (max(ends) - t0), sum(cpus) * 1000 / total, server


GOAL_HISTORY_RATIO = 1.5  # steps() of 1M rows: PostgreSQL / DuckDB file
STEPS_PER_RUN = 100


def _history_rows(rows: int) -> dict[str, str]:
    """DuckDB SQL making ``rows`` completed step rows (``STEPS_PER_RUN`` a run) and their runs,
    every column of the store's own tables, as a busy team store holds them."""
    from airun_nb.store.schema import TABLES

    runs = rows // STEPS_PER_RUN
    run_id = f"'r-' || lpad((i // {STEPS_PER_RUN})::VARCHAR, 10, '0')"
    at = "TIMESTAMP '2026-01-01' + to_microseconds(i * 1000)"
    steps = {
        "run_id": run_id,
        "step_id": f"'step_' || (i % {STEPS_PER_RUN})",
        "position": f"i % {STEPS_PER_RUN}",
        "kind": "'call'",
        "status": "CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'completed' END",
        "attempts": "1 + (i % 97 = 0)::INT",
        "def_hash": "md5(i::VARCHAR)[:16]",
        "code_hash": "md5((i % 7)::VARCHAR)[:16]",
        "eff_hash": "md5((i * 3)::VARCHAR)[:16]",
        "started_at": at,
        "finished_at": f"{at} + INTERVAL 2 MILLISECOND",
        "finish_seq": "i",
        "output_kind": "'json'",
        "output_json": "(i % 1000)::VARCHAR",
        "error": "CASE WHEN i % 97 = 0 THEN 'ValueError: bad input row ' || i END",
    }
    run_cols = {
        "run_id": run_id,
        "workflow": "'nightly_' || (i % 5)",
        "status": "'completed'",
        "spec_hash": "md5((i % 5)::VARCHAR)[:16]",
        "params": "'{}'",
        "created_at": at,
        "started_at": at,
        "finished_at": f"{at} + INTERVAL 1 SECOND",
        "updated_at": f"{at} + INTERVAL 1 SECOND",
        "launched_by": "'analyst'",
        "source": "'cli'",
    }

    def select(table: str, given: dict[str, str], n: int, step: int) -> str:
        cols = [f"CAST({given.get(c, 'NULL')} AS {typ}) AS {c}" for c, typ in TABLES[table][0]]
        return f"SELECT {', '.join(cols)} FROM range(0, {n}, {step}) t(i)"

    return {
        "runs": select("runs", run_cols, runs * STEPS_PER_RUN, STEPS_PER_RUN),
        "steps": select("steps", steps, rows, 1),
    }


def _fill_history(pg_url: str, duck_path: Path, rows: int, work: Path) -> float:
    """The same rows into a new team store (COPY) and a new store file (INSERT), through the
    store's own tables, not the engine; the seconds it took."""
    import duckdb

    from airun_nb.store.opening import open_store
    from airun_nb.store.postgres.backend import forget

    t0 = time.perf_counter()
    open_store(pg_url)  # the tables, made by the store itself
    forget(pg_url)
    open_store(str(duck_path)).release()
    gen = duckdb.connect()
    with duckdb.connect(str(duck_path)) as duck, psycopg.connect(pg_url) as pg:
        for table, sql in _history_rows(rows).items():
            duck.execute(f"INSERT INTO {table} {sql}")
            csv = work / f"{table}.csv"
            gen.execute(f"COPY ({sql}) TO '{csv}' (HEADER false)")
            copy_in = f"COPY {table} FROM STDIN (FORMAT csv)"
            with pg.cursor() as cur, cur.copy(copy_in) as copy, open(csv, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    copy.write(chunk)
            csv.unlink()
        pg.execute("ANALYZE")
    return time.perf_counter() - t0


def history_steps(pg_url: str, duck_path: Path, rows: int, repeats: int) -> tuple[float, float]:
    """Seconds of ``airun_nb.steps()`` over every row (median of ``repeats``): from the team
    store, and from the store file."""
    import airun_nb

    out = []
    for db in (pg_url, str(duck_path)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            frame = airun_nb.steps(db=db)
            times.append(time.perf_counter() - t0)
            assert len(frame) == rows, (len(frame), rows)
            del frame
        out.append(statistics.median(times))
    return out[0], out[1]


def per_step(server: str, steps: int, repeats: int, work: Path) -> None:
    pg_step = airun_per_step(fresh_database(server), steps, repeats)
    duck_step = airun_per_step(str(work / "chain.duckdb"), steps, repeats)
    dbos_step = dbos_per_step(fresh_database(server), steps, repeats)
    print(f"per step, a chain of {steps} trivial steps (median of {repeats} runs):")
    print(f"  airun_nb on PostgreSQL   {pg_step * 1000:8.2f} ms")
    print(f"  airun_nb on DuckDB file  {duck_step * 1000:8.2f} ms")
    print(f"  DBOS Transact, same PG   {dbos_step * 1000:8.2f} ms")
    ratio = pg_step / dbos_step
    print(f"  ratio airun_nb(PG) / DBOS = {ratio:.2f} (goal <= {GOAL_STEP_RATIO:.1f})")


def many(server: str, runs: int, work: Path, data_dir: Path | None) -> None:
    pg_rps, pg_cpu, pg_server = many_runs(fresh_database(server), 4, runs, work, data_dir)
    duck_rps, duck_cpu, _ = many_runs(str(work / "many.duckdb"), 4, runs, work)
    print(f"many small runs (3 steps each), 4 processes x {runs} runs:")
    print(f"  on one PostgreSQL store  {pg_rps:8.1f} runs/s", end="")
    server_ms = f" + server {pg_server:.1f}" if pg_server is not None else ""
    print(f"   CPU per run: clients {pg_cpu:.1f}{server_ms} ms")
    print(f"  on one DuckDB file       {duck_rps:8.1f} runs/s", end="")
    print(f"   CPU per run: clients {duck_cpu:.1f} ms")
    ratio = pg_rps / duck_rps
    print(f"  ratio PostgreSQL / DuckDB file = {ratio:.2f} (goal >= {GOAL_RUNS_RATIO:.1f})")
    if pg_server is not None:
        bound = duck_cpu / (pg_cpu + pg_server)
        print(f"  ratio of CPU per run, DuckDB / PostgreSQL (client + server) = {bound:.2f}")
    print(f"load (/proc/loadavg): {Path('/proc/loadavg').read_text().strip()}")


def history(server: str, rows: int, work: Path) -> None:
    pg_url, duck_path = fresh_database(server), work / "history.duckdb"
    filled = _fill_history(pg_url, duck_path, rows, work)
    pg_hist, duck_hist = history_steps(pg_url, duck_path, rows, 3)
    print(f"history: steps() of {rows:,} step rows (filled in {filled:.0f} s), median of 3:")
    print(f"  from PostgreSQL          {pg_hist:8.2f} s")
    print(f"  from the DuckDB file     {duck_hist:8.2f} s")
    ratio = pg_hist / duck_hist
    print(f"  ratio PostgreSQL / DuckDB file = {ratio:.2f} (goal <= {GOAL_HISTORY_RATIO:.1f})")
    print(f"load (/proc/loadavg): {Path('/proc/loadavg').read_text().strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server", "--pg", default=os.environ.get("AIRUN_TEST_PG"))
    parser.add_argument(
        "--only",
        choices=("steps", "many", "history"),
        help="measure one part: per step, many small runs, or steps() over the history",
    )
    args = parser.parse_args()
    steps, repeats, runs = (50, 3, 10) if args.quick else (200, 5, 40)
    folder = None
    server = args.server
    if not server:
        folder = Path(tempfile.mkdtemp(prefix="airun-bench-pg-"))
        try:
            server = pgsupport.start(folder)
        except RuntimeError as exc:  # no server binaries here: nothing to measure
            shutil.rmtree(folder, ignore_errors=True)
            print(f"pgstore: skipped: {exc}; or give --pg URL (or AIRUN_TEST_PG)")
            return
    work = Path(tempfile.mkdtemp(prefix="airun-bench-"))
    try:
        with psycopg.connect(server) as con:
            version = con.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}; {os.cpu_count()} cores")
        if args.only in (None, "steps"):
            per_step(server, steps, repeats, work)
        if args.only in (None, "many"):
            data_dir = folder / "data" if folder is not None else data_dir_of(server)
            many(server, runs, work, data_dir)
        if args.only in (None, "history"):
            history(server, 100_000 if args.quick else 1_000_000, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if folder is not None:
            pgsupport.stop(folder)
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
