"""`airun delegate`: an approver hands their approvals to another person for a while, where the
configured policy allows it; the record shows both names.

Real DuckDB stores, `airun` in subprocesses as different users (the `env` identity mode), a
policy file as the owner writes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

import airun_nb
from airun_nb import Workflow
from airun_nb.gates import delegation
from airun_nb.store.database import Store
from support import AIRUN

POLICY = """
roles:
  lead: [bob, dave]
delegation:
  allow: [role:lead]
"""


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    monkeypatch.setenv("AIRUN_POLICY", str(path))
    return path


def spec(**approval: Any) -> str:
    doc = {
        "name": "payout",
        "steps": [
            {"id": "review", "approval": {"message": "Pay out?", **approval}},
            {"id": "pay", "needs": ["review"], "python": "result = 'paid'"},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def start(db: Path, monkeypatch: pytest.MonkeyPatch, launcher: str, **approval: Any) -> str:
    monkeypatch.setenv("AIRUN_USER", launcher)
    result = Workflow.from_yaml(spec(**approval)).run(db=db, raise_on_failure=False)
    assert result.status == "waiting"
    return result.run_id


def airun(db: Path, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRUN_USER": user, "AIRUN_IDENTITY": "env", "AIRUN_DB": str(db)}
    return subprocess.run(
        [*AIRUN, *args, "--db", str(db)], env=env, capture_output=True, text=True, timeout=120
    )


def votes(db: Path, run_id: str) -> list[dict[str, Any]]:
    row = Store.open(db).gate_row(run_id, "review")
    assert row is not None
    return json.loads(row["votes"]) if row.get("votes") else []


def test_a_delegate_decides_for_the_approver_and_the_record_shows_both(
    db: Path, policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """carol may not decide a gate of role:lead; after bob delegates to her she may, her vote
    counts as bob's (bob cannot vote again), and the CLI, the store, the audit and the gate's
    output all show "carol for bob"."""
    run_id = start(db, monkeypatch, "alice", approvers=["role:lead"], quorum=2)
    refused = airun(db, "carol", "approve", run_id, "review")
    assert refused.returncode != 0 and "carol may not decide" in refused.stderr
    assert votes(db, run_id) == []

    granted = airun(db, "bob", "delegate", "--to", "carol", "--until", "2099-12-31")
    assert granted.returncode == 0, granted.stderr
    assert "carol may decide the gates bob may decide until 2099-12-31 23:59 UTC" in granted.stdout
    listed = airun(db, "alice", "delegations")
    assert "carol for bob until 2099-12-31 23:59 UTC (by bob)" in listed.stdout

    done = airun(db, "carol", "approve", run_id, "review", "-m", "covering for bob")
    assert done.returncode == 0, done.stderr
    assert "as carol for bob" in done.stdout and "1 of 2 approvals" in done.stdout
    again = airun(db, "bob", "approve", run_id, "review")
    assert again.returncode != 0 and "bob already approved" in again.stderr

    last = airun(db, "dave", "approve", run_id, "review")
    assert last.returncode == 0, last.stderr
    recorded = votes(db, run_id)
    assert [(v["actor"], v.get("delegate")) for v in recorded] == [
        ("bob", "carol"),
        ("dave", None),
    ]
    shown = airun(db, "alice", "approvals", "--all", "--run", run_id)
    assert "Approved by carol for bob, dave" in shown.stdout, shown.stdout
    audit = airun_nb.audit(run_id, db=db)
    human = audit[audit["kind"] == "human"].to_dict("records")
    assert json.loads(human[0]["arguments"])["delegate"] == "carol"
    assert human[0]["principal"] == "bob"
    every = airun_nb.audit(db=db)
    assert len(every[every["kind"] == "delegation"]) == 1

    out = Workflow.from_yaml(spec(approvers=["role:lead"], quorum=2)).run(
        db=db, resume=run_id, raise_on_failure=False
    )
    assert out.status == "completed"
    decided = out.outputs["review"]
    assert decided["by"] == ["bob", "dave"] and decided["delegated"] == {"bob": "carol"}


def test_delegation_is_off_unless_the_policy_allows_it(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``delegation:`` in the configured policy, `airun delegate` is one line and
    records nothing; with it, someone outside the allowed roles is refused too."""
    plain = tmp_path / "plain.yaml"
    plain.write_text("roles:\n  lead: [bob]\n")
    monkeypatch.setenv("AIRUN_POLICY", str(plain))
    start(db, monkeypatch, "alice", approvers=["bob"])
    refused = airun(db, "bob", "delegate", "--to", "carol", "--until", "2099-12-31")
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0
    assert "the policy does not let bob delegate" in refused.stderr
    (tmp_path / "p2.yaml").write_text(POLICY)
    monkeypatch.setenv("AIRUN_POLICY", str(tmp_path / "p2.yaml"))
    outsider = airun(db, "erin", "delegate", "--to", "carol", "--until", "2099-12-31")
    assert "the policy does not let erin delegate" in outsider.stderr
    past = airun(db, "bob", "delegate", "--to", "carol", "--until", "2001-01-01")
    assert past.returncode != 0 and "in the past" in past.stderr
    bad = airun(db, "bob", "delegate", "--to", "carol", "--until", "next week")
    assert bad.returncode != 0 and "is not a date" in bad.stderr
    assert Store.open(db).events_of_kind("delegated") == []


def test_an_expired_delegation_does_nothing(
    db: Path, policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delegation that ended no longer lets the delegate decide (the store's clock says when
    it ended), and `airun delegations` no longer lists it."""
    run_id = start(db, monkeypatch, "alice", approvers=["bob"])
    monkeypatch.setenv("AIRUN_USER", "bob")
    store = Store.open(db)
    found = delegation.grant(store, to="carol", until=store.clock() + 3.0)
    store.release()
    assert found.delegate == "carol" and found.principal == "bob"
    ends = datetime.fromtimestamp(found.until, tz=timezone.utc)
    limit, tick = time.monotonic() + 120, threading.Event()
    while Store.open(db).clock() <= ends.timestamp():
        assert time.monotonic() < limit
        tick.wait(0.1)  # a poll of the store's clock
    late = airun(db, "carol", "approve", run_id, "review")
    assert late.returncode != 0 and "carol may not decide" in late.stderr
    assert votes(db, run_id) == []
    assert "no delegation in force" in airun(db, "bob", "delegations").stdout


def test_a_revoked_delegation_does_nothing(
    db: Path, policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`airun delegate --to carol --revoke` (run by bob) ends his delegation at once: carol is
    refused again, nothing is recorded, and the revocation is an audit row."""
    run_id = start(db, monkeypatch, "alice", approvers=["bob"])
    assert airun(db, "bob", "delegate", "--to", "carol", "--until", "2099-12-31").returncode == 0
    ended = airun(db, "bob", "delegate", "--to", "carol", "--revoke")
    assert ended.returncode == 0, ended.stderr
    assert "carol no longer decides for bob" in ended.stdout
    late = airun(db, "carol", "approve", run_id, "review")
    assert late.returncode != 0 and "carol may not decide" in late.stderr
    assert votes(db, run_id) == []
    again = airun(db, "bob", "delegate", "--to", "carol", "--revoke")
    assert again.returncode != 0 and "no delegation to carol in force" in again.stderr
    every = airun_nb.audit(db=db)
    assert every[every["kind"] == "delegation"]["decision"].tolist() == ["allow", "revoke"]
