#!/usr/bin/env python3
"""Reads beside writers: what a reader waits for while several processes run workflows.

    python benchmarks/contention.py                 # 4 writers, 40 reads of each kind
    python benchmarks/contention.py --quick         # 2 writers, 12 reads of each kind
    python benchmarks/contention.py --writers 4 --reads 60 --stored 250
    python benchmarks/contention.py --step-ms 25    # writers whose steps wait 25 ms each
    python benchmarks/contention.py --no-http       # without `airun serve`

A store of ``--stored`` small runs (4 ``call`` steps each) is built first and `airun serve` is
started on it (loopback). Then a long-lived reader (this process: a second kernel or the
dashboard read this way) times, in turns:

- ``runs()``: the history frame of every run;
- ``runs()`` + ``steps()``: what the issue measured in the soak;
- ``run_row(id)``: a named read of one run (``GET /v1/runs/ID``, ``airun show``);
- ``airun runs --db``: a new process per read (its time includes starting Python);
- ``GET /v1/runs``: the service's run list (the server is another long-lived reader);

first with no writer (the floor), then while ``--writers`` processes re-run a 4-step cell
without pause (trivial steps by default: the writers flat out, the store growing by hundreds of
runs a second; ``--step-ms`` makes each step wait, as a step waiting on I/O does), then again
with no writer on the grown store (what the store's size alone costs). It prints the median,
p95, p99 and max of each read, the ratio to the floor, the runs the writers made, how many
journal bytes were still unfolded when each read began (the tail a reader has to fold), and
every read error. Progress goes to stderr, the table to stdout; the exit status is 0 whether
or not the goals are met. Goal (issue "Faults", item 8): ``runs()`` + ``steps()`` and
``GET /v1/runs`` median under 100 ms and p99 under 500 ms beside 4 writers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # PYTHONPATH, when set, says which checkout is measured

from speed import airun_small, pct, release  # noqa: E402

PAUSE = 0.1  # seconds between two reads (a dashboard refreshing often)

WRITER = """
import sys, time
sys.path.insert(0, {here!r})
from pathlib import Path
from speed import SMALL_TEXT, _one
from airun_nb import Workflow
stop = Path({stop!r})
ms = {step_ms!r}
def work() -> int:
    time.sleep(ms / 1000)  # a step that waits on something (I/O, a service) this long
    return 1
ns = {{"f": work if ms else _one}}
Workflow.from_yaml(SMALL_TEXT).run(db={db!r}, namespace=ns)
Path({ready!r}).touch()
n = 0
while not stop.exists() and n < 20000:
    Workflow.from_yaml(SMALL_TEXT).run(db={db!r}, namespace=ns)
    n += 1
print("RUNS", n, flush=True)
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _airun() -> list[str]:
    script = Path(sys.executable).parent / "airun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "airun_nb"]


def unfolded(db: Path) -> int:
    """Journal bytes past the marks folded into DuckDB, summed over every slot (as the lock
    file tells them; a cheap look that takes no lock)."""
    import json

    from airun_nb.store.journal import slot_paths
    from airun_nb.store.lease import Lease

    lease = Lease(db)
    if not hasattr(lease, "folded"):  # a checkout before the lock file said it: unknown
        return -1
    total = 0
    for slot, path in slot_paths(db):
        with contextlib.suppress(OSError, ValueError), open(path, "rb") as fh:
            head = fh.readline()  # the header and the size only: reading whole slots of
            size = os.fstat(fh.fileno()).st_size  # several MB took the reader's CPU
            if not head:
                continue
            gen = str(json.loads(head).get("gen"))
            mark = lease.folded(slot)
            start = mark[1] if mark is not None and mark[0] == gen else len(head)
            total += max(0, size - start)
    return total


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def reads(db: Path, server: tuple[str, str] | None) -> dict[str, Callable[[], Any]]:
    import airun_nb
    from airun_nb.store.database import Store

    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
    last = [str(airun_nb.runs(db=db)["run_id"].iloc[-1])]

    def cli() -> None:
        done = subprocess.run(
            [*_airun(), "runs", "--db", str(db)], capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise RuntimeError(f"exit {done.returncode}: {' '.join(tail)}")

    def named() -> None:
        if Store.open(db).run_row(last[0]) is None:
            raise RuntimeError(f"run {last[0]} not found")

    out = {
        "runs()": lambda: airun_nb.runs(db=db),
        "runs() + steps()": lambda: (airun_nb.runs(db=db), airun_nb.steps(db=db)),
        "run_row(id)": named,
        "airun runs": cli,
    }
    if server is not None:
        url, token = server

        import httpx

        # One client kept open, as a page that polls keeps its connection: a new client per
        # request timed httpx building its TLS context (tens of ms), not the service.
        client = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120)

        def http() -> None:
            got = client.get(url + "/v1/runs")
            if got.status_code != 200 or not got.json().get("runs"):
                raise RuntimeError(f"GET /v1/runs: {got.status_code} {got.text[:200]}")

        out["GET /v1/runs"] = http
    return out


def phase(
    db: Path, n: int, busy: Callable[[], bool], server: tuple[str, str] | None
) -> dict[str, dict[str, Any]]:
    todo = reads(db, server)
    out: dict[str, dict[str, Any]] = {k: {"lat": [], "err": [], "tail": []} for k in todo}
    for i in range(n):
        for name, read in todo.items():
            if not busy():
                return out
            tail = unfolded(db)
            t = time.perf_counter()
            try:
                read()
            except Exception as exc:  # counted and shown: a reader never sees a raw lock error
                out[name]["err"].append(f"{type(exc).__name__}: {exc}")
            out[name]["lat"].append(time.perf_counter() - t)
            out[name]["tail"].append(tail)
            time.sleep(PAUSE)
        if i % 5 == 4:
            log(f"  {i + 1} rounds of reads")
    return out


