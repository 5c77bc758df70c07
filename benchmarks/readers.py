#!/usr/bin/env python3
"""Readers and a writer on one store: what a polling reader costs a running workflow.

    python benchmarks/readers.py            # 7 rounds (~2 min on 2 cores)
    python benchmarks/readers.py --quick    # 3 rounds (< 60 s)
    python benchmarks/readers.py --json out.json

A writer process runs a burst of N trivial ``call`` steps (a chain, ``Workflow.from_dict`` then
``.run(db=..., namespace={"f": f}, new=True)``) on a fresh store, three ways in every round, in
an order that rotates from round to round:

- alone;
- while a reader process reads the store every 0.5 s with ``airun_nb.runs(db=...)`` and
  ``airun_nb.steps(db=...)`` in turns (both every 0.5 s with ``--pair``);
- while a reader process runs ``airun runs --db ...`` every 0.5 s.

It prints the writer's median steps/s for each, the ratio to "alone" (same run), and the
latency of the reads that overlapped a burst (p50 / p95 / max seconds a read). Goal: the writer
keeps at least 70% of its speed and every read answers within 1 s. Progress goes to stderr, the
table to stdout; the exit status is 0 whether or not the goal is met.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]

POLL = 0.5  # seconds from one read's start to the next
GOAL_RATIO = 0.70  # the writer keeps at least this share of its speed
GOAL_READ = 1.0  # seconds: every read answers within this
COMMAND_TIMEOUT = 180.0  # seconds for one writer command (a prep or a burst)
READY_TIMEOUT = 60.0  # seconds for a reader to start and answer its first read

VARIANTS = {
    "alone": "writer alone",
    "api": "+ reader: runs() / steps() every 0.5 s",
    "cli": "+ reader: `airun runs --db` every 0.5 s",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _import_airun() -> Any:
    try:
        import airun_nb
    except ImportError:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(ROOT))
        import airun_nb
    return airun_nb


def f() -> int:
    return 1


def chain_doc(n: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "s1", "call": "f"}]
    steps += [{"id": f"s{i}", "call": "f", "needs": [f"s{i - 1}"]} for i in range(2, n + 1)]
    return {"name": "burst", "steps": steps}


def _release(db: str) -> None:
    """Let go of the store now (no keeper thread lingering into the next phase)."""
    from airun_nb.store.database import Store

    with contextlib.suppress(Exception):
        Store.open(db).release()


# --------------------------------------------------------------------------- writer child
def writer_child() -> None:
    """Commands on stdin, one JSON object a line; answers ``RESULT {...}`` lines on stdout.

    ``{"cmd": "prep", "db": p}``: a small warm-up run creates the store (not timed).
    ``{"cmd": "burst", "db": p, "steps": n}``: the timed run. EOF on stdin ends the process.
    """
    airun_nb = _import_airun()
    workflows: dict[int, Any] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        db = cmd["db"]
        if cmd["cmd"] == "prep":
            airun_nb.Workflow.from_dict(chain_doc(20)).run(db=db, namespace={"f": f}, new=True)
            _release(db)
            out: dict[str, Any] = {"ok": True}
        else:
            n = int(cmd["steps"])
            wf = workflows.get(n) or workflows.setdefault(
                n, airun_nb.Workflow.from_dict(chain_doc(n))
            )
            t0, c0 = time.time(), time.process_time()
            p0 = time.perf_counter()
            result = wf.run(db=db, namespace={"f": f}, new=True)
            wall = time.perf_counter() - p0
            out = {
                "t0": t0,
                "t1": t0 + wall,
                "wall": wall,
                "cpu": time.process_time() - c0,
                "steps": n,
                "steps_s": n / wall,
                "status": str(result.status),
            }
            _release(db)
        print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------- reader child
def _airun_command() -> list[str]:
    script = Path(sys.executable).parent / "airun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "airun_nb"]


def reader_child(kind: str, db: str, stop: str, pair: bool = False) -> None:
    """Read ``db`` every POLL seconds until ``stop`` exists; one JSON line a read on stdout.

    The API reader calls ``runs()`` and ``steps()`` in turns, one a poll (both a poll with
    ``pair``, as a dashboard refreshing both would).
    """
    parent = os.getppid()
    if kind == "api":
        airun_nb = _import_airun()
        reads: list[tuple[str, Any]] = [
            ("runs()", lambda: airun_nb.runs(db=db)),
            ("steps()", lambda: airun_nb.steps(db=db)),
        ]
    else:
        cmd = [*_airun_command(), "runs", "--db", db]

        def cli() -> None:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                raise RuntimeError(f"exit {done.returncode}: {' '.join(tail)}")

        reads = [("airun runs", cli)]

    polls = 0

    def one_poll() -> None:
        nonlocal polls
        polls += 1
        todo = reads if pair else [reads[polls % len(reads)]]
        for name, read in todo:
            t, p = time.time(), time.perf_counter()
            err = None
            try:
                read()
            except Exception as exc:  # reported and counted by the parent
                err = f"{type(exc).__name__}: {exc}"
            rec = {"read": name, "t": t, "dur": time.perf_counter() - p, "err": err}
            print(json.dumps(rec), flush=True)

    one_poll()  # imports and the first connection: before the burst starts
    print("READY", flush=True)
    next_at = time.monotonic()
    while not os.path.exists(stop) and os.getppid() == parent:
        next_at += POLL
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # a read took longer than the period: no catch-up burst
        if os.path.exists(stop):
            break
        one_poll()


# --------------------------------------------------------------------------- parent
class Child:
    """A child process whose stdout lines are collected by a thread (no blocking reads)."""

    live: list[Child] = []

    def __init__(self, args: list[str], stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: killed with its children
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()
        Child.live.append(self)

    def _pump(self, stream: IO[str] | None, out: bool) -> None:
        assert stream is not None
        for line in stream:
            if out:
                self.lines.put(line.rstrip("\n"))
            else:
                self.stderr.append(line.rstrip("\n"))
        if out:
            self.lines.put(None)

    def expect(self, prefix: str, timeout: float, collect: list[str] | None = None) -> str:
        """The first stdout line starting with ``prefix`` (others go to ``collect``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {prefix!r} line within {timeout:g} s{self._why()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the child exited before {prefix!r}{self._why()}")
            if line.startswith(prefix):
                return line[len(prefix) :]
            if collect is not None:
                collect.append(line)

    def send(self, obj: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.expect("RESULT ", COMMAND_TIMEOUT))
        return answer

    def drain(self, timeout: float) -> list[str]:
        """Every remaining stdout line, waiting up to ``timeout`` for the child to exit."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"  a child did not stop within {timeout:g} s: killed")
            self.kill()
        for t in self._threads:
            t.join(timeout=5)
        out = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                out.append(line)
        return out

    def _why(self) -> str:
        tail = "\n".join(self.stderr[-5:])
        return f"; its stderr ends:\n{tail}" if tail else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self in Child.live:
            Child.live.remove(self)

    def close(self, timeout: float = 10.0) -> None:
        """End a writer: EOF on its stdin, then kill it if it does not go."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.drain(timeout)
        self.kill()


def _kill_all() -> None:
    for child in list(Child.live):
        child.kill()


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks; atexit kills children


def one_burst(
    writer: Child, variant: str, steps: int, workdir: Path, pair: bool = False
) -> dict[str, Any]:
    """One timed burst on a fresh store, with the variant's reader polling it."""
    d = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=workdir))
    db = str(d / "airun.duckdb")
    stop = d / "stop"
    writer.send({"cmd": "prep", "db": db})
    reader = None
    reads: list[dict[str, Any]] = []
    try:
        if variant != "alone":
            reader = Child(["--_reader", variant, db, str(stop), "pair" if pair else "turns"])
            early: list[str] = []
            reader.expect("READY", READY_TIMEOUT, collect=early)
            time.sleep(0.3)  # the reader is in its polling rhythm
        res = writer.send({"cmd": "burst", "db": db, "steps": steps})
        if reader is not None:
            time.sleep(POLL)  # one more read after the burst: the store is readable again
            stop.touch()
            lines = reader.drain(timeout=60)
            reads = [json.loads(x) for x in lines if x.startswith("{")]
            if reader.proc.returncode not in (0, None):
                res["reader_exit"] = reader.proc.returncode
                res["reader_stderr"] = reader.stderr[-3:]
    finally:
        if reader is not None:
            reader.kill()
        shutil.rmtree(d, ignore_errors=True)
    # The reads a burst could slow down: those that overlapped it.
    res["reads"] = [r for r in reads if r["t"] < res["t1"] and r["t"] + r["dur"] > res["t0"]]
    res["reads_total"] = len(reads)
    res["read_errors"] = [r["err"] for r in reads if r["err"]]
    return res


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    base = statistics.median(r["steps_s"] for r in results["alone"])
    out: dict[str, dict[str, Any]] = {}
    for variant, rs in results.items():
        rates = [r["steps_s"] for r in rs]
        med = statistics.median(rates)
        lat = [x["dur"] for r in rs for x in r["reads"]]
        out[variant] = {
            "steps_s": med,
            "min": min(rates),
            "max": max(rates),
            "cpu_ms_step": statistics.median(1000 * r["cpu"] / r["steps"] for r in rs),
            "ratio": med / base,
            "reads": len(lat),
            "reads_total": sum(r["reads_total"] for r in rs),
            "p50": pct(lat, 0.5) if lat else None,
            "p95": pct(lat, 0.95) if lat else None,
            "max_read": max(lat) if lat else None,
            "slow_reads": sum(1 for x in lat if x > GOAL_READ),
            "errors": [e for r in rs for e in r["read_errors"]],
            "statuses": sorted({r["status"] for r in rs}),
        }
    return out


