#!/usr/bin/env python3
"""CPU time per trivial step: a 2,000-step chain of ``call`` steps, best of 3.

    python benchmarks/step_cpu.py

CPU time (not wall time) is the figure to compare between two checkouts on a busy machine:
run it alternately in each (``PYTHONPATH=<checkout> python benchmarks/step_cpu.py``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import airun_nb
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import airun_nb

N = 2000


def f() -> int:
    return 1


def main() -> int:
    text = "steps:\n" + "".join(
        f"  - id: s{i}\n    call: f\n" + (f"    needs: [s{i - 1}]\n" if i else "") for i in range(N)
    )
    results = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as d:
            wf = airun_nb.Workflow.from_yaml(text, name="bench")
            t0, w0 = time.process_time(), time.perf_counter()
            wf.run(db=os.path.join(d, "s.duckdb"), namespace={"f": f})
            results.append((time.process_time() - t0, time.perf_counter() - w0))
    cpu = min(r[0] for r in results) / N * 1000
    wall = min(r[1] for r in results) / N * 1000
    print(f"{airun_nb.__file__}: cpu {cpu:.4f} ms/step, wall {wall:.4f} ms/step (best of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
