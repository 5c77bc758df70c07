"""Build notebooks/transactions.ipynb and execute it, so it is saved with its outputs.

    python notebooks/make_transactions.py

nbval compares a fresh run against the saved outputs:

    python -m pytest --nbval notebooks/transactions.ipynb \
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
NOTEBOOK = HERE / "transactions.ipynb"


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
# Transactions: compensation and rollback

A step that changes the world can say how to undo itself with `compensate:`. When a later step
fails, airun_nb rolls the run back: it runs the compensations of the steps that finished, newest
first (the saga pattern), each one checkpointed in the store and retried. This notebook writes two
files, fails on the third step, and watches both files disappear.

The first cell gives the notebook its own store and clears what a previous run left, so the
notebook runs the same way every time.
"""
    ),
    code(
        """
import os, pathlib, shutil

os.environ["AIRUN_DB"] = "transactions.duckdb"
for old in pathlib.Path(".").glob("transactions.duckdb*"):
    shutil.rmtree(old) if old.is_dir() else old.unlink()
OUT = pathlib.Path("transactions_out")
shutil.rmtree(OUT, ignore_errors=True)
OUT.mkdir()
"""
    ),
    code("%load_ext airun_nb"),
    md(
        """
Three notebook functions: one writes a file, one deletes it (the compensation), and a payment
call that answers with an *error value* rather than raising: `{"ok": False, ...}`.
"""
    ),
    code(
        """
import airun_nb

def write_file(name, text):
    path = OUT / name
    path.write_text(text)
    return {"path": str(path)}

def delete_file(path):
    pathlib.Path(path).unlink()
    print("undo: deleted", pathlib.Path(path).name)

def charge_card(amount):
    return {"ok": False, "error": "card declined", "amount": amount}
"""
    ),
    md(
        """
The workflow. Each file step declares its compensation; `{{ steps.invoice.output.path }}` is
rendered when the step finishes and stored with it, so a rollback after a kernel restart deletes
exactly the same file. `check: result.ok` turns the declined payment into a failure, and the
default `on_failure: rollback` undoes `receipt`, then `invoice`. The cell ends with an error
saying so (it is tagged `raises-exception`).
"""
    ),
    code(
        """
%%workflow order
params: {amount: 42}
steps:
  - id: invoice
    call: write_file
    with: {name: invoice.txt, text: "invoice for {{ params.amount }} EUR"}
    compensate: {call: delete_file, with: {path: "{{ steps.invoice.output.path }}"}}
  - id: receipt
    needs: [invoice]
    call: write_file
    with: {name: receipt.txt, text: "receipt"}
    compensate: {call: delete_file, with: {path: "{{ steps.receipt.output.path }}"}}
  - id: charge
    needs: [receipt]
    call: charge_card
    with: {amount: "{{ params.amount }}"}
    check: result.ok
""",
        "raises-exception",
        "nbval-ignore-output",
    ),
    md("Both files are gone:"),
    code("sorted(p.name for p in OUT.iterdir())"),
    md(
        """
The store says what was undone: `comp_status` is `done` for the two file steps; the failed step
had nothing to compensate (empty).
"""
    ),
    code(
        """
run_id = airun_nb.last_run().run_id
airun_nb.steps(run_id)[["step_id", "status", "comp_status"]].fillna("")
"""
    ),
    md("Every transition is an event, and each compensation attempt is an attempt row:"),
    code(
        """
airun_nb.events(run_id)[["kind", "step_id"]].fillna("")
"""
    ),
    code(
        """
airun_nb.attempts(run_id)[["step_id", "phase", "attempt", "status"]]
"""
    ),
    md(
        """
## Undo a finished run

A run that completed can be undone on demand, with `%workflow rollback RUN`, `airun rollback RUN`
on the command line, or from Python as here. The compensations run newest first.
"""
    ),
    code(
        """
%%workflow shipment
steps:
  - id: label
    call: write_file
    with: {name: label.txt, text: "ship to: Ada"}
    compensate: {call: delete_file, with: {path: "{{ steps.label.output.path }}"}}
  - id: manifest
    needs: [label]
    call: write_file
    with: {name: manifest.txt, text: "1 parcel"}
    compensate: {call: delete_file, with: {path: "{{ steps.manifest.output.path }}"}}
""",
        "nbval-ignore-output",
    ),
    code("sorted(p.name for p in OUT.iterdir())"),
    code(
        """
undo = airun_nb.rollback(airun_nb.last_run().run_id, namespace=globals())
undo.status
"""
    ),
    code("sorted(p.name for p in OUT.iterdir())"),
    md("The folder is empty again; tidy it away."),
    code("OUT.rmdir()"),
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
    for old in HERE.glob("transactions.duckdb*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
