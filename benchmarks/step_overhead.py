#!/usr/bin/env python3
"""Per-step overhead of airun_nb, against raw DuckDB and LangGraph + SQLite.

    python benchmarks/step_overhead.py                # full run (a few minutes on 2 cores)
    python benchmarks/step_overhead.py --quick        # CI smoke, < 60 s
    python benchmarks/step_overhead.py --json out.json
    python benchmarks/step_overhead.py --crash-check  # durability: SIGKILL at step 1500 of 2000

Every scenario runs in a fresh temporary directory with a fresh store file. See
benchmarks/README.md for what each number means. Targets are informational: the benchmark exits
0 whether they are met or not (only ``--crash-check`` exits 1, when finished steps are lost).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    import airun_nb
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import airun_nb

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

TARGET_MEDIAN_MS = 1.0  # median per trivial step
TARGET_REPLAY_S = 0.2  # replay (resume) of a finished 10,000-step run

# --------------------------------------------------------------------------- step functions
# Module-level so their source hash is stable (the crash check resumes with the same function).


def f() -> int:
    """The trivial step."""
    return 1


_COLS = {
    "a": np.arange(65_536, dtype=np.float64),
    "b": np.linspace(0.0, 1.0, 65_536, dtype=np.float64),
}


def make_df() -> pd.DataFrame:
    """A ~1 MiB DataFrame: 65,536 rows x 2 float64 columns (built from prepared arrays)."""
    return pd.DataFrame(_COLS)


_crash_calls = 0


def crash_step() -> int:
    """Counts its calls; the call number AIRUN_BENCH_KILL_AT SIGKILLs its own process."""
    global _crash_calls
    _crash_calls += 1
    kill_at = int(os.environ.get("AIRUN_BENCH_KILL_AT", "0") or 0)
    if kill_at and _crash_calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return _crash_calls


# --------------------------------------------------------------------------- helpers


def chain_doc(name: str, n: int, call: str = "f") -> dict[str, Any]:
    """n sequential ``call`` steps s1..sn, each needing the previous one."""
    steps: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        step: dict[str, Any] = {"id": f"s{i}", "call": call}
        if i > 1:
            step["needs"] = [f"s{i - 1}"]
        steps.append(step)
    return {"name": name, "steps": steps}


def release_store(db: Path) -> None:
    """Let go of a store this process opened, so its folder can be deleted and no keeper thread
    of a finished scenario runs during the next one. Uses an internal of airun_nb.store.database; if that
    changes, the store is simply left to its idle timeout."""
    try:
        from airun_nb.store import database as store_mod

        key = str(Path(db).resolve())
        with store_mod._registry_lock:
            store = store_mod._registry.pop(key, None)
        if store is not None:
            store.release()
    except Exception:
        pass


@contextlib.contextmanager
def fresh_dir(tag: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"airun-bench-{tag}-"))
    try:
        yield d
    finally:
        release_store(d / "airun.duckdb")
        shutil.rmtree(d, ignore_errors=True)


def settle() -> None:
    """Same starting line for every timed section: collect garbage first."""
    gc.collect()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    settle()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def attempt_stats(run_id: str, db: Path) -> dict[str, float]:
    """Per-step times from the store's own attempts history (executed steps only).

    ``cycle``: started_at of step k+1 minus started_at of step k: everything the engine does for
    one step (journal records, the call, output encoding, scheduling), folds included where they
    happen. ``in_step``: finished_at - started_at of one attempt (the attempt's own span: its
    ``running`` record, the call and the output encoding).
    """
    df = airun_nb.attempts(run_id, db=db)
    if "phase" in df:
        df = df[df["phase"] == "execute"]
    df = df.sort_values("started_at")
    t0 = df["started_at"].iloc[0]
    starts = (df["started_at"] - t0).dt.total_seconds().to_numpy()
    dur = (df["finished_at"] - df["started_at"]).dt.total_seconds().to_numpy()
    cycle = np.diff(starts) * 1e3
    dur = dur * 1e3
    return {
        "attempts": len(df),
        "cycle_median_ms": float(np.median(cycle)) if len(cycle) else float("nan"),
        "cycle_mean_ms": float(np.mean(cycle)) if len(cycle) else float("nan"),
        "cycle_p99_ms": float(np.percentile(cycle, 99)) if len(cycle) else float("nan"),
        "cycle_max_ms": float(np.max(cycle)) if len(cycle) else float("nan"),
        "in_step_median_ms": float(np.median(dur)) if len(dur) else float("nan"),
    }


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- airun scenarios


def bench_chain(
    n: int, repeats: int, *, resume_repeats: int = 0, sync: bool = False
) -> dict[str, Any]:
    """n trivial sequential steps, ``repeats`` times, each in a fresh folder and store.

    With ``resume_repeats``, every finished run is then resumed that many times (all steps
    replay) and the replay is timed, with and without spec parsing.
    """
    doc = chain_doc(f"chain{n}", n)
    totals, parses, stats, cpus = [], [], [], []
    res_total, res_parse, res_run, res_cpu = [], [], [], []
    old_sync = os.environ.get("AIRUN_SYNC")
    if sync:
        os.environ["AIRUN_SYNC"] = "1"
    try:
        for r in range(repeats):
            with fresh_dir(f"chain{n}") as d:
                db = d / "airun.duckdb"
                settle()
                t0 = time.perf_counter()
                wf = airun_nb.Workflow.from_dict(doc)
                t1 = time.perf_counter()
                c1 = time.process_time()
                res = wf.run(db=db, namespace={"f": f}, new=True)
                t2 = time.perf_counter()
                cpus.append(time.process_time() - c1)
                tp, tr = t1 - t0, t2 - t1
                assert res.status == "completed", res.status
                assert len(res.executed) == n, len(res.executed)
                parses.append(tp)
                totals.append(tr)
                stats.append(attempt_stats(res.run_id, db))
                log(
                    f"  chain {n}{' sync' if sync else ''} #{r + 1}: parse {tp:.3f} s, "
                    f"run {tr:.3f} s = {tr / n * 1e3:.3f} ms/step, "
                    f"median cycle {stats[-1]['cycle_median_ms']:.3f} ms"
                )
                run_id = res.run_id
                del res, wf  # the resume starts from a clean heap, as a re-run cell would
                for _ in range(resume_repeats):
                    settle()
                    t0 = time.perf_counter()
                    wf2 = airun_nb.Workflow.from_dict(doc)
                    t1 = time.perf_counter()
                    c1 = time.process_time()
                    res2 = wf2.run(db=db, namespace={"f": f}, resume=run_id)
                    t2 = time.perf_counter()
                    res_cpu.append(time.process_time() - c1)
                    assert res2.status == "completed", res2.status
                    assert res2.run_id == run_id
                    assert len(res2.executed) == 0, f"{len(res2.executed)} steps executed again"
                    assert len(res2.replayed) == n, len(res2.replayed)
                    res_total.append(t2 - t0)
                    res_parse.append(t1 - t0)
                    res_run.append(t2 - t1)
                    del res2, wf2
                    log(
                        f"  resume {n}: {t2 - t0:.3f} s (from_dict {t1 - t0:.3f} s, "
                        f"run {t2 - t1:.3f} s)"
                    )
    finally:
        if sync:
            if old_sync is None:
                os.environ.pop("AIRUN_SYNC", None)
            else:
                os.environ["AIRUN_SYNC"] = old_sync
    out: dict[str, Any] = {
        "steps": n,
        "repeats": repeats,
        "run_s": totals,
        "parse_s": parses,
        "run_s_median": med(totals),
        "per_step_ms_median_of_runs": med(totals) / n * 1e3,
        "per_step_ms_best_run": min(totals) / n * 1e3,
        "cycle_median_ms": med([s["cycle_median_ms"] for s in stats]),
        "cycle_mean_ms": med([s["cycle_mean_ms"] for s in stats]),
        "cycle_p99_ms": med([s["cycle_p99_ms"] for s in stats]),
        "cycle_max_ms": max(s["cycle_max_ms"] for s in stats),
        "in_step_median_ms": med([s["in_step_median_ms"] for s in stats]),
        "parse_s_median": med(parses),
        "cpu_s": cpus,
        "cpu_s_median": med(cpus),
    }
    if resume_repeats:
        out["resume"] = {
            "samples": len(res_total),
            "total_s": res_total,
            "from_dict_s": res_parse,
            "run_s": res_run,
            "total_s_median": med(res_total),
            "from_dict_s_median": med(res_parse),
            "run_s_median": med(res_run),
            "run_s_best": min(res_run),
            "run_cpu_s": res_cpu,
            "run_cpu_s_median": med(res_cpu),
        }
    return out


def bench_frames(n: int, repeats: int) -> dict[str, Any]:
    """n sequential steps each returning a ~1 MiB DataFrame (stored as a DuckDB table)."""
    doc = chain_doc(f"frames{n}", n, call="make_df")
    # The function's own cost, to separate it from the runtime's.
    settle()
    t0 = time.perf_counter()
    for _ in range(n):
        make_df()
    fn_ms = (time.perf_counter() - t0) / n * 1e3
    totals, stats, sizes = [], [], []
    for r in range(repeats):
        with fresh_dir(f"frames{n}") as d:
            db = d / "airun.duckdb"
            wf = airun_nb.Workflow.from_dict(doc)
            settle()
            t0 = time.perf_counter()
            res = wf.run(db=db, namespace={"make_df": make_df}, new=True)
            tr = time.perf_counter() - t0
            assert res.status == "completed", res.status
            assert len(res.executed) == n
            totals.append(tr)
            stats.append(attempt_stats(res.run_id, db))
            size = db.stat().st_size
            sizes.append(size)
            log(
                f"  frames {n} #{r + 1}: run {tr:.3f} s = {tr / n * 1e3:.2f} ms/step, "
                f"median cycle {stats[-1]['cycle_median_ms']:.2f} ms, store {size / 2**20:.0f} MiB"
            )
    return {
        "steps": n,
        "repeats": repeats,
        "frame_bytes": int(make_df().memory_usage(index=False).sum()),
        "function_ms": fn_ms,
        "store_mib": med(sizes) / 2**20,
        "run_s": totals,
        "run_s_median": med(totals),
        "per_step_ms_median_of_runs": med(totals) / n * 1e3,
        "cycle_median_ms": med([s["cycle_median_ms"] for s in stats]),
        "in_step_median_ms": med([s["in_step_median_ms"] for s in stats]),
    }


# --------------------------------------------------------------------------- raw DuckDB baselines


def _step_schema() -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """The airun ``steps`` table definition (same width and key as the real one)."""
    from airun_nb.store.database import TABLES

    cols, pk = TABLES["steps"]
    return list(cols), tuple(pk)


def _step_row(i: int, cols: list[tuple[str, str]]) -> dict[str, Any]:
    """One completed trivial step, as airun would store it."""
    now = pd.Timestamp.now()
    known: dict[str, Any] = {
        "run_id": "r-bench000",
        "step_id": f"s{i}",
        "position": i,
        "kind": "call",
        "status": "completed",
        "attempts": 1,
        "def_hash": "0123456789abcdef",
        "code_hash": "fedcba9876543210",
        "eff_hash": "00112233445566778899aabbccddeeff",
        "started_at": now,
        "finished_at": now,
        "finish_seq": i,
        "output_kind": "json",
        "output_json": "1",
        "comp_attempts": 0,
    }
    return {c: known.get(c) for c, _ in cols}


def _create_steps(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    cols, pk = _step_schema()
    body = ", ".join(f"{c} {t}" for c, t in cols)
    if pk:
        body += f", PRIMARY KEY ({', '.join(pk)})"
    con.execute(f"CREATE TABLE steps ({body})")
    return cols


def bench_duckdb_autocommit(n: int) -> dict[str, Any]:
    """(a) one INSERT of one step row per step, each its own (auto-committed) transaction."""
    with fresh_dir("duck-a") as d:
        con = duckdb.connect(str(d / "raw.duckdb"))
        cols = _create_steps(con)
        sql = f"INSERT INTO steps VALUES ({', '.join('?' for _ in cols)})"

        def go() -> None:
            for i in range(1, n + 1):
                row = _step_row(i, cols)
                con.execute(sql, [row[c] for c, _ in cols])

        t, _ = timed(go)
        count = (con.execute("SELECT count(*) FROM steps").fetchone() or (0,))[0]
        con.close()
    assert count == n
    log(f"  duckdb autocommit {n}: {t:.3f} s = {t / n * 1e3:.3f} ms/step")
    return {"steps": n, "total_s": t, "per_step_ms": t / n * 1e3}


def bench_duckdb_batched(n: int, batch: int = 100) -> dict[str, Any]:
    """(b) the same rows, ``batch`` per transaction, inserted from an Arrow table
    (building the Arrow table from the row dicts is included in the time)."""
    with fresh_dir("duck-b") as d:
        con = duckdb.connect(str(d / "raw.duckdb"))
        cols = _create_steps(con)
        arrow_types = {
            "VARCHAR": pa.string(),
            "BIGINT": pa.int64(),
            "TIMESTAMP": pa.timestamp("us"),
            "BLOB": pa.binary(),
        }
        schema = pa.schema([(c, arrow_types.get(t, pa.string())) for c, t in cols])

        def go() -> None:
            for start in range(1, n + 1, batch):
                rows = [_step_row(i, cols) for i in range(start, min(start + batch, n + 1))]
                table = pa.Table.from_pylist(rows, schema=schema)
                con.execute("BEGIN")
                con.register("__bench_batch", table)
                con.execute("INSERT INTO steps SELECT * FROM __bench_batch")
                con.unregister("__bench_batch")
                con.execute("COMMIT")

        t, _ = timed(go)
        count = (con.execute("SELECT count(*) FROM steps").fetchone() or (0,))[0]
        con.close()
    assert count == n
    log(f"  duckdb batched({batch}) {n}: {t:.3f} s = {t / n * 1e3:.4f} ms/step")
    return {"steps": n, "batch": batch, "total_s": t, "per_step_ms": t / n * 1e3}


def bench_duckdb_frames(n: int) -> dict[str, Any]:
    """(d) the DataFrame case without airun: CREATE TABLE from the frame via Arrow, per step."""
    with fresh_dir("duck-d") as d:
        con = duckdb.connect(str(d / "raw.duckdb"))

        def go() -> None:
            for i in range(1, n + 1):
                table = pa.Table.from_pandas(make_df(), preserve_index=False)
                con.register("__bench_df", table)
                con.execute(f'CREATE TABLE "t{i}" AS SELECT * FROM __bench_df')
                con.unregister("__bench_df")

        t, _ = timed(go)
        con.close()
    log(f"  duckdb frames {n}: {t:.3f} s = {t / n * 1e3:.2f} ms/step")
    return {"steps": n, "total_s": t, "per_step_ms": t / n * 1e3}


# --------------------------------------------------------------------------- LangGraph baseline


def bench_langgraph(
    n: int, durability: str | None = None, loop: bool = False
) -> dict[str, Any] | None:
    """(c) LangGraph: a StateGraph of n sequential trivial nodes, SqliteSaver checkpointer.

    ``loop=True``: one trivial node that loops back to itself n times instead (LangGraph's
    checkpoints carry a version of every channel, so a graph of n nodes writes checkpoints that
    grow with n; the loop shows the per-step cost without that effect).
    """
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
    if loop:
        graph.add_node("n", node)
        graph.add_edge(START, "n")
        graph.add_conditional_edges("n", lambda s: "n" if s["x"] < n else END)
    else:
        for i in range(n):
            graph.add_node(f"n{i}", node)
        graph.add_edge(START, "n0")
        for i in range(n - 1):
            graph.add_edge(f"n{i}", f"n{i + 1}")
        graph.add_edge(f"n{n - 1}", END)
    with fresh_dir("langgraph") as d:
        path = d / "checkpoints.sqlite"
        conn = sqlite3.connect(str(path), check_same_thread=False)
        tc, app = timed(lambda: graph.compile(checkpointer=SqliteSaver(conn)))
        config = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}
        kwargs = {"durability": durability} if durability else {}
        t, out = timed(lambda: app.invoke({"x": 0}, config, **kwargs))
        checkpoints = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        conn.close()
        size = sum(p.stat().st_size for p in d.iterdir())
    assert out["x"] == n, out
    log(
        f"  langgraph {n}{' loop' if loop else ''} ({durability or 'default'}): invoke {t:.3f} s = "
        f"{t / n * 1e3:.3f} ms/node, {checkpoints} checkpoints, {size / 2**20:.1f} MiB"
    )
    return {
        "steps": n,
        "durability": durability or "default",
        "loop": loop,
        "compile_s": tc,
        "total_s": t,
        "per_step_ms": t / n * 1e3,
        "checkpoints": checkpoints,
        "file_mib": size / 2**20,
    }


# --------------------------------------------------------------------------- report


def _fmt_ratio(x: float, base: float | None) -> str:
    if base is None or not base or x != x:
        return "-"
    return f"{x / base:.2f}x"


def repeat(fn: Callable[[], dict[str, Any] | None], k: int) -> dict[str, Any] | None:
    """Run a baseline k times; keep every sample, report the median (and the best)."""
    results = [fn() for _ in range(k)]
    if any(r is None for r in results):
        return None
    samples = [float(r["total_s"]) for r in results if r is not None]
    out = dict(results[-1] or {})
    n = out["steps"]
    out.update(
        samples_s=samples,
        total_s=med(samples),
        best_s=min(samples),
        per_step_ms=med(samples) / n * 1e3,
    )
    return out


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured scenario as one row: name, steps, samples (wall s), per-step median."""
    rows: list[dict[str, Any]] = []

    def add(name: str, steps: int, samples: list[float], median_ms: float | None = None) -> None:
        rows.append(
            {
                "scenario": name,
                "steps": steps,
                "runs": len(samples),
                "total_s": med(samples),
                "best_s": min(samples),
                "per_step_ms": med(samples) / steps * 1e3,
                "median_ms": median_ms,
            }
        )

    for key, label in (
        ("chain_1000", "airun: trivial call steps"),
        ("chain_10000", "airun: trivial call steps"),
        ("chain_1000_sync", "airun: trivial call steps, AIRUN_SYNC=1"),
    ):
        c = res.get(key)
        if c:
            add(label, c["steps"], c["run_s"], c["cycle_median_ms"])
    fr = res.get("frames")
    if fr:
        add(
            "airun: steps returning a 1 MiB DataFrame",
            fr["steps"],
            fr["run_s"],
            fr["cycle_median_ms"],
        )
    rs = res.get("chain_10000", {}).get("resume")
    if rs:
        n = res["chain_10000"]["steps"]
        add("airun: resume finished run, from_dict + run()", n, rs["total_s"])
        add("airun: resume finished run, run() only", n, rs["run_s"])
    for key, label in (
        ("duckdb_autocommit", "raw DuckDB: INSERT 1 step row + commit"),
        ("duckdb_batched", "raw DuckDB: 100 step rows/txn from Arrow"),
        ("duckdb_frames", "raw DuckDB: CREATE TABLE from 1 MiB frame"),
        ("langgraph", "LangGraph+SqliteSaver: N-node chain"),
        ("langgraph_sync", "LangGraph+SqliteSaver: N-node chain, sync"),
        ("langgraph_loop", "LangGraph+SqliteSaver: 1 node looped N x"),
    ):
        b = res.get(key)
        if b:
            add(label, b["steps"], b["samples_s"])
    return rows


