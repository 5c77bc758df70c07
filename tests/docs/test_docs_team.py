"""The shell examples of docs/team.md's "Moving runs between stores" run as a reader types them.

Each ``bash`` block of the section runs in ``bash -euo pipefail``, in an empty folder holding
the team store the text describes (a failed run of ``report`` whose step ``div`` divided by a
zero param ``d``, its id in ``$RUN``), with ``airun`` on the PATH. Every command must succeed,
and a comment that shows what a command prints (``# pulled r-…: 4 steps, …``) must match a line
it printed (``…`` standing for any text).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from airun_nb.gates import gate
from airun_nb.store.database import Store
from airun_nb.workflow import Workflow

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Moving runs between stores"
_FENCE = re.compile(r"^```bash[^\n]*\n(.*?)^```", re.M | re.S)
_SAYS = re.compile(r"#\s*((?:pulled|pushed) .+?)\s*$", re.M)

REPORT = """
params: {d: 0}
on_failure: stop
steps:
  - id: load
    python: |
      import pandas as pd
      result = pd.DataFrame({"region": ["north", "south"], "amount": [1.5, 2.0]})
  - id: review
    needs: [load]
    approval: {message: "Go on?"}
  - id: totals
    needs: [review]
    sql: select sum(amount) as total from {{ steps.load }}
  - id: div
    needs: [totals]
    python: |
      result = 10 / params["d"]
"""


def section_blocks() -> list[str]:
    text = (ROOT / "docs" / "team.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return _FENCE.findall(text[start : end if end != -1 else len(text)])


def test_the_section_has_shell_examples() -> None:
    """The section shows the commands, so the test below has something to run."""
    assert section_blocks()


@pytest.mark.parametrize("block", section_blocks())
def test_moving_runs_examples_run(block: str, tmp_path: Path) -> None:
    """The pull / show / fork / push example works as written, and the team store then holds
    the failed run and its fix."""
    work = tmp_path / "here"
    work.mkdir()
    team = work / "team.duckdb"
    wf = Workflow.from_yaml(REPORT, name="report")
    first = wf.run(db=team, raise_on_failure=False)
    gate.decide(Store.open(team), first.run_id, "review", "approve", actor="lead", channel="cli")
    assert wf.run(db=team, resume=first.run_id, raise_on_failure=False).status == "failed"
    Store.open(team).release()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "airun"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m airun_nb "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "AIRUN_DB"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", RUN=first.run_id)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for said in _SAYS.findall(block):
        pattern = re.escape(said).replace(re.escape("…"), ".*")
        assert any(re.fullmatch(pattern, line) for line in lines), (said, proc.stdout)
    listed = Store.open(team).runs_with_status("completed")
    assert [r["forked_from"] for r in listed] == [first.run_id]
