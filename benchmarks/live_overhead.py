#!/usr/bin/env python3
"""What the notebook's live step table costs: a 1,000-step run with and without it.

    python benchmarks/live_overhead.py            # 1,000 steps, 9 rounds each
    python benchmarks/live_overhead.py --steps 10000 --rounds 3

Both variants run in the same process, in alternating rounds, each on a fresh store file: the
plain run (no listener) and the run with the notebook's ``LiveTable`` (the ticker thread that
redraws at most 10 times a second) inside a real IPython shell whose display output goes to a
null device. Reported: median wall time and CPU time (this process, every thread) of each,
their ratios, how many redraws happened and the share of the live run spent drawing. On a
shared machine the wall ratio moves with the other processes' load; the CPU ratio does not, and
is what the table costs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import airun_nb
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import airun_nb

from IPython.core.interactiveshell import InteractiveShell

from airun_nb.jupyter.display import LiveTable


def f() -> int:
    return 1


def _doc(n: int) -> dict[str, object]:
    steps: list[dict[str, object]] = [{"id": "s0", "call": "f"}]
    steps += [{"id": f"s{i}", "call": "f", "needs": [f"s{i - 1}"]} for i in range(1, n)]
    return {"name": "live-bench", "steps": steps}


def _once(n: int, live: bool) -> tuple[float, float, int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "airun.duckdb"
        wf = airun_nb.Workflow.from_dict(_doc(n))
        listener = LiveTable() if live else None
        runner = wf.runner(db=db, namespace={"f": f}, listener=listener)
        sink = io.StringIO()
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(sink):
            runner.prepare(new=True)
            runner.execute()
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        runner.store.release()
        if listener is None:
            return took, cpu, 0, 0.0
        return took, cpu, listener.draws, listener.spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    InteractiveShell.instance()  # display() needs a shell; its output goes to the sink
    _once(50, True)  # warm-up
    plain, live, plain_cpu, live_cpu, draws, spent = [], [], [], [], [], []
    for _ in range(args.rounds):
        took, cpu, _n, _d = _once(args.steps, False)
        plain.append(took)
        plain_cpu.append(cpu)
        took, cpu, n, drawing = _once(args.steps, True)
        live.append(took)
        live_cpu.append(cpu)
        draws.append(n)
        spent.append(drawing / took)
    p, lv = statistics.median(plain), statistics.median(live)
    pc, lc = statistics.median(plain_cpu), statistics.median(live_cpu)
    load = f"{os.getloadavg()[0]:.1f}"
    print(f"steps: {args.steps}, rounds: {args.rounds}, load average {load}")
    print(
        f"plain run:       median {p:.3f} s  ({p / args.steps * 1000:.3f} ms/step), CPU {pc:.3f} s"
    )
    print(
        f"with live table: median {lv:.3f} s  ({lv / args.steps * 1000:.3f} ms/step), CPU {lc:.3f} s"
    )
    print(f"ratio live/plain: wall {lv / p:.3f}, CPU {lc / pc:.3f} (goal <= 1.10)")
    print(f"redraws per run: {statistics.median(draws):.0f}")
    print(f"time spent drawing: median {statistics.median(spent) * 100:.1f}% of the live run")


if __name__ == "__main__":
    main()