def report(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [
        f"airun_nb readers and a writer ({meta['mode']} run, {meta['steps']:,}-step burst, "
        f"{meta['rounds']} rounds alternating, {meta['cpus']} CPUs, python {meta['python']}, "
        f"duckdb {meta['duckdb']}, took {meta['took']:.0f} s, load average "
        f"{meta['load_before']:.2f} before / {meta['load_after']:.2f} after)",
        "",
        "| writer | steps/s (median) | min-max | vs alone | reads in bursts | "
        "p50 s | p95 s | max s | reads > 1 s | read errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        reads = "-" if variant == "alone" else str(s["reads"])
        lines.append(
            f"| {VARIANTS[variant]} | {s['steps_s']:,.0f} | {s['min']:,.0f}-{s['max']:,.0f} | "
            f"{s['ratio']:.2f}x | {reads} | {sec(s['p50'])} | {sec(s['p95'])} | "
            f"{sec(s['max_read'])} | {s['slow_reads'] if reads != '-' else '-'} | "
            f"{len(s['errors']) if reads != '-' else '-'} |"
        )
    lines.append("")
    for variant, s in summary.items():
        if variant == "alone":
            continue
        ok_ratio = s["ratio"] >= GOAL_RATIO
        ok_read = s["reads"] > 0 and s["slow_reads"] == 0 and not s["errors"]
        lines.append(
            f"[{'PASS' if ok_ratio else 'MISS'}] {VARIANTS[variant]}: writer at "
            f"{s['ratio']:.2f}x of alone (goal >= {GOAL_RATIO:.2f}x)"
        )
        lines.append(
            f"[{'PASS' if ok_read else 'MISS'}] {VARIANTS[variant]}: slowest read during a "
            f"burst {sec(s['max_read'])} s over {s['reads']} reads, {len(s['errors'])} errors "
            f"(goal < {GOAL_READ:g} s, none failing)"
        )
        for e in s["errors"][:3]:
            lines.append(f"       error: {e}")
    odd = {v: s["statuses"] for v, s in summary.items() if s["statuses"] != ["completed"]}
    if odd:
        lines.append(f"runs not completed: {odd}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_writer"]:
        writer_child()
        return 0
    if argv[:1] == ["--_reader"]:
        reader_child(argv[1], argv[2], argv[3], pair=argv[4:5] == ["pair"])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds (< 60 s)")
    ap.add_argument("--rounds", type=int, help="rounds (default 7, 3 with --quick)")
    ap.add_argument("--steps", type=int, default=2000, help="steps a burst (default 2000)")
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    ap.add_argument(
        "--pair", action="store_true", help="the API reader calls runs() and steps() every poll"
    )
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    if args.pair:
        VARIANTS["api"] = "+ reader: runs() + steps() every 0.5 s"
    atexit.register(_kill_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    order = list(VARIANTS)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in order}
    workdir = Path(tempfile.mkdtemp(prefix="airun-readers-"))
    writer = Child(["--_writer"], stdin=True)
    try:
        writer.send({"cmd": "prep", "db": str(workdir / "warm.duckdb")})  # imports, not timed
        writer.send({"cmd": "burst", "db": str(workdir / "warm.duckdb"), "steps": args.steps})
        for r in range(rounds):
            turn = order[r % len(order) :] + order[: r % len(order)]
            for variant in turn:
                res = one_burst(writer, variant, args.steps, workdir, args.pair)
                results[variant].append(res)
                lat = [x["dur"] for x in res["reads"]]
                log(
                    f"round {r + 1}/{rounds} {variant:>5}: {res['steps_s']:,.0f} steps/s"
                    + (f", {len(lat)} reads, slowest {max(lat):.3f} s" if lat else "")
                    + (f", {len(res['read_errors'])} read errors" if res["read_errors"] else "")
                )
    finally:
        writer.close()
        _kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    import duckdb

    summary = summarize(results)
    meta = {
        "mode": "quick" if args.quick else "full",
        "steps": args.steps,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "duckdb": duckdb.__version__,
        "took": time.perf_counter() - t_start,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    print(report(summary, meta))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"meta": meta, "summary": summary, "rounds": results}, indent=2)
        )
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
