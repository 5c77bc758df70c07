"""`airun run NOTEBOOK`: what it reports, and that the kernel starts quietly (IPC, no TCP)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat

from support import AIRUN
from support.notebooks import python_notebook

CELL = """%%workflow nightly
steps:
  - id: first
    python: result = 1
  - id: second
    needs: [first]
    python: |
      import pathlib
      if not pathlib.Path("go").exists():
          raise RuntimeError("not yet")
      result = 2
"""


def _notebook(path: Path) -> None:
    nb = python_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext airun_nb"),
        nbformat.v4.new_code_cell(CELL.replace("steps:", "on_failure: stop\nsteps:")),
    ]
    nbformat.write(nb, path)


def test_airun_run_reports_the_runs_it_resumed_and_starts_the_kernel_without_tcp(
    tmp_path: Path,
) -> None:
    nb = tmp_path / "nightly.ipynb"
    _notebook(nb)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_DB"] = str(tmp_path / "airun.duckdb")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AIRUN, "run", str(nb), "--output", str(tmp_path / "out.ipynb")],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = run()
    assert first.returncode != 0 and "not yet" in first.stdout + first.stderr
    run_id = first.stdout.split("run ")[1].split()[0]
    assert "TCP" not in first.stderr and "without encryption" not in first.stderr
    (tmp_path / "go").touch()
    second = run()
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"(resumed run {run_id}, started before this notebook run)" in second.stdout
    assert f"run {run_id} · nightly · completed" in second.stdout
    assert "TCP" not in second.stderr
    # the kernel is shut down before the command exits, not left to notice its parent is gone
    for done in (first, second):
        assert "Parent appears to have exited" not in done.stderr, done.stderr
    assert not list(tmp_path.glob("kernel*")), "socket files left in the notebook's folder"
