"""``%%workflow`` and ``%workflow`` through a real IPython shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

import airun_nb
from airun_nb import SpecError, WorkflowFailed

SETUP = """
import pandas as pd
calls = {"load": 0, "enrich": 0}
broken = False

def load_sales(quarter):
    calls["load"] += 1
    return pd.DataFrame({"region": ["n", "s", "n"], "amount": [1.0, 2.0, 4.0], "q": quarter})

def enrich(df, factor):
    calls["enrich"] += 1
    if broken:
        raise RuntimeError("enrich is broken")
    return df.assign(amount=df.amount * factor)
"""

CELL = """%%workflow sales {args}
params: {{quarter: "2026Q3", factor: 1}}
on_failure: stop
steps:
  - id: load
    call: load_sales
    with: {{quarter: "{{{{ params.quarter }}}}"}}
  - id: enrich
    call: enrich
    with: {{df: "{{{{ steps.load.output }}}}", factor: "{{{{ params.factor }}}}"}}
  - id: clean
    python: |
      result = steps.enrich.output.dropna()
  - id: totals
    sql: select region, sum(amount) as total from {{{{ steps.clean }}}} group by region order by region
    output: totals
"""


def _no_run_written() -> bool:
    """No run was recorded: the store was never made, or holds no run."""
    return not Path(os.environ["AIRUN_DB"]).exists() or len(airun_nb.runs()) == 0


def run(shell, code: str):
    return shell.run_cell(code)


def workflow(shell, args: str = ""):
    return shell.run_cell(CELL.format(args=args))


def test_cell_runs_call_python_and_sql_steps_and_binds_output(ipython) -> None:
    assert run(ipython, SETUP).success
    result = workflow(ipython)
    assert result.error_in_exec is None, result.error_in_exec
    totals = ipython.user_ns["totals"]
    assert isinstance(totals, pd.DataFrame)
    assert totals.to_dict("list") == {"region": ["n", "s"], "total": [5.0, 2.0]}
    last = airun_nb.last_run()
    assert last is not None and last.status == "completed" and last.workflow == "sales"
    runs = airun_nb.runs()
    assert runs["workflow"].tolist() == ["sales"]
    assert runs["status"].tolist() == ["completed"]


def test_editing_a_notebook_function_tells_what_reruns(ipython, capsys) -> None:
    run(ipython, SETUP)
    assert workflow(ipython).error_in_exec is None
    first = airun_nb.last_run().run_id
    run(
        ipython,
        "def enrich(df, factor):\n"
        "    calls['enrich'] += 1\n"
        "    return df.assign(amount=df.amount * factor * 100)\n",
    )
    capsys.readouterr()
    result = workflow(ipython)
    assert result.error_in_exec is None, result.error_in_exec
    out = capsys.readouterr().out
    assert ipython.user_ns["calls"] == {"load": 1, "enrich": 2}
    assert ipython.user_ns["totals"]["total"].tolist() == [500.0, 200.0]
    plan = [line for line in out.splitlines() if "runs:" in line or "replayed" in line]
    assert any("enrich" in line and "changed" in line for line in plan), out
    assert any("totals" in line and "upstream" in line for line in plan), out
    assert any("load" in line for line in plan if "replayed" in line), out
    assert airun_nb.last_run().run_id != first


def test_param_overrides(ipython) -> None:
    run(ipython, SETUP)
    result = workflow(ipython, "--param factor=10 -p quarter=2027Q1")
    assert result.error_in_exec is None, result.error_in_exec
    assert ipython.user_ns["totals"]["total"].tolist() == [50.0, 20.0]
    params = airun_nb.runs()["params"].iloc[0]
    assert '"factor": 10' in params and "2027Q1" in params


def test_rerun_resumes_the_failed_run_without_redoing_finished_steps(ipython) -> None:
    run(ipython, SETUP + "\nbroken = True")
    failed = workflow(ipython)
    assert isinstance(failed.error_in_exec, WorkflowFailed)
    assert "'enrich'" in str(failed.error_in_exec)
    run_id = failed.error_in_exec.run_id

    run(ipython, "broken = False")
    result = workflow(ipython)
    assert result.error_in_exec is None, result.error_in_exec
    assert ipython.user_ns["calls"] == {"load": 1, "enrich": 2}
    assert airun_nb.last_run().run_id == run_id
    assert airun_nb.runs()["run_id"].tolist() == [run_id]


def test_new_flag_starts_a_fresh_run(ipython) -> None:
    run(ipython, SETUP + "\nbroken = True")
    failed = workflow(ipython)
    assert isinstance(failed.error_in_exec, WorkflowFailed)
    run(ipython, "broken = False")
    result = workflow(ipython, "--new")
    assert result.error_in_exec is None, result.error_in_exec
    assert ipython.user_ns["calls"] == {"load": 2, "enrich": 2}
    runs = airun_nb.runs()
    assert len(runs) == 2
    assert runs.set_index("run_id").loc[failed.error_in_exec.run_id, "status"] == "failed"


def test_resume_flag_resumes_the_named_run(ipython) -> None:
    run(ipython, SETUP + "\nbroken = True")
    one = workflow(ipython).error_in_exec
    two = workflow(ipython, "--new").error_in_exec
    assert isinstance(one, WorkflowFailed) and isinstance(two, WorkflowFailed)
    assert one.run_id != two.run_id

    run(ipython, "broken = False")
    result = workflow(ipython, f"--resume {one.run_id}")
    assert result.error_in_exec is None, result.error_in_exec
    status = airun_nb.runs().set_index("run_id")["status"]
    assert status[one.run_id] == "completed"
    assert status[two.run_id] == "failed"
    assert ipython.user_ns["calls"]["load"] == 2  # once per run, not again on resume


@pytest.mark.parametrize(
    "line",
    [
        "%%workflow sales --bogus",
        "%%workflow sales --param novalue",
        "%%workflow sales --new --resume r-1234",
        "%%workflow sales --resume",
    ],
)
def test_bad_cell_arguments_are_usage_errors(ipython, line: str) -> None:
    result = run(ipython, line + "\nsteps:\n  - id: a\n    python: 'result = 1'\n")
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert _no_run_written()


@pytest.mark.parametrize(
    "line", ["%workflow", "%workflow frobnicate", "%workflow show", "%workflow history bogus"]
)
def test_bad_line_arguments_are_usage_errors(ipython, line: str) -> None:
    result = run(ipython, line)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec


def test_malformed_yaml_shows_one_line_spec_error(ipython, capsys) -> None:
    cell = (
        "%%workflow broken\n"  # cell line 1
        "steps:\n"  # 2
        "  - id: a\n"  # 3
        "    python: 'result = 1'\n"  # 4
        "    with: {x: [1, 2}\n"  # 5
    )
    result = run(ipython, cell)
    err = result.error_in_exec
    assert isinstance(err, SpecError), err
    assert err.line == 5
    rendered = err._render_traceback_()
    assert len(rendered) == 1
    assert "line 5" in rendered[0] and "\n" not in rendered[0]
    assert len(rendered[0]) < 200
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "SpecError: line 5" in text
    assert "Traceback" not in text
    assert _no_run_written()


def test_unknown_key_in_cell_points_at_the_cell_line(ipython) -> None:
    cell = "%%workflow w\nsteps:\n  - id: a\n    python: 'result = 1'\n    neds: [b]\n"
    err = run(ipython, cell).error_in_exec
    assert isinstance(err, SpecError)
    assert err.line == 5
    assert "did you mean 'needs'" in str(err)


def test_line_magics_runs_show_history(ipython, capsys) -> None:
    run(ipython, SETUP)
    assert workflow(ipython).error_in_exec is None
    run_id = airun_nb.last_run().run_id

    runs = ipython.run_line_magic("workflow", "runs")
    assert isinstance(runs, pd.DataFrame)
    assert runs["run_id"].tolist() == [run_id]

    capsys.readouterr()
    ipython.run_line_magic("workflow", f"show {run_id}")
    shown = capsys.readouterr().out
    assert run_id in shown and "completed" in shown
    for step in ("load", "enrich", "clean", "totals"):
        assert step in shown

    steps = ipython.run_line_magic("workflow", "history steps")
    assert steps["step_id"].tolist() == ["load", "enrich", "clean", "totals"]
    assert isinstance(steps["started_at"].dtype, pd.DatetimeTZDtype)

    attempts = ipython.run_line_magic("workflow", f"history attempts {run_id}")
    assert len(attempts) == 4

    bad = run(ipython, "%workflow show r-nope")
    assert isinstance(bad.error_in_exec, airun_nb.RunNotFound)


def test_line_magic_resume_finishes_the_latest_unfinished_run(ipython) -> None:
    run(ipython, SETUP + "\nbroken = True")
    failed = workflow(ipython).error_in_exec
    assert isinstance(failed, WorkflowFailed)

    run(ipython, "broken = False")
    result = run(ipython, "%workflow resume")
    assert result.error_in_exec is None, result.error_in_exec
    assert airun_nb.runs().set_index("run_id")["status"][failed.run_id] == "completed"
    assert ipython.user_ns["calls"] == {"load": 1, "enrich": 2}
    assert ipython.user_ns["totals"]["total"].tolist() == [5.0, 2.0]


def test_line_magic_resume_with_nothing_to_resume(ipython) -> None:
    result = run(ipython, "%workflow resume")
    assert isinstance(result.error_in_exec, UsageError)


def test_db_option_puts_the_store_elsewhere(ipython, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.duckdb"
    run(ipython, SETUP)
    result = workflow(ipython, f"--db {other}")
    assert result.error_in_exec is None, result.error_in_exec
    assert len(airun_nb.runs(db=other)) == 1
    with pytest.raises(airun_nb.StoreError, match="there is no store"):
        airun_nb.runs()  # the default store was never made, and reading it does not make it
    assert len(ipython.run_line_magic("workflow", f"runs --db {other}")) == 1


def test_import_registers_no_magics() -> None:
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "import airun_nb\n"
        "shell = InteractiveShell.instance()\n"
        "print(shell.find_cell_magic('workflow'), shell.find_line_magic('workflow'))\n"
        "shell.run_line_magic('load_ext', 'airun_nb')\n"
        "print(shell.find_cell_magic('workflow') is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "None", "True"]


def test_import_does_not_import_ipython() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import airun_nb, sys; print('IPython' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
