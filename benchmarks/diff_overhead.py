"""How long ``airun_nb.diff`` takes on two runs whose outputs are 1M-row DataFrames, next to a
plain DuckDB ``EXCEPT`` over the same stored tables.

    python benchmarks/diff_overhead.py            # 1,000,000 rows, 5 repeats
    python benchmarks/diff_overhead.py --rows 200000 --repeats 3

Two runs of a one-step workflow return DataFrames of N rows x 4 columns (an int key, two floats,
a string); the second changes 1% of one float column. Timed: ``airun_nb.diff(a, b)`` (the step
table: shape, columns and changed cells counted in DuckDB), ``airun_nb.diff(a, b, step=...)``
(the differing rows, both directions), and the baseline, ``SELECT count(*) FROM (SELECT * FROM a
EXCEPT SELECT * FROM b)`` on the same DuckDB connection and tables. Medians are printed with the
ratio to the baseline; the target is a ratio of at most 2 for ``diff(a, b)``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import airun_nb
from airun_nb.store.database import Store, quote_ident

WORKFLOW = """
name: bench_diff
steps:
  - id: frame
    call: make_frame
    with: {changed: "{{ params.changed }}"}
params: {changed: false}
"""


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "key": np.arange(rows, dtype="int64"),
            "x": rng.random(rows),
            "y": rng.random(rows),
            "label": rng.choice(["north", "south", "east", "west"], rows),
        }
    )


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    base = _frame(args.rows)
    modified = base.copy()
    idx = np.arange(0, args.rows, 100)
    modified.loc[idx, "x"] = modified.loc[idx, "x"] + 1.0

    def make_frame(changed: bool = False) -> pd.DataFrame:
        return modified if changed else base

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "airun.duckdb"
        wf = airun_nb.Workflow.from_yaml(WORKFLOW)
        ns = {"make_frame": make_frame}
        a = wf.run(db=db, namespace=ns, new=True, params={"changed": False}).run_id
        b = wf.run(db=db, namespace=ns, new=True, params={"changed": True}).run_id
        store = Store.open(db)
        tables = [
            r[0]
            for r in store.query(
                "SELECT output_table FROM steps WHERE run_id IN (?, ?) ORDER BY run_id = ?",
                [a, b, b],
            )
        ]
        qa, qb = (f"outputs.{quote_ident(t)}" for t in tables)
        except_sql = f"SELECT count(*) FROM (SELECT * FROM {qa} EXCEPT SELECT * FROM {qb})"

        def baseline() -> None:
            with store.session() as con:
                con.execute(except_sql).fetchone()

        summary = airun_nb.diff(a, b, db=db)
        rows = airun_nb.diff(a, b, step="frame", db=db)
        t_base = _median(baseline, args.repeats)
        t_diff = _median(lambda: airun_nb.diff(a, b, db=db), args.repeats)
        t_rows = _median(lambda: airun_nb.diff(a, b, step="frame", db=db), args.repeats)
        store.release()
    print(f"rows per output: {args.rows:,}; repeats: {args.repeats} (medians)")
    print(f"diff summary: {summary.loc[0, 'summary']}; differing rows: {len(rows):,}")
    print(f"{'what':<42} {'seconds':>9} {'vs EXCEPT':>10}")
    print(f"{'DuckDB: SELECT count(*) ... EXCEPT ...':<42} {t_base:>9.3f} {1.0:>9.2f}x")
    print(f"{'airun_nb.diff(a, b)':<42} {t_diff:>9.3f} {t_diff / t_base:>9.2f}x")
    print(f"{'airun_nb.diff(a, b, step=...)':<42} {t_rows:>9.3f} {t_rows / t_base:>9.2f}x")
    verdict = "met" if t_diff <= 2 * t_base else "NOT met"
    print(f"target diff(a, b) <= 2x EXCEPT: {verdict}")


if __name__ == "__main__":
    main()
