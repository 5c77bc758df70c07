"""Cancelling a run: `airun_nb.cancel()` and `airun cancel`.

Real stores (a DuckDB file in tmp_path, and a PostgreSQL database: every test runs on both);
the "executing elsewhere" and "waiting in a live process" cases use a real second Python
process (killed with a real SIGKILL where a crash is the point).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import airun_nb
from airun_nb import AlreadyDecided, RunBusy, RunEnded, RunNotFound, Workflow
from airun_nb.engine.cancel import CancelError
from support import AIRUN
from support.service import NAMESPACE, effects, gated_spec

# Steps as inline Python, so a second process can run (and undo) them without this module.
PY_STEPS = {
    "name": "py_gated",
    "steps": [
        {
            "id": "prepare",
            "python": "open('effects.log', 'a').write('prepare\\n')\nresult = 1",
            "compensate": {"python": "open('effects.log', 'a').write('unprepare\\n')"},
        },
        {"id": "review", "needs": ["prepare"], "approval": {"message": "go?"}},
        {
            "id": "slow",
            "needs": ["review"],
            "python": "import time\ntime.sleep(float(params['nap']))",
        },
    ],
    "params": {"nap": 0},
}


@pytest.fixture(autouse=True)
def env(store_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.chdir(tmp_path)
    return store_db


def waiting_run(db: Path, name: str = "deploy") -> str:
    result = Workflow.from_yaml(gated_spec(name)).run(
        db=db, namespace=NAMESPACE, raise_on_failure=False
    )
    assert result.status == "waiting"
    return result.run_id


def status(db: Path, run_id: str) -> str:
    df = airun_nb.runs(db=db)
    return str(df.loc[df["run_id"] == run_id, "status"].iloc[0])


def kinds(db: Path, run_id: str) -> list[str]:
    return airun_nb.events(run_id, db=db)["kind"].tolist()


def test_cancel_ends_a_waiting_run_closes_its_gate_and_is_audited(env: Path) -> None:
    run_id = waiting_run(env)
    other = waiting_run(env, "other")
    out = airun_nb.cancel(run_id, by="alice", comment="wrong data")
    assert out == {
        "run_id": run_id,
        "status": "cancelled",
        "previous": "waiting",
        "gates_closed": ["review"],
        "rolled_back": False,
        "by": "alice",
        "channel": "api",
    }
    assert status(env, run_id) == "cancelled" and status(env, other) == "waiting"
    gate = airun_nb.approvals(run_id, db=env).iloc[0]
    assert (gate["status"], gate["actor"]) == ("cancelled", "alice")
    steps = airun_nb.steps(run_id, db=env).set_index("step_id")["status"].to_dict()
    assert steps == {"prepare": "completed", "review": "cancelled", "ship": "pending"}
    assert kinds(env, run_id)[-2:] == ["gate_cancelled", "run_cancelled"]
    detail = json.loads(airun_nb.events(run_id, db=env)["detail"].iloc[-1])
    assert detail == {
        "by": "alice",
        "channel": "api",
        "previous": "waiting",
        "rolled_back": False,
        "comment": "wrong data",
    }
    audit = airun_nb.audit(run_id, db=env)
    row = audit[audit["capability"] == "cancel"].iloc[0]
    assert (row["kind"], row["principal"], row["decision"]) == ("human", "alice", "cancelled")
    assert effects() == ["prepare", "prepare"]  # nothing undone, nothing shipped

    with pytest.raises(AlreadyDecided, match="was already cancelled by alice"):
        airun_nb.approve(run_id, "review", by="bob")
    with pytest.raises(CancelError, match="already cancelled"):
        airun_nb.cancel(run_id)
    with pytest.raises(RunEnded, match="was cancelled and cannot resume"):
        Workflow.from_yaml(gated_spec()).run(db=env, namespace=NAMESPACE, resume=run_id)
    # the notebook's cell starts afresh
    again = Workflow.from_yaml(gated_spec()).run(
        db=env, namespace=NAMESPACE, raise_on_failure=False
    )
    assert again.run_id != run_id and again.status == "waiting"


def test_cancel_with_rollback_undoes_the_finished_steps_first(env: Path) -> None:
    run_id = waiting_run(env)
    out = airun_nb.cancel(run_id, rollback=True, namespace=NAMESPACE)
    assert out["rolled_back"] and out["gates_closed"] == ["review"]
    assert effects() == ["prepare", "unprepare"]
    assert status(env, run_id) == "cancelled"
    steps = airun_nb.steps(run_id, db=env).set_index("step_id")
    assert steps.loc["prepare", "comp_status"] == "done"
    seq = kinds(env, run_id)
    assert (
        seq.index("run_cancel_started")
        < seq.index("compensation_done")
        < seq.index("run_cancelled")
    )
    assert airun_nb.approvals(run_id, db=env)["status"].tolist() == ["cancelled"]


def test_a_failed_run_can_be_cancelled_and_a_finished_one_cannot(env: Path) -> None:
    spec = "name: flaky\non_failure: stop\nsteps:\n  - id: a\n    python: 'raise ValueError(\"bad row\")'\n"
    failed = Workflow.from_yaml(spec).run(db=env, raise_on_failure=False)
    assert failed.status == "failed"
    assert airun_nb.cancel(failed.run_id)["previous"] == "failed"
    assert status(env, failed.run_id) == "cancelled"

    done = Workflow.from_yaml("name: fine\nsteps:\n  - id: a\n    python: 'result = 1'\n").run(
        db=env
    )
    before = len(airun_nb.events(db=env))
    with pytest.raises(CancelError, match="is completed and cannot be cancelled"):
        airun_nb.cancel(done.run_id)
    with pytest.raises(RunNotFound, match="no run 'r-missing'"):
        airun_nb.cancel("r-missing")
    assert len(airun_nb.events(db=env)) == before
    assert status(env, done.run_id) == "completed"


def _second_process(env: Path, script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AIRUN_DB": str(env)},
    )


def _wait_for(predicate: Any, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"the second process ended early: {proc.stderr.read() if proc.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_a_run_executing_in_a_live_process_is_refused_until_that_process_dies(env: Path) -> None:
    doc = dict(PY_STEPS, params={"nap": 120})
    proc = _second_process(
        env,
        f"""
        import os
        os.environ["AIRUN_APPROVAL"] = "approve"
        from airun_nb import Workflow
        Workflow.from_yaml({yaml.safe_dump(doc)!r}).run()
        """,
    )
    try:

        def slow_running() -> bool:
            try:
                df = airun_nb.steps(db=env)
            except Exception:
                return False
            return bool(((df["step_id"] == "slow") & (df["status"] == "running")).any())

        _wait_for(slow_running, "the slow step to run", proc)
        run_id = str(airun_nb.runs(db=env)["run_id"].iloc[0])
        with pytest.raises(RunBusy, match=f"run {run_id} is executing in another process"):
            airun_nb.cancel(run_id)
        assert status(env, run_id) == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        out = airun_nb.cancel(run_id)  # its process is gone: the run is only left over
        assert out["previous"] == "running"
        steps = airun_nb.steps(run_id, db=env).set_index("step_id")["status"].to_dict()
        assert steps["slow"] == "cancelled"
        assert status(env, run_id) == "cancelled"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_run_waiting_in_a_live_idle_process_is_cancelled_and_rolled_back_from_here(
    env: Path,
) -> None:
    proc = _second_process(
        env,
        f"""
        import time
        from airun_nb import Workflow
        r = Workflow.from_yaml({yaml.safe_dump(PY_STEPS)!r}).run()
        print(r.run_id, r.status, flush=True)
        time.sleep(120)
        """,
    )
    try:
        assert proc.stdout is not None
        run_id, state = proc.stdout.readline().split()
        assert state == "waiting" and proc.poll() is None
        done = subprocess.run(
            [*AIRUN, "cancel", run_id, "--rollback", "--db", str(env)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"cancelled run {run_id} (was waiting) after rolling it back; closed gate review, "
            "as alice via cli"
        )
        assert effects() == ["prepare", "unprepare"]
        assert status(env, run_id) == "cancelled"
        refused = subprocess.run(
            [*AIRUN, "cancel", run_id, "--db", str(env)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 1
        assert refused.stderr.strip() == f"error: run {run_id} is already cancelled"
    finally:
        proc.kill()
        proc.wait()
