"""The other ways a notebook runs a workflow: ``%workflow run FILE`` and ``Workflow.run()`` in a
cell, through a real IPython shell; and what the magics tell about themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError

import airun_nb
from airun_nb.jupyter.magics import _cell_parser

FUNCTIONS = """
calls = []

def double(x):
    calls.append(x)
    return 2 * x
"""

FILE = """name: doubling
params: {n: 1}
on_failure: stop
steps:
  - id: twice
    call: double
    with: {x: "{{ params.n }}"}
  - id: plus_one
    needs: [twice]
    python: result = steps.twice.output + 1
    output: answer
"""


def test_workflow_run_file_runs_it_like_a_cell_and_resumes_like_one(
    ipython, tmp_path: Path, capsys
) -> None:
    """``%workflow run FILE --param`` runs the file's workflow with the notebook's functions and
    draws the step table; after a failure, running it again resumes that run without redoing
    the finished step, as a cell does; the output is bound in the notebook."""
    path = tmp_path / "doubling.yaml"
    path.write_text(FILE.replace("steps.twice.output + 1", "steps.twice.output + offset"))
    assert ipython.run_cell(FUNCTIONS).success
    capsys.readouterr()
    first = ipython.run_cell(f"%workflow run {path} --param n=21")
    assert isinstance(first.error_in_exec, airun_nb.WorkflowFailed)  # `offset` is not defined
    shown = capsys.readouterr().out
    assert "doubling" in shown and "twice" in shown and "completed" in shown
    failed = airun_nb.last_run()
    assert failed is not None and failed.workflow == "doubling" and failed.status != "completed"
    assert ipython.run_cell("offset = 1").success
    again = ipython.run_cell(f"%workflow run {path} --param n=21")
    assert again.error_in_exec is None, again.error_in_exec
    resumed = airun_nb.last_run()
    assert resumed.run_id == failed.run_id and resumed.executed == ["plus_one"]
    assert ipython.user_ns["answer"] == 43
    assert ipython.user_ns["calls"] == [21]  # `twice` ran once
    named = ipython.run_cell(f"%workflow run {path} --name doubling_eu --param n=1")
    assert named.error_in_exec is None, named.error_in_exec
    assert airun_nb.last_run().workflow == "doubling_eu"
    assert ipython.user_ns["answer"] == 3


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("run", "the following arguments are required: file"),
        ("run nothere.yaml", "no workflow file at nothere.yaml"),
        ("run x.yaml --resume r-1 --new", "not both"),
    ],
)
def test_workflow_run_file_usage_errors(ipython, tmp_path: Path, line: str, said: str) -> None:
    (tmp_path / "x.yaml").write_text(FILE)
    ipython.run_line_magic("cd", str(tmp_path))
    with pytest.raises(UsageError, match=said):
        ipython.run_line_magic("workflow", line)


def test_workflow_run_in_a_cell_draws_the_table_and_finds_the_notebooks_functions(
    ipython, capsys
) -> None:
    """``Workflow.from_yaml(...).run()`` in a cell needs no ``namespace=globals()``: it finds
    ``double`` in the notebook, draws the live table and becomes ``last_run()``."""
    assert ipython.run_cell(FUNCTIONS).success
    capsys.readouterr()
    cell = ipython.run_cell(
        "from airun_nb import Workflow\n"
        f"r = Workflow.from_yaml('''{FILE}''').run(params={{'n': 5}})\n"
    )
    assert cell.error_in_exec is None, cell.error_in_exec
    shown = capsys.readouterr().out
    assert "twice" in shown and "plus_one" in shown and "completed" in shown
    result = ipython.user_ns["r"]
    assert result.status == "completed" and result.outputs["plus_one"] == 11
    assert airun_nb.last_run() is result or airun_nb.last_run().run_id == result.run_id


def test_the_runs_magic_takes_the_history_filters(ipython, tmp_path: Path) -> None:
    path = tmp_path / "doubling.yaml"
    path.write_text(FILE)
    assert ipython.run_cell(FUNCTIONS).success
    for n in (1, 2, 3):
        assert ipython.run_cell(f"%workflow run {path} --new --param n={n}").success
    assert ipython.run_cell("%workflow run " + str(path) + " --name other --new").success
    everything = ipython.run_line_magic("workflow", "runs")
    assert len(everything) == 4
    newest = ipython.run_line_magic("workflow", "runs --workflow doubling --limit 2")
    assert newest["run_id"].tolist() == everything["run_id"].tolist()[1:3]
    done = ipython.run_line_magic("workflow", "runs -s completed -s failed -w other")
    assert done["workflow"].tolist() == ["other"]
    with pytest.raises(UsageError, match="--limit"):
        ipython.run_line_magic("workflow", "runs --limit many")


def test_runs_and_the_runs_magic_refuse_a_store_that_does_not_exist(
    ipython, tmp_path: Path
) -> None:
    """A typo in a store path is an error, and no file is left behind."""
    typo = tmp_path / "typo.duckdb"
    with pytest.raises(airun_nb.StoreError, match="there is no store"):
        airun_nb.runs(db=typo)
    result = ipython.run_cell(f"%workflow runs --db {tmp_path / 'nothere.duckdb'}")
    assert isinstance(result.error_in_exec, airun_nb.StoreError)
    assert sorted(p.name for p in tmp_path.iterdir() if "duckdb" in p.name) == []


def test_the_cell_magics_help_lists_every_option(ipython) -> None:
    """``%%workflow?`` shows every option the cell magic takes, and ``%workflow?`` every
    command."""
    doc = ipython.find_cell_magic("workflow").__doc__ or ""
    options = [o for a in _cell_parser()._actions for o in a.option_strings]
    assert options and all(o in doc for o in options), doc
    line_doc = ipython.find_line_magic("workflow").__doc__ or ""
    for command in (
        "run FILE",
        "runs",
        "show RUN",
        "resume",
        "rollback RUN",
        "cancel RUN",
        "approvals",
        "timeline RUN",
        "traceback",
        "why RUN",
        "diff",
        "history",
    ):
        assert command in line_doc, command


def test_dir_shows_the_public_api_only() -> None:
    """Tab completion of ``airun_nb.`` offers the public names, each of which resolves."""
    names = dir(airun_nb)
    assert set(names) == {*airun_nb.__all__, "__version__"}
    assert "load_run" in names and "importlib" not in names and "annotations" not in names
    for name in names:
        assert getattr(airun_nb, name) is not None