def report(res: dict[str, Any]) -> str:
    rows = res["table"]
    base = res["duckdb_autocommit"]["per_step_ms"]
    lg = res.get("langgraph")
    lg_ms = lg["per_step_ms"] if lg else None
    head = (
        "scenario", "steps", "runs", "total s", "best s", "ms/step", "median ms",
        "vs DuckDB", "vs LangGraph",
    )  # fmt: skip
    cells = [
        (
            r["scenario"],
            f"{r['steps']:,}",
            str(r["runs"]),
            f"{r['total_s']:.3f}",
            f"{r['best_s']:.3f}",
            f"{r['per_step_ms']:.3f}",
            "-" if r["median_ms"] is None else f"{r['median_ms']:.3f}",
            _fmt_ratio(r["per_step_ms"], base),
            _fmt_ratio(r["per_step_ms"], lg_ms),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(
            c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(c))
        )

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    out += [
        "",
        "total s    median wall time over `runs` runs (each in a fresh folder and store); airun",
        "           rows time .run() only, except the 'from_dict + run()' resume row",
        "best s     the fastest of those runs (least disturbed by other processes)",
        "ms/step    total s / steps (amortized: planning, folds and the final flush included)",
        "median ms  median over steps of started_at(k+1) - started_at(k), read back with",
        "           airun_nb.attempts(): one full step cycle; median of the per-run medians",
        "vs DuckDB  ms/step / ms/step of 'raw DuckDB: INSERT 1 step row + commit'",
        "vs LangGraph  ms/step / ms/step of 'LangGraph+SqliteSaver: N-node chain'",
    ]
    if not lg:
        out.append("langgraph: not installed (pip install '.[bench]')")
    out.append("")
    for key in ("chain_1000", "chain_10000", "chain_1000_sync"):
        c = res.get(key)
        if c:
            out.append(
                f"  {c['steps']:,} steps{' (sync)' if key.endswith('sync') else ''}: from_dict "
                f"{c['parse_s_median']:.3f} s; attempt span median {c['in_step_median_ms']:.4f} "
                f"ms; cycle mean {c['cycle_mean_ms']:.3f} / p99 {c['cycle_p99_ms']:.3f} / max "
                f"{c['cycle_max_ms']:.1f} ms; CPU {c['cpu_s_median']:.3f} s a run"
            )
    rs = res.get("chain_10000", {}).get("resume")
    if rs:
        out.append(
            f"  resume of 10,000: from_dict median {rs['from_dict_s_median']:.3f} s, run() "
            f"median {rs['run_s_median']:.3f} s (best {rs['run_s_best']:.3f} s, CPU median "
            f"{rs['run_cpu_s_median']:.3f} s)"
        )
    fr = res.get("frames")
    if fr:
        out.append(
            f"  DataFrame steps: make_df alone costs {fr['function_ms']:.3f} ms; frame = "
            f"{fr['frame_bytes'] / 2**20:.2f} MiB; store {fr['store_mib']:.0f} MiB"
        )
    for key in ("langgraph", "langgraph_loop"):
        b = res.get(key)
        if b:
            out.append(
                f"  {key}: compile {b['compile_s']:.3f} s (excluded), {b['checkpoints']} "
                f"checkpoints, {b['file_mib']:.1f} MiB of SQLite for {b['steps']} steps"
            )
    load = res["machine"].get("loadavg_at_start")
    if load:
        out.append(f"  load average at start: {load[0]:.2f} (on {res['machine']['cpus']} CPUs)")
    out.append("")
    out.append("Targets (informational):")
    for t in res["targets"]:
        out.append(f"  [{t['verdict']}] {t['name']}: {t['measured']} (target {t['target']})")
    return "\n".join(out)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in ("chain_1000", "chain_10000"):
        c = res.get(key)
        if c:
            m = c["cycle_median_ms"]
            out.append(
                {
                    "name": f"median per trivial step, {c['steps']:,}-step chain",
                    "measured": f"{m:.3f} ms (amortized {c['per_step_ms_median_of_runs']:.3f} ms)",
                    "target": f"< {TARGET_MEDIAN_MS} ms",
                    "value": m,
                    "verdict": "PASS" if m < TARGET_MEDIAN_MS else "MISS",
                }
            )
    rs = res.get("chain_10000", {}).get("resume")
    if rs:
        n = res["chain_10000"]["steps"]
        for label, v, best in (
            ("run() only", rs["run_s_median"], rs["run_s_best"]),
            ("from_dict + run()", rs["total_s_median"], min(rs["total_s"])),
        ):
            out.append(
                {
                    "name": f"replay of a finished {n:,}-step run, {label}",
                    "measured": f"median {v:.3f} s, best {best:.3f} s",
                    "target": f"< {TARGET_REPLAY_S} s",
                    "value": v,
                    "verdict": "PASS" if v < TARGET_REPLAY_S else "MISS",
                }
            )
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "airun_nb": getattr(airun_nb, "__version__", "?"),
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "pandas": pd.__version__,
    }
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        import langgraph  # noqa: F401

        info["langgraph"] = version("langgraph")
        info["langgraph-checkpoint-sqlite"] = version("langgraph-checkpoint-sqlite")
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = os.getloadavg()
    return info


