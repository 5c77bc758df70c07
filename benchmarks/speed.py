"""Speed benchmarks: airun_nb beside its peers and its floors, measured in the same run.

    python benchmarks/speed.py            # every row (a few minutes on 2 cores)
    python benchmarks/speed.py --quick    # smaller sizes, a smoke run
    python benchmarks/speed.py --only small,parse

Rows (see benchmarks/README.md): many small runs in 1 and 4 processes, re-running a 10k-step
cell that resumes (same process and fresh process), parsing 10k/50k-step specs, steps() and an
aggregation over a 1M-row store (built once, cached in benchmarks/.cache), the wall and CPU time
of `airun runs`, `airun approve` and `airun --help`, a 100 MB DataFrame checkpoint, parallel I/O
steps, and the store's size after 200 runs with 100-row DataFrame outputs. Every ratio divides
two figures taken in this run, so load on the machine moves both sides. Progress goes to stderr,
the table to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
ROWS: list[tuple[str, str, str, str]] = []  # (work, airun_nb, peers and floors, ratio)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def row(work: str, ours: str, peers: str, ratio: str) -> None:
    ROWS.append((work, ours, peers, ratio))
    log(f"  => {work}: {ours} | {peers} | {ratio}")


@contextmanager
def fresh_dir(tag: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"airun-speed-{tag}-"))
    try:
        yield d
    finally:
        release(d / "airun.duckdb")
        shutil.rmtree(d, ignore_errors=True)


def release(db: Path) -> None:
    from airun_nb.store.database import Store

    try:
        if db.exists():
            Store.open(db).release()
    except Exception:
        pass


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def latency_summary(lat: list[float], total: float) -> dict[str, float]:
    head = lat[: min(100, len(lat))]
    tail = lat[-min(100, len(lat)) :]
    return {
        "runs_s": len(lat) / total,
        "p50": pct(lat, 0.5) * 1000,
        "p95": pct(lat, 0.95) * 1000,
        "first100": statistics.mean(head) * 1000,
        "last100": statistics.mean(tail) * 1000,
        "total": total,
    }


def fmt_lat(s: dict[str, float]) -> str:
    return (
        f"{s['runs_s']:.0f} runs/s, p50 {s['p50']:.1f} ms, p95 {s['p95']:.1f} ms, "
        f"first100 {s['first100']:.1f} -> last100 {s['last100']:.1f} ms"
    )


def timed_runs(
    n: int, one: Callable[[int], Any], ready: Callable[[], None] | None = None
) -> dict[str, float]:
    one(-1)  # warm-up
    if ready is not None:
        ready()  # wait for the others (several processes start their timed runs together)
    lat = []
    gc.collect()
    begin = time.time()
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        one(i)
        lat.append(time.perf_counter() - t)
    out = latency_summary(lat, time.perf_counter() - t0)
    out.update(begin=begin, end=time.time())
    return out


# ---------------------------------------------------------------------- many small runs
SMALL = {
    "name": "small",
    "steps": [
        {"id": "a", "call": "f"},
        {"id": "b", "call": "f", "needs": ["a"]},
        {"id": "c", "call": "f", "needs": ["b"]},
        {"id": "d", "call": "f", "needs": ["c"]},
    ],
}


def _one() -> int:
    return 1


def _two() -> int:
    return 2


SMALL_TEXT = """name: small
steps:
  - id: a
    call: f
  - id: b
    call: f
    needs: [a]
  - id: c
    call: f
    needs: [b]
  - id: d
    call: f
    needs: [c]
