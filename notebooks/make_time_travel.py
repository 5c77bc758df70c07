"""Build notebooks/time_travel.ipynb and execute it, so it is saved with its outputs.

    python notebooks/make_time_travel.py

nbval compares a fresh run against the saved outputs:

    python -m pytest --nbval notebooks/time_travel.ipynb \
        --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

The cells that draw the live step table are tagged ``nbval-ignore-output``: the table is drawn
once and then updated in place, and nbval (0.11) does not apply display updates, so it would see
only the first drawing. What the run did is shown by the cells after them, which are compared.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "time_travel.ipynb"


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


CELLS = [
    md(
        """
# Time travel: why steps re-run, forks and diffs

airun_nb fingerprints the code every step depends on: its function, the helpers it calls, the
globals it reads and the packages it uses. This notebook runs a small sales workflow, changes a
helper function, sees *before running* exactly which steps will run again and why, forks the
first run from its middle with a new parameter, and compares the runs' outputs.

The first cell gives the notebook its own store and clears what a previous run left.
"""
    ),
    code(
        """
import os, pathlib

os.environ["AIRUN_DB"] = "time_travel.duckdb"
for old in pathlib.Path(".").glob("time_travel.duckdb*"):
    old.unlink()
"""
    ),
    code("%load_ext airun_nb"),
    md("Notebook functions: `clean` calls the helper `normalize`; `flag` reads the global `CUT`."),
    code(
        """
import airun_nb
import pandas as pd

CUT = 10

def normalize(amount):
    return round(amount * 1.0, 2)

def load_sales(n):
    return pd.DataFrame({
        "region": ["north", "south", "east", "west"] * n,
        "amount": [float(i * 3 % 17) for i in range(4 * n)],
    })

def clean(df):
    return df.assign(amount=[normalize(a) for a in df["amount"]])

def flag(df, cut):
    return df.assign(big=df["amount"] > cut)
"""
    ),
    code(
        """
%%workflow sales
params: {n: 5, cut: 10}
steps:
  - id: load
    call: load_sales
    with: {n: "{{ params.n }}"}
  - id: clean
    needs: [load]
    call: clean
    with: {df: "{{ steps.load.output }}"}
  - id: flag
    needs: [clean]
    call: flag
    with: {df: "{{ steps.clean.output }}", cut: "{{ params.cut }}"}
  - id: stats
    needs: [load]
    python: |
      result = {"rows": len(steps.load.output), "regions": 4}
  - id: totals
    needs: [flag]
    sql: select region, sum(amount) as total, count(*) filter (where big) as big from {{ steps.flag }} group by region order by region
    output: totals
""",
        "nbval-ignore-output",
    ),
    code(
        """
first = airun_nb.last_run().run_id
airun_nb.why(first)[["step", "decision", "reason"]]
"""
    ),
    md(
        """
## Change a helper, see what will re-run

`normalize` now applies a 10% discount. `--dry-run` plans the next run and prints every step's
decision with its reason; nothing is executed or written.
"""
    ),
    code(
        """
def normalize(amount):
    return round(amount * 0.9, 2)
"""
    ),
    code(
        """
%%workflow sales --dry-run
params: {n: 5, cut: 10}
steps:
  - id: load
    call: load_sales
    with: {n: "{{ params.n }}"}
  - id: clean
    needs: [load]
    call: clean
    with: {df: "{{ steps.load.output }}"}
  - id: flag
    needs: [clean]
    call: flag
    with: {df: "{{ steps.clean.output }}", cut: "{{ params.cut }}"}
  - id: stats
    needs: [load]
    python: |
      result = {"rows": len(steps.load.output), "regions": 4}
  - id: totals
    needs: [flag]
    sql: select region, sum(amount) as total, count(*) filter (where big) as big from {{ steps.flag }} group by region order by region
    output: totals
"""
    ),
    md("Exactly the steps that depend on `normalize` run; `load` and `stats` are reused."),
    code(
        """
%%workflow sales
params: {n: 5, cut: 10}
steps:
  - id: load
    call: load_sales
    with: {n: "{{ params.n }}"}
  - id: clean
    needs: [load]
    call: clean
    with: {df: "{{ steps.load.output }}"}
  - id: flag
    needs: [clean]
    call: flag
    with: {df: "{{ steps.clean.output }}", cut: "{{ params.cut }}"}
  - id: stats
    needs: [load]
    python: |
      result = {"rows": len(steps.load.output), "regions": 4}
  - id: totals
    needs: [flag]
    sql: select region, sum(amount) as total, count(*) filter (where big) as big from {{ steps.flag }} group by region order by region
    output: totals
""",
        "nbval-ignore-output",
    ),
    code(
        """
second = airun_nb.last_run().run_id
airun_nb.why(second)[["step", "decision", "reason", "changed"]]
"""
    ),
    md(
        """
## Diff the two runs

One row per step: replayed or executed in each, whether the outputs are equal, and a summary
computed in DuckDB over the stored tables.
"""
    ),
    code("airun_nb.diff(first, second)[['step', 'how_a', 'how_b', 'equal', 'summary']]"),
    code("airun_nb.diff(first, second, step='totals')"),
    md(
        """
## Fork the first run from its middle

A fork reuses the stored outputs of every step before the fork point and runs the fork step and
everything downstream, with the current code and, here, a new `cut`.
"""
    ),
    code(
        """
forked = airun_nb.fork(first, "flag", params={"cut": 5}, namespace=globals())
forked.status, sorted(forked.executed), sorted(forked.replayed)
"""
    ),
    code("airun_nb.why(forked.run_id)[['step', 'decision', 'reason']]"),
    code("airun_nb.diff(first, forked.run_id)[['step', 'equal', 'summary']]"),
    md(
        """
## Replay as a test

`airun_nb.testing.replay` runs the first run's steps again against the current code in a
scratch store, each with its recorded inputs, and reports which outputs now differ (the store
of this notebook is not touched).
"""
    ),
    code(
        """
from airun_nb.testing import replay

replay(first, namespace=globals())[["step", "equal", "summary"]]
"""
    ),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = CELLS
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> int:
    nb = build()
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    # Keep the saved file stable: no execution timings, no run-specific kernel metadata.
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)
    for old in HERE.glob("time_travel.duckdb*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
