"""Delegation cannot be a way around the policy or four-eyes.

A workflow cannot grant itself (or anyone) a delegate: not by its own ``policy:``, not by code
in a step; a delegate cannot approve a run they launched, nor one the person they act for
launched, when four-eyes applies. Every refusal records nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sec_support import World, airun, one_line, run_refused

from airun_nb import Workflow
from airun_nb.governance import policy as policy_mod
from airun_nb.store.database import Store

POLICY = """
roles:
  lead: [bob, dave]
delegation:
  allow: [role:lead]
"""


def configure(world: World, monkeypatch: pytest.MonkeyPatch, text: str = POLICY) -> Path:
    """The owner's policy, for this process and the `airun` processes it starts."""
    path = world.root.parent / "policy.yaml"
    path.write_text(text)
    policy_mod.configure(path)
    monkeypatch.setenv("AIRUN_POLICY", str(path))
    return path


def gated(**approval: Any) -> str:
    doc = {
        "name": "payout",
        "steps": [
            {"id": "review", "approval": {"message": "Pay out?", **approval}},
            {"id": "pay", "needs": ["review"], "python": "result = 'paid'"},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def delegations(world: World) -> list[dict[str, Any]]:
    return Store.open(world.store).events_of_kind("delegated")


def test_a_workflow_policy_cannot_allow_delegation(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``policy: {delegation: ...}`` in a workflow is refused in one line before anything
    runs; only the configured policy says who may delegate."""
    configure(world, monkeypatch, "roles:\n  lead: [bob]\n")
    doc = yaml.safe_load(gated(approvers=["bob"]))
    doc["policy"] = {"delegation": {"allow": ["*"]}}
    result, line = run_refused(world, yaml.safe_dump(doc))
    assert result is None
    assert "'delegation' belongs to the configured policy" in line
    assert delegations(world) == []


def test_code_in_a_step_cannot_grant_a_delegate(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that calls the delegation function itself acts as the process's identity (the
    login, in the ``os`` mode a shared host uses), which the configured policy does not let
    delegate, nor claim to be bob: both steps fail, no delegation is recorded, and the
    would-be delegate stays refused."""
    configure(world, monkeypatch)
    monkeypatch.setenv("AIRUN_IDENTITY", "os")
    for claim in (", principal='bob'", ""):
        text = yaml.safe_dump(
            {
                "name": "sneaky",
                "steps": [
                    {
                        "id": "grant",
                        "python": (
                            "from airun_nb.gates import delegation\n"
                            "from airun_nb.store.database import Store\n"
                            "result = delegation.grant(Store.open(None), to='mallory', "
                            f"until='2099-12-31'{claim})\n"
                        ),
                    }
                ],
            }
        )
        result = Workflow.from_yaml(text).run(raise_on_failure=False, new=True)
        assert result.status in ("failed", "rolled_back"), claim
        assert "may not decide as bob" in str(result.error) or "does not let" in str(result.error)
    assert delegations(world) == []
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    monkeypatch.setenv("AIRUN_USER", "alice")
    waiting = Workflow.from_yaml(gated(approvers=["bob"])).run(raise_on_failure=False)
    refused = airun(
        "approve",
        waiting.run_id,
        "review",
        env={"AIRUN_USER": "mallory", "AIRUN_DB": str(world.store)},
    )
    assert refused.returncode != 0
    assert "mallory may not decide" in one_line(refused.stderr)


def test_a_delegate_cannot_approve_a_run_they_launched(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """carol launches a run whose gate bob must decide; bob delegates to carol; carol's
    approval is refused by four-eyes and nothing is recorded."""
    configure(world, monkeypatch)
    monkeypatch.setenv("AIRUN_USER", "carol")
    run = Workflow.from_yaml(gated(approvers=["bob"])).run(raise_on_failure=False)
    assert run.status == "waiting"
    env = {"AIRUN_DB": str(world.store)}
    granted = airun(
        "delegate", "--to", "carol", "--until", "2099-12-31", env={**env, "AIRUN_USER": "bob"}
    )
    assert granted.returncode == 0, granted.stderr
    refused = airun("approve", run.run_id, "review", env={**env, "AIRUN_USER": "carol"})
    assert refused.returncode != 0
    assert "four-eyes" in one_line(refused.stderr) or "may not decide" in refused.stderr
    row = Store.open(world.store).gate_row(run.run_id, "review")
    assert row is not None and row["status"] == "open" and not json.loads(row["votes"] or "[]")


def test_a_delegate_cannot_approve_for_the_launcher(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bob launches a run whose gate role:lead decides (bob is a lead, but four-eyes keeps him
    out); bob delegates to carol; carol cannot approve as bob either."""
    configure(world, monkeypatch)
    monkeypatch.setenv("AIRUN_USER", "bob")
    run = Workflow.from_yaml(gated(approvers=["role:lead"])).run(raise_on_failure=False)
    env = {"AIRUN_DB": str(world.store)}
    granted = airun(
        "delegate", "--to", "carol", "--until", "2099-12-31", env={**env, "AIRUN_USER": "bob"}
    )
    assert granted.returncode == 0, granted.stderr
    refused = airun("approve", run.run_id, "review", env={**env, "AIRUN_USER": "carol"})
    assert refused.returncode != 0
    assert "carol may not decide" in one_line(refused.stderr)
    row = Store.open(world.store).gate_row(run.run_id, "review")
    assert row is not None and row["status"] == "open" and not json.loads(row["votes"] or "[]")