"""


def airun_small(
    n: int, db: Path, ready: Callable[[], None] | None = None, cell: bool = True
) -> dict[str, float]:
    """``n`` runs of the 4-step workflow; ``cell``: as a notebook re-runs the cell (the text
    parsed again, resume-or-new decided by the store), else a pre-parsed ``run(new=True)``."""
    from airun_nb import Workflow

    ns = {"f": _one}
    foreign = [0]  # runs that did not execute all four of their own steps

    def one(i: int) -> None:
        if cell:
            res = Workflow.from_yaml(SMALL_TEXT).run(db=db, namespace=ns)
        else:
            res = wf.run(db=db, namespace=ns, new=True)
        if len(res.executed) != 4:
            foreign[0] += 1

    wf = Workflow.from_dict(SMALL)
    out = timed_runs(n, one, ready)
    out["foreign"] = foreign[0]
    return out


def barrier(folder: Path, procs: int) -> Callable[[], None]:
    """Each process says it is ready, then waits until all ``procs`` are."""

    def wait() -> None:
        folder.mkdir(exist_ok=True)
        (folder / f"ready-{os.getpid()}").touch()
        deadline = time.time() + 600
        while len(list(folder.glob("ready-*"))) < procs and time.time() < deadline:
            time.sleep(0.002)

    return wait


def langgraph_small(
    n: int, d: Path, ready: Callable[[], None] | None = None
) -> dict[str, float] | None:
    try:
        from typing import TypedDict

        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return None

    class State(TypedDict):
        x: int

    def node(state: State) -> dict[str, int]:
        return {"x": state["x"] + 1}

    graph = StateGraph(State)
    for i in range(4):
        graph.add_node(f"n{i}", node)
    graph.add_edge(START, "n0")
    for i in range(3):
        graph.add_edge(f"n{i}", f"n{i + 1}")
    graph.add_edge("n3", END)
    # One file for every process (the 4-process row); a wait for SQLite's lock, not an error.
    conn = sqlite3.connect(str(d / "lg.sqlite"), check_same_thread=False, timeout=600)
    app = graph.compile(checkpointer=SqliteSaver(conn))
    me = os.getpid()
    try:
        return timed_runs(
            n,
            lambda i: app.invoke(
                {"x": 0}, {"configurable": {"thread_id": f"t{me}-{i}"}}, durability="sync"
            ),
            ready,
        )
    finally:
        conn.close()


def dbos_small(n: int, d: Path) -> dict[str, float] | None:
    code = f"""
import json, sys, time
sys.path.insert(0, {str(HERE)!r})
from speed import timed_runs
from dbos import DBOS
DBOS(config={{"name": "speed", "system_database_url": "sqlite:///{d}/dbos.sqlite"}})

@DBOS.step()
def step() -> int:
    return 1

@DBOS.workflow()
def wf() -> int:
    return sum(step() for _ in range(4))

DBOS.launch()
print("RESULT " + json.dumps(timed_runs({n}, lambda i: wf())))
DBOS.destroy()
"""
    return _child(code, "dbos")


def duckdb_small(n: int, d: Path) -> dict[str, float]:
    import duckdb

    from airun_nb.store.schema import ddl

    con = duckdb.connect(str(d / "raw.duckdb"))
    for stmt in ddl():
        con.execute(stmt)

    def one(i: int) -> None:
        rid = f"r{i}"
        now = time.time()
        con.execute(
            "INSERT INTO runs (run_id, workflow, status) VALUES (?, 'small', 'running')", [rid]
        )
        for s in "abcd":
            con.execute(
                "INSERT INTO steps (run_id, step_id, status, attempts, output_json, finished_at) "
                "VALUES (?, ?, 'completed', 1, '1', make_timestamp(?))",
                [rid, s, int(now * 1e6)],
            )
        con.execute("UPDATE runs SET status = 'completed' WHERE run_id = ?", [rid])

    try:
        return timed_runs(n, one)
    finally:
        con.close()


def _child(code: str, tag: str, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **(env or {})},
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    log(f"  {tag}: failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return None


def bench_small(n: int) -> None:
    log(f"many small runs: {n} runs of a 4-step workflow, one process")
    with fresh_dir("small") as d:
        ours = airun_small(n, d / "airun.duckdb")
        lg = langgraph_small(n, d)
        db_ = dbos_small(n, d)
        raw = duckdb_small(n, d)
    with fresh_dir("small-new") as d:
        pre = airun_small(n, d / "airun.duckdb", cell=False)
    peers = [f"raw DuckDB autocommit {raw['runs_s']:.0f} runs/s"]
    if lg:
        peers.insert(0, f"LangGraph+SqliteSaver (sync) {lg['runs_s']:.0f} runs/s")
    if db_:
        peers.insert(1, f"DBOS (SQLite) {db_['runs_s']:.0f} runs/s")
    ratio = f"{ours['total'] / lg['total']:.2f}x LangGraph's time" if lg else "langgraph missing"
    row(
        f"{n} runs of a 4-step workflow, 1 process, re-running the cell text",
        f"{fmt_lat(ours)}; {ours['foreign']:.0f} runs not all their own",
        "; ".join(peers),
        ratio + " (goal <= 0.9x)",
    )
    ratio = f"{pre['total'] / lg['total']:.2f}x LangGraph's time" if lg else "langgraph missing"
    row(
        f"{n} runs of a 4-step workflow, 1 process, pre-parsed run(new=True)",
        fmt_lat(pre),
        "; ".join(peers),
        ratio,
    )


PROCS_CHILD = """
import json, sys
sys.path.insert(0, {here!r})
from pathlib import Path
from speed import airun_small, barrier, langgraph_small
ready = barrier(Path({folder!r}), {procs})
if {peer!r} == "airun":
    s = airun_small({n}, Path({db!r}), ready)
