"""A resumed run continues with its own params, whatever the file's defaults or a later
``--input`` say; a run with other params is a new run (``airun exec``, ``airun resume``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.seedcli import airun, last_json

FILES = Path(__file__).parent / "files"


@pytest.mark.parametrize("name", ["param_gate.yaml", "param_gate_native.yaml"])
def test_resume_after_approval_keeps_the_runs_own_params(tmp_path: Path, name: str) -> None:
    """`airun resume RUN` after an approval runs the rest with the run's `f`, not the default:
    the first step is not run again and nothing is written under the default name."""
    flow = str(FILES / name)
    first = airun("exec", flow, "--input", "f=one.txt", "--json", cwd=tmp_path)
    assert first.returncode == 30, first.stderr
    run_id = str(last_json(first)["run_id"])
    assert airun("approve", run_id, "gate", "--by", "rev", cwd=tmp_path).returncode == 0
    resumed = airun("resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (tmp_path / "done-one.txt").exists()
    assert not (tmp_path / "default.txt").exists()
    assert not (tmp_path / "done-default.txt").exists()
    why = airun("why", run_id, "w", cwd=tmp_path)
    assert "params changed" not in why.stdout + why.stderr


def test_exec_again_with_other_inputs_starts_a_new_run(tmp_path: Path) -> None:
    """While run A waits at its gate, `airun exec` with another `f` is a new run B (A keeps
    waiting with its own file); `airun exec` with B's inputs again continues B, and A, once
    approved, resumes with its own `f`."""
    flow = str(FILES / "param_gate.yaml")
    a = last_json(airun("exec", flow, "--input", "f=one.txt", "--json", cwd=tmp_path))
    b = last_json(airun("exec", flow, "--input", "f=two.txt", "--json", cwd=tmp_path))
    assert a["run_id"] != b["run_id"] and b["status"] == "waiting"
    assert (tmp_path / "one.txt").exists() and (tmp_path / "two.txt").exists()
    airun("approve", str(b["run_id"]), "gate", "--by", "rev", cwd=tmp_path)
    again = airun("exec", flow, "--input", "f=two.txt", "--json", cwd=tmp_path)
    assert last_json(again)["run_id"] == b["run_id"]
    assert last_json(again)["status"] == "completed"
    assert (tmp_path / "done-two.txt").exists() and not (tmp_path / "done-one.txt").exists()
    airun("approve", str(a["run_id"]), "gate", "--by", "rev", cwd=tmp_path)
    assert airun("resume", str(a["run_id"]), cwd=tmp_path).returncode == 0
    assert (tmp_path / "done-one.txt").exists() and not (tmp_path / "done-default.txt").exists()


def test_resume_with_other_params_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking to resume a run with other params from Python is refused with what to do."""
    import airun_nb
    from airun_nb.errors import RunBusy

    text = (FILES / "param_gate_native.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIRUN_WORKSPACE", raising=False)
    db = tmp_path / "s.duckdb"
    first = airun_nb.Workflow.from_yaml(text).run(db=db, params={"f": "a.txt"})
    assert first.status == "waiting"
    with pytest.raises(RunBusy, match="continues with its own params"):
        airun_nb.Workflow.from_yaml(text).run(db=db, resume=first.run_id, params={"f": "b.txt"})
    assert not (tmp_path / "b.txt").exists()


def test_a_dry_run_of_a_resume_plans_with_the_runs_params_and_claims_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--dry-run` of a resume plans the run's own params (its first step replays, nothing
    "params changed") and leaves the stored run as it was."""
    import airun_nb

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIRUN_WORKSPACE", raising=False)
    text = (FILES / "param_gate_native.yaml").read_text()
    db = tmp_path / "s.duckdb"
    first = airun_nb.Workflow.from_yaml(text).run(db=db, params={"f": "a.txt"})
    assert first.status == "waiting"
    plan = airun_nb.Workflow.from_yaml(text).runner(db=db).dry_run(resume=first.run_id)
    assert plan.mode == "resume" and plan.replayed == ["w"]
    assert airun_nb.runs(db=db)["status"].tolist() == ["waiting"]
