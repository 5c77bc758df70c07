"""The shell example of docs/approvals.md's *Delegation* section runs as written, with the
policy block above it: bob delegates, the delegations are listed, carol approves for bob.

Real `airun` processes as different users (the `env` identity mode) over a real DuckDB store.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from airun_nb import Workflow
from airun_nb.store.database import Store
from support import AIRUN

DOC = Path(__file__).resolve().parents[2] / "docs" / "approvals.md"


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def fenced(text: str, lang: str) -> str:
    m = re.search(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)
    assert m, f"no {lang} block"
    return m.group(1)


def test_the_delegation_example_runs(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command of the example, run by the user its comment names, does what the comment
    says; the approval is recorded for bob, by carol."""
    part = section("Delegation")
    policy = tmp_path / "policy.yaml"
    policy.write_text(fenced(part, "yaml"))
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_USER", "alice")
    run = Workflow.from_yaml(
        "name: payout\nsteps:\n  - id: review\n    approval: {approvers: [role:lead]}\n"
    ).run(db=db, raise_on_failure=False)
    assert run.status == "waiting"
    outputs = []
    for line in fenced(part, "bash").splitlines():
        command, _, comment = line.partition("#")
        user = re.search(r"run by (\w+)", comment)
        args = shlex.split(command.replace("r-1a2b3c4d", run.run_id))
        assert args[0] == "airun"
        env = {**os.environ, "AIRUN_USER": user.group(1) if user else "alice"}
        done = subprocess.run(
            [*AIRUN, *args[1:], "--db", str(db)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{line}: {done.stderr}"
        outputs.append(done.stdout)
    assert "carol for bob until 2099-06-30 23:59 UTC" in outputs[1]
    assert "as carol for bob" in outputs[2]
    row = Store.open(db).gate_row(run.run_id, "review")
    assert row is not None and row["status"] == "approved" and row["actor"] == "bob"