QUICK = {
    "c1k": 3, "c10k": 1, "resumes": 3, "frames": 20, "frame_reps": 1, "sync_reps": 1,
    "duck_a": 500, "duck_b": 2000, "base_reps": 1, "lg": 200, "lg_sync": False,
}  # fmt: skip
FULL = {
    "c1k": 7, "c10k": 5, "resumes": 3, "frames": 100, "frame_reps": 3, "sync_reps": 5,
    "duck_a": 2000, "duck_b": 10000, "base_reps": 3, "lg": 1000, "lg_sync": True,
}  # fmt: skip


def run_benchmarks(quick: bool) -> dict[str, Any]:
    cfg = QUICK if quick else FULL
    res: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "config": cfg,
        "machine": machine(),
    }
    t_start = time.perf_counter()

    log("warm-up (not reported)")
    with fresh_dir("warmup") as d:
        airun_nb.Workflow.from_dict(chain_doc("warmup", 50)).run(
            db=d / "airun.duckdb", namespace={"f": f}, new=True
        )

    log("1. trivial sequential steps")
    res["chain_1000"] = bench_chain(1000, cfg["c1k"])
    log("1+3. 10,000 trivial steps, then resume of the finished run")
    res["chain_10000"] = bench_chain(10000, cfg["c10k"], resume_repeats=cfg["resumes"])
    log("1'. 1,000 trivial steps with AIRUN_SYNC=1 (fsync per journal record)")
    res["chain_1000_sync"] = bench_chain(1000, cfg["sync_reps"], sync=True)
    log("2. 1 MiB DataFrame steps")
    res["frames"] = bench_frames(cfg["frames"], cfg["frame_reps"])
    k = cfg["base_reps"]
    log("4a/b/d. raw DuckDB baselines")
    res["duckdb_autocommit"] = repeat(lambda: bench_duckdb_autocommit(cfg["duck_a"]), k)
    res["duckdb_batched"] = repeat(lambda: bench_duckdb_batched(cfg["duck_b"]), k)
    res["duckdb_frames"] = repeat(lambda: bench_duckdb_frames(cfg["frames"]), k)
    log("4c. LangGraph + SqliteSaver")
    res["langgraph"] = repeat(lambda: bench_langgraph(cfg["lg"]), k)
    if res["langgraph"] is None:
        log("langgraph: not installed (pip install '.[bench]')")
    else:
        if cfg["lg_sync"]:
            with contextlib.suppress(TypeError):  # older LangGraph: no durability argument
                res["langgraph_sync"] = repeat(
                    lambda: bench_langgraph(cfg["lg"], durability="sync"), k
                )
        res["langgraph_loop"] = repeat(lambda: bench_langgraph(cfg["lg"], loop=True), k)
    res["table"] = table_rows(res)
    res["targets"] = targets(res)
    res["elapsed_s"] = time.perf_counter() - t_start
    return res


