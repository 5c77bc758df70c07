"""`%%workflow --submit [--queue NAME]`: a cell queues a run for a worker instead of running it;
with importable functions, or with the notebook's own functions stored with the run. A real
IPython shell, real `airun worker` processes."""

from __future__ import annotations

import os
from pathlib import Path

from support.queued import airun, counts, env, rows

IMPORTABLE = """%%workflow from_cell --submit --queue cells --param n=3
steps:
  - id: only
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: only, value: "{{ params.n }}"}
"""

NOTEBOOK_FUNCTION = """%%workflow from_notebook --submit
steps:
  - id: only
    call: nb_step
    with: {run: "{{ run.id }}"}
"""

DEFINE = """
def nb_step(run):
    import os
    with open(os.environ["AIRUN_TEST_LEDGER"], "a") as fh:
        fh.write(f"{run} nb_step {os.getpid()}\\n")
    return 42
"""


def _world(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return tmp_path, env(Path(os.environ["AIRUN_DB"]), tmp_path / "ledger.txt")


def test_submit_from_a_cell_queues_a_run_a_worker_of_that_queue_runs(
    ipython, capsys, tmp_path: Path
) -> None:
    """The cell runs nothing itself: it prints the queued run's id and the worker command;
    a worker of queue `cells` runs it with the cell's param."""
    folder, e = _world(tmp_path)
    result = ipython.run_cell(IMPORTABLE)
    assert result.error_in_exec is None, result.error_in_exec
    said = capsys.readouterr().out
    assert "on queue cells" in said and "airun worker --queue cells" in said
    run_id = said.split("queued run ", 1)[1].split()[0]
    assert counts(folder / "ledger.txt") == {}
    done = airun(["worker", "--queue", "cells", "--exit-when-idle"], e, folder)
    assert f"run {run_id} completed" in done.stdout, done.stdout + done.stderr
    assert counts(folder / "ledger.txt") == {(run_id, "only"): 1}


def test_a_notebook_function_is_refused_unless_stored_then_a_trusting_worker_runs_it(
    ipython, capsys, tmp_path: Path
) -> None:
    """Without `store_code` a cell calling a notebook function is refused in one line naming
    the step and the setting, and nothing is queued; with it the function is stored (signed)
    with the run, and a worker started with --trust-stored-code runs it."""
    folder, e = _world(tmp_path)
    ipython.run_cell(DEFINE)
    refused = ipython.run_cell(NOTEBOOK_FUNCTION)
    err = refused.error_in_exec
    assert err is not None and "store_code" in str(err) and "only" in str(err)
    assert len(err._render_traceback_()) == 1
    db = Path(os.environ["AIRUN_DB"])
    assert not db.exists() or rows(db, "SELECT count(*) FROM queue") == [(0,)]

    ipython.run_line_magic("config", "Workflow.store_code = True")
    capsys.readouterr()
    assert ipython.run_cell(NOTEBOOK_FUNCTION).error_in_exec is None
    run_id = capsys.readouterr().out.split("queued run ", 1)[1].split()[0]
    done = airun(["worker", "--exit-when-idle", "--trust-stored-code"], e, folder)
    assert f"run {run_id} completed" in done.stdout, done.stdout + done.stderr
    assert counts(folder / "ledger.txt") == {(run_id, "nb_step"): 1}


GATED = """%%workflow shared_name{flag}
steps:
  - id: prepare
    python: "result = 1"
  - id: review
    needs: [prepare]
    approval: {{message: "Go on?"}}
"""


def test_a_cell_of_the_same_workflow_leaves_a_submitted_run_to_its_workers(
    ipython, capsys, tmp_path: Path
) -> None:
    """A submitted run parked at its gate belongs to its queue: running a cell of the same
    workflow in the notebook starts a run of its own instead of taking the parked one over."""
    folder, e = _world(tmp_path)
    assert ipython.run_cell(GATED.format(flag=" --submit")).error_in_exec is None
    queued = capsys.readouterr().out.split("queued run ", 1)[1].split()[0]
    parked = airun(["worker", "--exit-when-idle"], e, folder)
    assert f"run {queued} waits at a gate" in parked.stdout, parked.stdout + parked.stderr
    assert ipython.run_cell(GATED.format(flag="")).error_in_exec is None
    import airun_nb

    mine = airun_nb.last_run()
    assert mine.run_id != queued and mine.status == "waiting"
    db = Path(os.environ["AIRUN_DB"])
    assert rows(db, f"SELECT state FROM queue WHERE run_id = '{queued}'") == [("parked",)]
