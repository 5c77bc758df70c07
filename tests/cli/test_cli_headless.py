"""``airun run NOTEBOOK``: papermill-style parameters and exit codes a script can branch on.

Each test runs the real command, which runs the notebook in a real kernel.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat

import airun_nb
from support import AIRUN
from support.notebooks import python_notebook

PARAMETERS = 'region = "eu"\nlimit = 1\nlabel = "none"'
REPORT = """%%workflow report
on_failure: stop
steps:
  - id: pick
    python: result = f"{region}:{limit}:{label}"
"""
GATED = """%%workflow release
steps:
  - id: review
    approval: {message: "Ship?"}
"""
FAILING = """%%workflow broken
on_failure: stop
steps:
  - id: boom
    python: raise ValueError("bad input")
"""


def _notebook(path: Path, *cells: str, tagged: int | None = None) -> None:
    nb = python_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("%load_ext airun_nb", *cells)]
    if tagged is not None:
        nb.cells[tagged].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)


def _airun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_DB"] = str(tmp_path / "airun.duckdb")
    return subprocess.run(
        [*AIRUN, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_parameters_go_in_a_cell_after_the_tagged_one_and_the_workflow_sees_them(
    tmp_path: Path,
) -> None:
    """``-f`` then ``-p`` (``-p`` wins) become a cell right after the ``parameters`` cell, so
    the notebook's workflow reads the new values, typed as YAML reads them."""
    nb = tmp_path / "report.ipynb"
    _notebook(nb, PARAMETERS, REPORT, tagged=1)
    (tmp_path / "params.yaml").write_text("region: fr\nlabel: weekly\n")
    out = tmp_path / "out.ipynb"
    done = _airun(
        tmp_path,
        "run",
        str(nb),
        "-o",
        str(out),
        "-f",
        "params.yaml",
        "-p",
        "region",
        "us",
        "-p",
        "limit",
        "5",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = airun_nb.runs(db=tmp_path / "airun.duckdb")["run_id"].iloc[-1]
    assert airun_nb.load_run(run_id, db=tmp_path / "airun.duckdb").outputs["pick"] == (
        "us:5:weekly"
    )
    cells = nbformat.read(out, as_version=4).cells
    assert cells[1].metadata["tags"] == ["parameters"]
    assert cells[2].metadata["tags"] == ["injected-parameters"]
    assert "region = 'us'" in cells[2].source and "limit = 5" in cells[2].source
    assert "completed" in done.stdout


def test_a_bad_parameter_is_one_line(tmp_path: Path) -> None:
    nb = tmp_path / "report.ipynb"
    _notebook(nb, PARAMETERS, REPORT, tagged=1)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    bad_file = _airun(tmp_path, "run", str(nb), "-f", "list.yaml")
    assert bad_file.returncode == 1
    assert bad_file.stderr.strip().splitlines() == [
        "error: list.yaml: parameters must be a mapping of NAME: value"
    ]
    bad_name = _airun(tmp_path, "run", str(nb), "-p", "not-a-name", "1")
    assert bad_name.returncode == 1
    assert "parameter 'not-a-name' is not a Python name" in bad_name.stderr
    assert "Traceback" not in bad_file.stderr + bad_name.stderr


def test_a_run_left_waiting_at_a_gate_exits_3_and_says_so(tmp_path: Path) -> None:
    nb = tmp_path / "release.ipynb"
    _notebook(nb, GATED)
    done = _airun(tmp_path, "run", str(nb))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "waits at an approval gate" in done.stderr
    assert "waiting" in done.stdout


def test_a_failed_run_exits_4_and_says_so(tmp_path: Path) -> None:
    nb = tmp_path / "broken.ipynb"
    _notebook(nb, FAILING)
    done = _airun(tmp_path, "run", str(nb))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "a run did not complete" in done.stderr and "bad input" in done.stdout + done.stderr