# --------------------------------------------------------------------------- crash check

CRASH_STEPS = 2000
CRASH_AT = 1500


def crash_child(db: str, n: int) -> None:
    """Runs in the subprocess: the workflow whose step CRASH_AT SIGKILLs this process."""
    doc = chain_doc("crash", n, call="crash_step")
    airun_nb.Workflow.from_dict(doc).run(db=db, namespace={"crash_step": crash_step}, new=True)
    print("child: the run finished without being killed", flush=True)


def crash_check(n: int = CRASH_STEPS, kill_at: int = CRASH_AT) -> bool:
    print(f"crash check: {n}-step workflow, step {kill_at} SIGKILLs its own process")
    ok = True
    with fresh_dir("crash") as d:
        db = d / "airun.duckdb"
        env = dict(os.environ, AIRUN_BENCH_KILL_AT=str(kill_at))
        env.pop("AIRUN_SYNC", None)  # the default: no fsync, durable against a process kill
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--_crash-child", str(db), str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        dt = time.perf_counter() - t0
        killed = proc.returncode == -signal.SIGKILL
        print(
            f"  child exit code {proc.returncode} "
            f"({'killed by SIGKILL' if killed else 'NOT killed by SIGKILL'}) after {dt:.1f} s"
        )
        if not killed:
            ok = False
            print("  child stdout:", proc.stdout.strip()[-2000:])
            print("  child stderr:", proc.stderr.strip()[-2000:])
        journal = db.with_name(db.name + ".journal")
        if journal.exists():
            print(f"  journal left by the child: {journal.stat().st_size:,} bytes")
        runs = airun_nb.runs(db=db)
        print(f"  runs in the store: {len(runs)}")
        if len(runs) != 1:
            print("  FAIL: expected exactly one run")
            return False
        run_id = str(runs["run_id"].iloc[0])
        print(f"  run {run_id}: status {runs['status'].iloc[0]}")
        steps = airun_nb.steps(run_id, db=db)
        status = dict(zip(steps["step_id"].astype(str), steps["status"].astype(str), strict=True))
        completed = [s for s, v in status.items() if v == "completed"]
        expected = {f"s{i}" for i in range(1, kill_at)}
        missing = sorted(expected - set(completed), key=lambda s: int(s[1:]))
        extra = sorted(set(completed) - expected, key=lambda s: int(s[1:]))
        good = not missing and not extra
        print(
            f"  completed steps in the store: {len(completed):,} (expected {kill_at - 1:,}: "
            f"s1..s{kill_at - 1})  {'PASS' if good else 'FAIL'}"
        )
        if missing:
            print(f"    missing: {len(missing)} (first: {', '.join(missing[:5])})")
        if extra:
            print(f"    unexpected: {', '.join(extra[:5])}")
        ok = ok and good
        inflight = status.get(f"s{kill_at}")
        print(f"  step s{kill_at} (in flight at the kill): {inflight}")

        # Beyond the count: the run resumes, s{kill_at} runs again as attempt 2, nothing else
        # runs twice (design: "A step that was in flight at a crash runs again, and that second
        # attempt is recorded as such").
        global _crash_calls
        _crash_calls = 0
        os.environ.pop("AIRUN_BENCH_KILL_AT", None)
        res = airun_nb.Workflow.from_dict(chain_doc("crash", n, call="crash_step")).run(
            db=db, namespace={"crash_step": crash_step}, resume=run_id
        )
        steps = airun_nb.steps(run_id, db=db)
        done = int((steps["status"] == "completed").sum())
        att = steps.set_index(steps["step_id"].astype(str))["attempts"]
        again = len(res.executed)
        resumed_ok = (
            res.status == "completed"
            and done == n
            and again == n - kill_at + 1
            and int(att[f"s{kill_at}"]) == 2
            and int(att["s1"]) == 1
        )
        print(
            f"  resume: status {res.status}, {done:,}/{n:,} completed, {again} executed "
            f"(expected {n - kill_at + 1}), s{kill_at} attempts {int(att[f's{kill_at}'])} "
            f"(expected 2)  {'PASS' if resumed_ok else 'FAIL'}"
        )
        ok = ok and resumed_ok
    print(f"crash check: {'PASS' if ok else 'FAIL'}")
    return ok


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_crash-child"]:
        crash_child(argv[1], int(argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller run for CI smoke (< 60 s)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    ap.add_argument(
        "--crash-check",
        action="store_true",
        help="only verify durability: SIGKILL at step 1500 of 2000, count what survived",
    )
    args = ap.parse_args(argv)
    if args.crash_check:
        ok = crash_check()
        if args.json:
            Path(args.json).write_text(json.dumps({"crash_check": "PASS" if ok else "FAIL"}))
        return 0 if ok else 1
    res = run_benchmarks(args.quick)
    print()
    print(
        f"airun_nb step overhead ({res['mode']} run, {res['machine']['cpus']} CPUs, "
        f"python {res['machine']['python']}, duckdb {res['machine']['duckdb']}, "
        f"took {res['elapsed_s']:.0f} s)"
    )
    print()
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
