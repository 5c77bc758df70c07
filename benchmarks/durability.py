"""Durability settings and readers: what each costs a writer, measured in one run.

1. A burst of N step transitions (a ``running`` and a ``completed`` record per step, the size
   the runner writes) through :meth:`Store.record_many`, with ``AIRUN_SYNC=0`` (no fsync),
   ``group`` (the default) and ``1``.
2. A burst five times as long (default setting) alone, and again while a second process reads the store
   every 0.5 s (``SELECT count(*) FROM steps``); the writer's ratio and the reader's slowest
   answer are printed.

Run: ``.venv/bin/python -m benchmarks.durability [--steps 2000] [--dir FOLDER]`` (``--dir``: a
folder on the disk to measure; the default temporary folder may be in memory, where an fsync
costs nothing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READER = """
import sys, time
from airun_nb.store.database import Store
db, stop = sys.argv[1], sys.argv[2]
worst = 0.0
n = 0
import os
while not os.path.exists(stop):
    t = time.perf_counter()
    store = Store.open(db)
    store.query("SELECT count(*) FROM steps")
    store.release()
    worst = max(worst, time.perf_counter() - t)
    n += 1
    time.sleep(0.5)
print(n, worst)
"""


def _record(i: int) -> dict[str, object]:
    return {
        "t": "step",
        "run_id": "r-bench",
        "step_id": f"s{i:05d}",
        "position": i,
        "kind": "call",
        "status": "running",
        "attempts": 1,
        "def_hash": "0" * 16,
        "code_hash": "0" * 16,
        "eff_hash": "0" * 16,
        "started_at": time.time(),
        "att": {"phase": "run", "attempt": 1, "status": "running", "pid": os.getpid()},
    }


def burst(db: Path, steps: int, sync: str) -> float:
    """Steps per second for a burst of ``steps`` step transitions."""
    os.environ["AIRUN_SYNC"] = sync
    from airun_nb.store.database import Store

    store = Store(db)  # a fresh handle reads AIRUN_SYNC
    store.lease.acquire(30, "benchmark")
    store.release()
    t = time.perf_counter()
    for i in range(steps):
        rec = _record(i)
        store.record_many([rec])
        done = dict(rec, status="completed", finished_at=time.time())
        store.record_many([done, {"t": "ev", "ts": time.time(), "kind": "step_completed"}])
    store.flush()
    elapsed = time.perf_counter() - t
    store.release()
    return steps / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--dir", default=None, help="where the stores are made (a folder on disk)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        from airun_nb.store.database import Store

        warm = root / "warm.duckdb"
        Store.open(warm).release()
        burst(warm, args.steps, "")  # imports and first-connection costs, not measured
        print(f"{'setting':<28}{'steps/s':>10}{'vs no fsync':>12}")
        rates = {}
        for label, sync in (
            ("AIRUN_SYNC=0 (no fsync)", "0"),
            ("default (AIRUN_SYNC=group)", ""),
            ("AIRUN_SYNC=1", "1"),
        ):
            db = root / f"{sync or 'group'}.duckdb"
            Store.open(db).release()
            rates[label] = burst(db, args.steps, sync)
            base = rates["AIRUN_SYNC=0 (no fsync)"]
            print(f"{label:<28}{rates[label]:>10,.0f}{rates[label] / base:>11.2f}x")
        db = root / "readers.duckdb"
        Store.open(db).release()
        long = args.steps * 5  # long enough for the reader to come in several times
        alone = burst(db, long, "")
        stop = root / "stop"
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(db), str(stop)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # the reader is up and polling
        with_reader = burst(db, long, "")
        stop.touch()
        out, _ = reader.communicate(timeout=60)
        polls, worst = out.split()
        print(f"{'burst alone':<28}{alone:>10,.0f}")
        print(
            f"{'burst with a 0.5 s reader':<28}{with_reader:>10,.0f}"
            f"{with_reader / alone:>11.2f}x   reader: {polls} answers, slowest "
            f"{float(worst) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