else:
    s = langgraph_small({n}, Path({db!r}).parent, ready)
print("RESULT " + json.dumps(s))
"""


def _procs(peer: str, n: int, procs: int, d: Path) -> tuple[list[dict[str, Any]], int]:
    """``procs`` processes x ``n`` runs of ``peer`` on one store; their results, failures."""
    folder = d / f"ready-{peer}"
    folder.mkdir()
    code = PROCS_CHILD.format(
        here=str(HERE), folder=str(folder), procs=procs, peer=peer, n=n, db=str(d / "airun.duckdb")
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(procs)
    ]
    outs = [c.communicate(timeout=3600) for c in children]
    results, failures = [], 0
    for out, err in outs:
        got = [json.loads(x[7:]) for x in out.splitlines() if x.startswith("RESULT ")]
        if got:
            results.append(got[0])
        else:
            failures += 1
            log(f"  {peer} child failed: {err.strip().splitlines()[-1:]}")
    return results, failures


def _throughput(results: list[dict[str, Any]], n: int) -> tuple[float, float, float]:
    """runs/s from the moment all started their timed runs until the last finished; p50, p95."""
    if not results:
        return float("nan"), float("nan"), float("nan")
    wall = max(r["end"] for r in results) - min(r["begin"] for r in results)
    p95 = max(r["p95"] for r in results)
    p50 = statistics.median([r["p50"] for r in results])
    return n * len(results) / wall, p50, p95


def bench_small_procs(n: int, procs: int) -> None:
    log(f"many small runs: {procs} processes x {n} runs, one store, re-running the cell text")
    with fresh_dir("procs") as d:
        db = d / "airun.duckdb"
        from airun_nb import Workflow

        Workflow.from_yaml(SMALL_TEXT).run(db=db, namespace={"f": _one}, new=True)
        release(db)
        results, failures = _procs("airun", n, procs, d)
        import airun_nb

        stored = len(airun_nb.runs(db=db))
        lg, _ = _procs("langgraph", n, procs, d) if _has_langgraph() else ([], 0)
    ours, p50, p95 = _throughput(results, n)
    foreign = sum(int(r.get("foreign", 0)) for r in results)
    peer = "LangGraph missing"
    ratio = "-"
    if lg:
        lg_rate, lg_p50, lg_p95 = _throughput(lg, n)
        peer = (
            f"LangGraph+SqliteSaver (sync), {procs} processes on one SQLite file: "
            f"{lg_rate:.0f} runs/s, p50 {lg_p50:.0f} ms, p95 {lg_p95:.0f} ms"
        )
        ratio = f"{ours / lg_rate:.2f}x LangGraph's throughput (goal >= 1x, p95 <= 100 ms)"
    row(
        f"the same, {procs} processes on one store",
        f"{ours:.0f} runs/s in all, p50 {p50:.0f} ms, p95 {p95:.0f} ms (worst process); "
        f"{failures} processes failed; {foreign} runs executed steps not all their own; "
        f"{stored} of {n * procs + procs + 1} runs stored (warm-ups included)",
        peer,
        ratio,
    )


def _has_langgraph() -> bool:
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
    except ImportError:
        return False
    return True


WRITER_CHILD = """
import sys, time
sys.path.insert(0, {here!r})
from pathlib import Path
from speed import SMALL_TEXT, _one
from airun_nb import Workflow
stop = Path({stop!r})
ns = {{"f": _one}}
Path({ready!r}).touch()
for _ in range({runs}):  # or until told to stop
    if stop.exists():
        break
    Workflow.from_yaml(SMALL_TEXT).run(db={db!r}, namespace=ns)
