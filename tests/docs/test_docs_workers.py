"""The examples of docs/team.md's "Workers and queues" run as a reader runs them: the workflow
cell queues a run from a notebook, and the shell lines (submit, worker, runs) queue, run and
list one from a terminal. Real `airun` processes on a fresh store."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from support.queued import airun, env

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```(yaml|bash)\n(.*?)^```", re.M | re.S)


def _section() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "team.md").read_text()
    start = text.index("## Workers and queues")
    end = text.find("\n## ", start + 1)
    return _FENCE.findall(text[start : end if end != -1 else None])


def test_the_workers_section_has_its_examples() -> None:
    kinds = [k for k, _ in _section()]
    assert kinds == ["yaml", "bash"]


def test_the_shell_lines_queue_run_and_list_the_documented_workflow(tmp_path: Path) -> None:
    """Every line of the shell block exits 0: submit prints a run id, the worker completes
    that run, and `airun runs` lists it completed."""
    (cell, lines) = (body for _, body in _section())
    magic, _, workflow = cell.partition("\n")
    assert magic.startswith("%%workflow nightly_totals --submit")
    (tmp_path / "nightly_totals.yaml").write_text(workflow)
    e = env(tmp_path / "airun.duckdb", tmp_path / "ledger.txt")
    out = []
    for line in lines.strip().splitlines():
        words = shlex.split(line)
        assert words[0] == "airun"
        done = airun(words[1:], e, tmp_path)
        assert done.returncode == 0, f"{line}: {done.stderr}"
        out.append(done.stdout)
    run_id = out[0].strip()
    assert f"run {run_id} completed" in out[1]
    assert run_id in out[2] and "completed" in out[2]


def test_the_cell_queues_a_run_that_a_worker_of_its_queue_runs(
    ipython, capsys, tmp_path: Path
) -> None:
    """The documented cell, run in a notebook, queues a run on `nightly` (nothing runs in the
    kernel), and `airun worker --queue nightly` completes it."""
    (cell, _lines) = (body for _, body in _section())
    assert ipython.run_cell(cell).error_in_exec is None
    said = capsys.readouterr().out
    assert "on queue nightly" in said
    run_id = said.split("queued run ", 1)[1].split()[0]
    e = env(Path(os.environ["AIRUN_DB"]), tmp_path / "ledger.txt")
    done = airun(["worker", "--queue", "nightly", "--exit-when-idle"], e, tmp_path)
    assert f"run {run_id} completed" in done.stdout, done.stdout + done.stderr
