"""Past runs as objects: ``airun_nb.load_run(RUN)`` and ``last_run()`` after a kernel restart."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import airun_nb
from airun_nb import Workflow
from support.live import LiveKernel

FLAKY = """
name: loaded
on_failure: stop
steps:
  - id: a
    python: "result = {'rows': 3}"
  - id: b
    needs: [a]
    call: check
"""


def test_load_run_gives_the_stored_runs_status_steps_outputs_and_timeline(db: Path) -> None:
    """A stored run comes back as a RunResult with what the run itself returned."""

    def check() -> int:
        raise ValueError("bad batch")

    ran = Workflow.from_yaml(FLAKY).run(db=db, namespace={"check": check}, raise_on_failure=False)
    assert ran.status == "failed"
    loaded = airun_nb.load_run(ran.run_id, db=db)
    assert isinstance(loaded, airun_nb.RunResult)
    assert (loaded.run_id, loaded.workflow, loaded.status) == (ran.run_id, "loaded", "failed")
    assert loaded.failed_step == "b" and "bad batch" in (loaded.error or "")
    assert loaded.outputs["a"] == {"rows": 3}
    assert "b" not in loaded.outputs
    steps = loaded.steps
    assert steps["step"].tolist() == ["a", "b"]
    assert steps["status"].tolist() == ["completed", "failed"]
    assert pd.api.types.is_timedelta64_dtype(steps["duration"])
    assert "bad batch" in repr(loaded) and ran.run_id in repr(loaded)
    picture = loaded.timeline()
    assert picture.figure is not None


def test_load_run_reuses_nothing_it_does_not_own_and_refuses_unknown_runs(db: Path) -> None:
    """Loading a run writes nothing: the store's runs are the same before and after; an
    unknown run and a store that does not exist are one-line errors."""
    done = Workflow.from_yaml("name: one\nsteps:\n  - id: x\n    python: result = 7\n").run(db=db)
    before = airun_nb.runs(db=db)[["run_id", "status"]].to_dict("records")
    assert airun_nb.load_run(done.run_id, db=db).outputs["x"] == 7
    assert airun_nb.runs(db=db)[["run_id", "status"]].to_dict("records") == before
    with pytest.raises(airun_nb.RunNotFound, match="no run 'r-nothere'"):
        airun_nb.load_run("r-nothere", db=db)
    typo = db.with_name("typo.duckdb")
    with pytest.raises(airun_nb.StoreError, match="there is no store"):
        airun_nb.load_run(done.run_id, db=typo)
    assert not typo.exists()


def _env(db: Path, notebook: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(AIRUN_DB=str(db), AIRUN_USER="alice", AIRUN_IDENTITY="env")
    env["JPY_SESSION_NAME"] = notebook  # what Jupyter Server tells a notebook's kernel
    return env


def _cell(name: str, value: int) -> str:
    return textwrap.dedent(
        f"""\
        %%workflow {name}
        steps:
          - id: total
            python: result = {value}
        """
    )


@pytest.mark.slow
def test_last_run_after_a_kernel_restart_is_this_notebooks_latest_run(tmp_path: Path) -> None:
    """After a restart the kernel has run nothing, yet ``last_run()`` is the notebook's latest
    run from the store (not another notebook's later run), with its outputs."""
    db = tmp_path / "airun.duckdb"

    def session(notebook: str, code: list[str]) -> str:
        kernel = LiveKernel(tmp_path, _env(db, notebook))
        try:
            return "\n".join(kernel.text(kernel.execute(c)) for c in code)
        finally:
            kernel.shutdown()

    session("sales.ipynb", ["%load_ext airun_nb", _cell("sales", 41)])
    session("other.ipynb", ["%load_ext airun_nb", _cell("other", 99)])
    sales_run = airun_nb.runs(db=db, workflow="sales")["run_id"].iloc[0]
    out = session(
        "sales.ipynb",  # the same notebook, restarted: a fresh kernel
        [
            "import airun_nb\n"
            "r = airun_nb.last_run()\n"
            "print('LAST', r.run_id, r.workflow, r.status, r.outputs['total'])"
        ],
    )
    assert f"LAST {sales_run} sales completed 41" in out, out