"""


def bench_readers(stored: int, writers: int, reads: int) -> None:
    """``runs()`` + ``steps()`` from a long-lived reader (a second kernel, the service) on a
    store of ``stored`` runs while ``writers`` processes re-run a cell without pause."""
    import airun_nb

    log(f"reads beside writers: {stored} runs stored, {writers} writers, {reads} reads")
    with fresh_dir("readers") as d:
        db = d / "airun.duckdb"
        airun_small(stored, db)
        release(db)
        stop = d / "stop"
        children = []
        for i in range(writers):
            code = WRITER_CHILD.format(
                here=str(HERE), stop=str(stop), ready=str(d / f"w{i}.ready"), db=str(db), runs=300
            )
            children.append(subprocess.Popen([sys.executable, "-c", code]))
        lat: list[float] = []
        try:
            deadline = time.time() + 600
            while len(list(d.glob("w*.ready"))) < writers and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(1.0)  # the writers are under way
            for _ in range(reads):
                if all(c.poll() is not None for c in children):
                    break  # the writers are done: what follows is not "beside writers"
                t = time.perf_counter()
                airun_nb.runs(db=db)
                airun_nb.steps(db=db)
                lat.append(time.perf_counter() - t)
        finally:
            stop.touch()
            for c in children:
                c.wait(timeout=600)
        total = len(airun_nb.runs(db=db))
    med, p99 = statistics.median(lat) * 1000, pct(lat, 0.99) * 1000
    row(
        f"runs() + steps() beside {writers} writers re-running a cell ({stored} runs stored)",
        f"median {med:.0f} ms, p99 {p99:.0f} ms, max {max(lat) * 1000:.0f} ms over {len(lat)} "
        "reads; "
        f"{total} runs stored at the end",
        "-",
        "goal: median < 100 ms, p99 < 500 ms",
    )


# ---------------------------------------------------------------------- big cells, parsing
def chain_text(n: int, fail_last: bool = False) -> str:
    lines = ["name: big", "on_failure: stop", "steps:"]
    for i in range(1, n + 1):
        call = "g" if fail_last and i == n else "f"
        lines.append(
            f"  - id: s{i}\n    call: {call}" + (f"\n    needs: [s{i - 1}]" if i > 1 else "")
        )
    return "\n".join(lines) + "\n"


def yaml_load(text: str) -> float:
    import yaml

    gc.collect()
    t = time.perf_counter()
    yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return time.perf_counter() - t


RESUME_CHILD = """
import json, sys, time
sys.path.insert(0, {here!r})
from speed import _one, _two, yaml_load
text = open({path!r}).read()
bare = min(yaml_load(text) for _ in range(2))
from airun_nb import Workflow
ns = {{"f": _one, "g": _two}}
t = time.perf_counter()
r = Workflow.from_yaml(text, db={db!r}).run(db={db!r}, namespace=ns)
took = time.perf_counter() - t
print("RESULT " + json.dumps({{"took": took, "bare": bare, "executed": len(r.executed)}}))
"""


def bench_resume(n: int) -> None:
    from airun_nb import Workflow, WorkflowFailed
    from airun_nb.spec import cache as speccache

    log(f"re-running a {n}-step cell that resumes ({n - 1} replayed)")
    text = chain_text(n, fail_last=True)
    with fresh_dir("resume") as d:
        db = d / "airun.duckdb"
        state = {"fail": True}

        def g() -> int:
            if state["fail"]:
                raise RuntimeError("not yet")
            return _two()

        ns = {"f": _one, "g": g}
        with suppress(WorkflowFailed):
            Workflow.from_yaml(text, db=db).run(db=db, namespace=ns)
        state["fail"] = False
        bare = min(yaml_load(text) for _ in range(2))
        # same kernel: the cell is run again (the spec cache holds its parse)
        gc.collect()
        t = time.perf_counter()
        res = Workflow.from_yaml(text, db=db).run(db=db, namespace=ns)
        same = time.perf_counter() - t
        assert res.executed == [f"s{n}"], res.executed[:3]
        # fresh process: fail the last step again, then resume from a new interpreter
        state["fail"] = True
        with suppress(WorkflowFailed):
            Workflow.from_yaml(text, db=db).run(db=db, namespace=ns, new=True)
        speccache.forget()
        Workflow.from_yaml(text, db=db)  # parsed once more: now the store holds the parse
        release(db)
        (d / "cell.yaml").write_text(text)
        child = _child(
            RESUME_CHILD.format(here=str(HERE), path=str(d / "cell.yaml"), db=str(db)), "fresh"
        )
    row(
        f"re-running a {n}-step cell that resumes, same kernel",
        f"{same:.3f} s",
        f"bare C YAML load of the text {bare:.3f} s",
        f"{same / bare:.2f}x the bare YAML load (goal <= 0.5x)",
    )
    if child:
        row(
            f"re-running a {n}-step cell that resumes, fresh process",
            f"{child['took']:.3f} s ({child['executed']} step executed)",
            f"bare C YAML load in that process {child['bare']:.3f} s",
            f"{child['took'] / child['bare']:.2f}x the bare YAML load (goal <= 1.0x)",
        )


def bench_parse(n: int) -> None:
    from airun_nb.spec import parser as spec

    log(f"parsing a {n}-step spec")
    text = chain_text(n)
    bare = yaml_load(text)
    gc.collect()
    t = time.perf_counter()
    try:
        spec.parse(text)
    except Exception as exc:  # a size limit of the parser, say
        row(
            f"parsing a {n}-step spec (no cache)",
            f"refused: {exc}",
            f"bare C YAML load {bare:.3f} s",
            "-",
        )
        return
    took = time.perf_counter() - t
    row(
        f"parsing a {n}-step spec (no cache)",
        f"{took:.3f} s",
        f"bare C YAML load {bare:.3f} s",
        f"{took / bare:.2f}x the bare YAML load",
    )


# ---------------------------------------------------------------------- history at 1M rows
def million_store(rows: int) -> Path:
    """A store with ``rows`` step rows over rows/10 runs, built once and kept in .cache."""
    from airun_nb.store import schema
    from airun_nb.store.database import Store

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"history-{rows}-v{schema.SCHEMA_VERSION}.duckdb"
    if path.exists():
        return path
    log(f"  building {path.name} (once)")
    tmp = path.with_suffix(".building")
    for p in tmp.parent.glob(tmp.name + "*"):
        p.unlink()
    store = Store.open(tmp)
    runs = rows // 10
    with store.session("building a benchmark store") as con:
        con.execute(
            f"""INSERT INTO runs (run_id, workflow, status, created_at, started_at, finished_at)
                SELECT 'r' || i, 'wf' || (i % 20), CASE WHEN i % 7 = 0 THEN 'failed'
                       ELSE 'completed' END,
                       TIMESTAMP '2026-01-01' + i * INTERVAL 1 SECOND,
                       TIMESTAMP '2026-01-01' + i * INTERVAL 1 SECOND,
                       TIMESTAMP '2026-01-01' + i * INTERVAL 1 SECOND + INTERVAL 3 SECOND
                FROM range({runs}) t(i)"""
        )
        con.execute(
            f"""INSERT INTO steps (run_id, step_id, position, kind, status, attempts, def_hash,
                       code_hash, eff_hash, started_at, finished_at, finish_seq, output_kind,
                       output_json, reason)
                SELECT 'r' || (i // 10), 's' || (i % 10), i % 10, 'call',
                       CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'completed' END, 1 + (i % 3 = 0)::INT,
                       md5(i::VARCHAR), md5((i % 10)::VARCHAR), md5((i // 10)::VARCHAR),
                       TIMESTAMP '2026-01-01' + (i // 10) * INTERVAL 1 SECOND
                           + (i % 10) * INTERVAL 100 MILLISECOND,
                       TIMESTAMP '2026-01-01' + (i // 10) * INTERVAL 1 SECOND
                           + (i % 10) * INTERVAL 100 MILLISECOND + (i % 50) * INTERVAL 1 MILLISECOND,
                       i % 10, 'json', '1', NULL
                FROM range({rows}) t(i)"""
        )
    store.release()
    tmp.rename(path)
    return path


STEP_SQL = """SELECT run_id, step_id, kind, status, attempts, started_at, finished_at, finish_seq,
       replayed_from, reason, error, output_kind, output_table, compensation, comp_status,
       comp_attempts, comp_error, comp_finished_at, def_hash, code_hash, eff_hash
FROM steps ORDER BY run_id, position"""
AGG_SQL = """SELECT run_id, count(*) AS steps, sum(attempts) AS attempts,
       avg(epoch(finished_at) - epoch(started_at)) AS mean_s, max(finished_at) AS last
FROM steps GROUP BY run_id"""


def best(fn: Callable[[], Any], n: int = 3) -> float:
    times = []
    for _ in range(n):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_history(rows: int) -> None:
    import duckdb

    import airun_nb
    from airun_nb.store.database import Store

    log(f"history over a {rows}-row store")
    path = million_store(rows)
    airun_nb.steps(db=path)  # warm
    ours = best(lambda: airun_nb.steps(db=path))
    Store.open(path).release()
    con = duckdb.connect(str(path), read_only=True)
    raw = best(lambda: con.sql(STEP_SQL).df())
    raw_agg = best(lambda: con.sql(AGG_SQL).df())
    con.close()
    rel = airun_nb.history_relation("steps", db=path).aggregate(
        "run_id, count(*) AS steps, sum(attempts) AS attempts, "
        "avg(epoch(finished_at) - epoch(started_at)) AS mean_s, max(finished_at) AS last",
        "run_id",
    )
    via_rel = best(rel.df)
    via_query = best(lambda: airun_nb.query(AGG_SQL, db=path))
    via_pandas = best(
        lambda: (
            airun_nb.steps(db=path)
            .groupby("run_id")
            .agg(steps=("step_id", "size"), attempts=("attempts", "sum"))
        ),
        1,
    )
    Store.open(path).release()
    sqlite_s = sqlite_peer(path, rows)
    row(
        f"steps() of {rows:,} rows -> pandas",
        f"{ours:.3f} s",
        f"the same SELECT ... .df() in raw DuckDB {raw:.3f} s"
        + (f"; sqlite3 + read_sql {sqlite_s:.3f} s" if sqlite_s else ""),
        f"{ours / raw:.2f}x raw DuckDB (goal <= 1.1x)",
    )
    row(
        f"per-run statistics over {rows:,} step rows",
        f"history_relation(...).aggregate().df() {via_rel:.3f} s; query(sql) {via_query:.3f} s",
        f"raw DuckDB SQL {raw_agg:.3f} s; steps() + pandas groupby {via_pandas:.3f} s",
        f"{via_rel / raw_agg:.2f}x / {via_query / raw_agg:.2f}x raw DuckDB SQL (goal <= 1.3x)",
    )


def sqlite_peer(path: Path, rows: int) -> float | None:
    """The same step rows in SQLite, read with pandas.read_sql (built once, cached)."""
    import duckdb
    import pandas as pd

    lite = CACHE / f"history-{rows}.sqlite"
    if not lite.exists():
        con = duckdb.connect(str(path), read_only=True)
        df = con.sql(STEP_SQL).df()
        con.close()
        with sqlite3.connect(lite) as sq:
            df.to_sql("steps", sq, index=False, chunksize=100_000)
    sq = sqlite3.connect(lite)
    try:
        return best(lambda: pd.read_sql("SELECT * FROM steps ORDER BY run_id, finish_seq", sq), 1)
    finally:
        sq.close()


# ---------------------------------------------------------------------- CLI
GATED = {
    "name": "gated",
    "steps": [
        {"id": "prep", "call": "f"},
        {"id": "review", "approval": {"message": "Ship?"}, "needs": ["prep"]},
    ],
}


# As an installed package runs: Python writes and reuses compiled modules (a machine that sets
# PYTHONDONTWRITEBYTECODE would time compiling every module at each start).
_CLI_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall_cpu(commands: list[list[str]]) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of running each command once."""
    import resource

    walls, cpus = [], []
    for args in commands:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True, timeout=120, env=_CLI_ENV)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


_LOAD_EXT = (
    "import time\n"
    "from IPython.core.interactiveshell import InteractiveShell\n"
    "shell = InteractiveShell.instance()\n"
    "t = time.perf_counter()\n"
    "shell.run_line_magic('load_ext', 'airun_nb')\n"
    "print(time.perf_counter() - t)\n"
)


def _load_ext(py: str) -> float:
    """Seconds ``%load_ext airun_nb`` takes in a fresh IPython shell of a new process."""
    done = subprocess.run(
        [py, "-c", _LOAD_EXT], capture_output=True, text=True, check=True, env=_CLI_ENV
    )
    return float(done.stdout.strip().splitlines()[-1])


def _timed_import(py: str, module: str) -> float:
    """Seconds ``import module`` takes in a new process (the interpreter's start excluded)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    done = subprocess.run(
        [py, "-c", code], capture_output=True, text=True, check=True, env=_CLI_ENV
    )
    return float(done.stdout.strip().splitlines()[-1])


def bench_cli() -> None:
    from airun_nb import Workflow

    log("airun runs, airun approve and airun --help from a terminal")
    with fresh_dir("cli") as d:
        db = d / "airun.duckdb"
        for _ in range(20):
            Workflow.from_dict(SMALL).run(db=db, namespace={"f": _one}, new=True)
        gated = [
            Workflow.from_dict(GATED).run(db=db, namespace={"f": _one}, new=True).run_id
            for _ in range(5)
        ]
        warm = Workflow.from_dict(GATED).run(db=db, namespace={"f": _one}, new=True).run_id
        release(db)
        py = sys.executable
        # Once untimed, so the modules are compiled as after any first use.
        _wall_cpu([[py, "-m", "airun_nb", "approve", warm, "review", "--db", str(db)]])
        runs = _wall_cpu([[py, "-m", "airun_nb", "runs", "--db", str(db)]] * 5)
        approve = _wall_cpu(
            [[py, "-m", "airun_nb", "approve", r, "review", "--db", str(db)] for r in gated]
        )
        helps = _wall_cpu([[py, "-m", "airun_nb", "--help"]] * 5)
        load_ext = statistics.median(_load_ext(py) for _ in range(5))
        pandas_import = statistics.median(_timed_import(py, "pandas") for _ in range(5))
        bare = _wall_cpu([[py, "-c", "pass"]] * 5)
        imported = _wall_cpu([[py, "-c", "import duckdb"]] * 5)
        floor = _wall_cpu(
            [
                [
                    py,
                    "-c",
                    f"import duckdb; c = duckdb.connect({str(db)!r}); "
                    "c.execute('SELECT * FROM runs').fetchall()",
                ]
            ]
            * 5
        )

    def both(x: tuple[float, float]) -> str:
        return f"{x[0]:.3f} s (CPU {x[1]:.3f} s)"

    row(
        "`airun runs` from a terminal (median of 5)",
        both(runs),
        f"python -c pass {both(bare)}; python + import duckdb + one SELECT {both(floor)}",
        f"{runs[0] / floor[0]:.2f}x the DuckDB floor; {runs[0] - floor[0]:+.3f} s over it",
    )
    row(
        "`airun approve` from a terminal (median of 5 gates)",
        both(approve),
        f"python + import duckdb {both(imported)}; + connect + one SELECT {both(floor)}",
        f"{approve[0] / floor[0]:.2f}x the DuckDB floor (CPU {approve[1] / floor[1]:.2f}x); "
        f"{approve[0]:.2f} s (goal <= 0.4 s idle)",
    )
    row(
        "`%load_ext airun_nb` in a fresh IPython shell (median of 5)",
        f"{load_ext:.3f} s",
        f"`import pandas` in a fresh process {pandas_import:.3f} s",
        f"{load_ext:.3f} s (goal <= 0.25 s idle); {load_ext / pandas_import:.2f}x importing pandas",
    )
    row(
        "`airun --help` (median of 5)",
        both(helps),
        f"python -c pass {both(bare)}",
        f"{helps[0]:.2f} s (goal <= 0.2 s idle); {helps[0] - bare[0]:+.3f} s over python",
    )


# ---------------------------------------------------------------------- kept rows
def bench_frame(mb: int) -> None:
    import numpy as np
    import pandas as pd

    from airun_nb import Workflow, WorkflowFailed

    log(f"a {mb} MB DataFrame with a string column: checkpoint and replay")
    n = mb * 1024 * 1024 // 24  # 8 bytes of float, ~16 of string (offsets and characters)
    frame = pd.DataFrame({"a": np.arange(n, dtype="float64"), "s": [f"r{i:07d}" for i in range(n)]})
    ns: dict[str, Any] = {"df": frame, "state": {"fail": True}}
    exec(  # the step reads the frame as a notebook global: it is fingerprinted
        "def take():\n    return df\n"
        "def after(big):\n    if state['fail']:\n        raise RuntimeError('not yet')\n"
        "    return len(big)\n",
        ns,
    )
    doc = {
        "name": "frame",
        "on_failure": "stop",
        "steps": [
            {"id": "big", "call": "take"},
            {"id": "after", "call": "after", "with": {"big": "{{ steps.big.output }}"}},
        ],
    }
    ckpt, replay = [], []
    with fresh_dir("frame") as d:
        db = d / "airun.duckdb"
        for _ in range(2):
            ns["state"]["fail"] = True
            gc.collect()
            t = time.perf_counter()
            with suppress(WorkflowFailed):
                Workflow.from_dict(doc).run(db=db, namespace=ns, new=True)
            ckpt.append(time.perf_counter() - t)
            ns["state"]["fail"] = False
            gc.collect()
            t = time.perf_counter()
            res = Workflow.from_dict(doc).run(db=db, namespace=ns)  # resumes: big is replayed
            replay.append(time.perf_counter() - t)
            assert res.replayed == ["big"], res.replayed
        write = best(lambda: frame.to_parquet(d / "f.parquet"), 2)
        read = best(lambda: pd.read_parquet(d / "f.parquet"), 2)
    ours_w, ours_r = min(ckpt), min(replay)
    row(
        f"a {mb} MB DataFrame with a string column: checkpoint / replay (best of 2)",
        f"{ours_w:.3f} s / {ours_r:.3f} s",
        f"DataFrame.to_parquet {write:.3f} s / pandas.read_parquet {read:.3f} s",
        f"{ours_w / write:.2f}x / {ours_r / read:.2f}x Parquet (goal <= 1.2x)",
    )


def bench_small_outputs(n: int) -> None:
    """The store's size after ``n`` runs that each output a 100-row DataFrame."""
    import numpy as np
    import pandas as pd

    from airun_nb import Workflow

    log(f"{n} runs, each outputting a 100-row DataFrame: the store's size")

    def frame(i: int) -> pd.DataFrame:
        rng = np.random.default_rng(i)
        return pd.DataFrame(
            {
                "id": np.arange(100) + 100 * i,
                "value": rng.random(100),
                "name": [f"item-{i}-{j}" for j in range(100)],
            }
        )

    doc = {"name": "frames", "steps": [{"id": "out", "call": "make"}]}
    with fresh_dir("outputs") as d:
        db = d / "airun.duckdb"
        for i in range(n):
            Workflow.from_dict(doc).run(db=db, namespace={"make": lambda i=i: frame(i)}, new=True)
        release(db)
        size = db.stat().st_size
        frame(0).to_parquet(d / "one.parquet")
        one = (d / "one.parquet").stat().st_size
    per_run = size / n
    row(
        f"{n} runs each outputting a 100-row DataFrame (3 columns): store size",
        f"{size / 1e6:.1f} MB, {per_run / 1024:.1f} KB a run",
        f"the frame as Parquet {one / 1024:.1f} KB",
        f"{per_run / one:.0f}x the Parquet size a run (goal: a few times)",
    )


def bench_parallel(steps: int, workers: int) -> None:
    from airun_nb import Workflow

    log(f"parallel I/O steps: {steps} steps of 50 ms sleep, max_parallel {workers}")
    doc = {
        "name": "par",
        "max_parallel": workers,
        "steps": [{"id": f"s{i}", "call": "io"} for i in range(steps)],
    }
    with fresh_dir("par") as d:
        db = d / "airun.duckdb"
        wf = Workflow.from_dict(doc)
        took = best(lambda: wf.run(db=db, namespace={"io": lambda: time.sleep(0.05)}, new=True), 2)
    serial = steps * 0.05
    row(
        f"{steps} parallel I/O steps (50 ms each), {workers} workers",
        f"{took:.3f} s",
        f"serial sleep time {serial:.2f} s",
        f"{serial / took:.1f}x speed-up",
    )


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--only",
        default="",
        help="comma list: small,procs,resume,parse,history,cli,frame,parallel,readers,outputs",
    )
    args = ap.parse_args()
    q = args.quick
    plan: dict[str, Callable[[], None]] = {
        "small": lambda: bench_small(100 if q else 500),
        "procs": lambda: bench_small_procs(25 if q else 60, 4),
        "resume": lambda: bench_resume(1_000 if q else 10_000),
        "parse": lambda: [bench_parse(n) for n in ((1_000,) if q else (10_000, 20_000, 50_000))],
        "history": lambda: bench_history(100_000 if q else 1_000_000),
        "cli": bench_cli,
        "frame": lambda: bench_frame(10 if q else 100),
        "parallel": lambda: bench_parallel(16 if q else 64, 8),
        "outputs": lambda: bench_small_outputs(50 if q else 200),
        "readers": lambda: bench_readers(250, 4, 30 if q else 100),
    }
    chosen = [s for s in args.only.split(",") if s] or list(plan)
    load = os.getloadavg()
    t0 = time.perf_counter()
    for name in chosen:
        plan[name]()
    took = time.perf_counter() - t0
    after = os.getloadavg()
    import duckdb

    print(
        f"airun_nb speed ({'quick' if q else 'full'} run, {os.cpu_count()} CPUs, python "
        f"{sys.version.split()[0]}, duckdb {duckdb.__version__}, took {took:.0f} s, load "
        f"average {load[0]:.1f} before / {after[0]:.1f} after)\n"
    )
    print("| work | airun_nb | peers and floors, same run | ratio |")
    print("|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