@contextlib.contextmanager
def service(db: Path, folder: Path) -> Iterator[tuple[str, str]]:
    """A real `airun serve` on the store (loopback), and a token for it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.service import make_token, running_server

    token = make_token(db, "bench")
    with running_server(db, folder) as server:
        yield server.url, token


def _stop(folder: Path, procs: list[subprocess.Popen[str]]) -> None:
    (folder / "stop").touch()
    for p in procs:
        if p.poll() is None:
            p.kill()


def _bytes(v: float) -> str:
    return "-" if v < 0 else f"{v:,.0f}"


def ms(v: float) -> str:
    return f"{v * 1000:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--writers", type=int, default=None)
    ap.add_argument("--reads", type=int, default=None)
    ap.add_argument("--stored", type=int, default=250)
    ap.add_argument("--no-http", action="store_true", help="no `airun serve` (GET /v1/runs)")
    ap.add_argument(
        "--step-ms",
        type=float,
        default=0.0,
        help="each writer step waits this long (0: trivial steps, the writers flat out)",
    )
    args = ap.parse_args()
    writers = args.writers or (2 if args.quick else 4)
    n = args.reads or (12 if args.quick else 40)
    load0 = loadavg()
    t0 = time.perf_counter()
    d = Path(tempfile.mkdtemp(prefix="airun-contention-"))
    db = d / "airun.duckdb"
    procs: list[subprocess.Popen[str]] = []
    made = stored_after = 0
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, d, ignore_errors=True)  # run last
        stack.callback(_stop, d, procs)  # after the server stopped
        log(f"building a store of {args.stored} runs")
        airun_small(args.stored, db)
        server = None if args.no_http else stack.enter_context(service(db, d))
        release(db)
        log(f"floor: {n} reads of each kind, no writer")
        floor = phase(db, n, lambda: True, server)
        release(db)
        stop = d / "stop"
        log(f"{writers} writers re-running a cell")
        for i in range(writers):
            code = WRITER.format(
                here=str(HERE),
                stop=str(stop),
                ready=str(d / f"w{i}.ready"),
                db=str(db),
                step_ms=args.step_ms,
            )
            procs.append(
                subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            )
        deadline = time.time() + 300
        while len(list(d.glob("w*.ready"))) < writers and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # the writers are under way
        busy = phase(db, n, lambda: all(p.poll() is None for p in procs), server)
        stop.touch()
        for p in procs:
            outs, _ = p.communicate(timeout=600)
            for line in outs.splitlines():
                if line.startswith("RUNS "):
                    made += int(line.split()[1])
        import airun_nb

        stored_after = len(airun_nb.runs(db=db))
        release(db)
        log(f"after: {n} reads of each kind on the grown store, no writer")
        after = phase(db, n, lambda: True, server)
        release(db)
    took = time.perf_counter() - t0
    load1 = loadavg()
    import duckdb

    work = f"steps waiting {args.step_ms:g} ms each" if args.step_ms else "trivial steps"
    print(
        f"airun_nb reads beside writers ({writers} writers re-running a 4-step cell, {work}, "
        f"{args.stored} runs stored, {n} reads of each kind a phase, {PAUSE:g} s apart; "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, duckdb {duckdb.__version__}; "
        f"took {took:.0f} s; /proc/loadavg {load0} before / {load1} after; "
        f"the writers made {made} runs while the reads ran: {stored_after} runs stored at the "
        "end)\n"
    )
    print(
        "| read | floor: median / p95 ms (no writer) | beside writers: median / p95 / p99 / max "
        "ms | median vs floor | journal bytes unfolded at read start (median) | after, store "
        "grown, no writer: median ms | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in floor:
        f, b = floor[name], busy[name]
        if not b["lat"]:
            continue
        fm, bm = statistics.median(f["lat"]), statistics.median(b["lat"])
        errs = f["err"] + b["err"] + after[name]["err"]
        print(
            f"| {name} | {ms(fm)} / {ms(pct(f['lat'], 0.95))} | {ms(bm)} / "
            f"{ms(pct(b['lat'], 0.95))} / {ms(pct(b['lat'], 0.99))} / {ms(max(b['lat']))} | "
            f"{bm / fm:.2f}x | {_bytes(statistics.median(b['tail']))} | "
            f"{ms(statistics.median(after[name]['lat'])) if after[name]['lat'] else '-'} | "
            f"{len(errs)} |"
        )
    for name in floor:
        for e in (floor[name]["err"] + busy[name]["err"] + after[name]["err"])[:3]:
            print(f"- {name}: {e}")
    print()
    for name in ("runs() + steps()", "GET /v1/runs"):
        got = busy.get(name, {}).get("lat")
        if got:
            med, p99 = statistics.median(got), pct(got, 0.99)
            ok = med < 0.1 and p99 < 0.5
            print(
                f"[{'PASS' if ok else 'MISS'}] {name} beside {writers} writers: median "
                f"{ms(med)} ms (goal < 100), p99 {ms(p99)} ms (goal < 500)"
            )


if __name__ == "__main__":
    main()
