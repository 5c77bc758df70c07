"""Policy tightening only: a workflow's own ``policy:`` and ``risk:`` cannot loosen the
configured policy; matchers that can never match are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sec_support import World, run_refused

from airun_nb.errors import SpecError
from airun_nb.governance import policy as policy_mod
from airun_nb.governance.policy import PolicyError

CONFIGURED = """
roles: {agent: [agent-7], lead: [lena]}
rules:
  - {name: agents-no-shell, principals: [role:agent], capabilities: [shell.run, python.exec], decision: deny}
  - {name: no-risky, principals: [role:agent], capabilities: ["*"], risk: ">= high", decision: deny}
"""


@pytest.fixture
def agent(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    path = world.root.parent / "policy.yaml"
    path.write_text(CONFIGURED)
    monkeypatch.setenv("AIRUN_POLICY", str(path))
    monkeypatch.setenv("AIRUN_USER", "agent-7")
    return world


SHELL_STEP = "  - id: sh\n    capability: shell.run\n    with: {command: [touch, pwned.txt]}\n"


@pytest.mark.parametrize(
    ("policy_block", "needle"),
    [
        ("policy:\n  roles: {agent: []}\n", "roles.agent"),
        ("policy:\n  roles: {agent: [someone-else]}\n", "roles.agent"),
        ("policy:\n  roles: {lead: [agent-7]}\n", "roles.lead"),
        (
            "policy:\n  rules:\n    - {name: let-me, capabilities: [shell.run], decision: allow}\n",
            "rule 'let-me'",
        ),
        (
            "policy:\n  roles: {mine: [agent-7]}\n  rules:\n"
            "    - {name: unused-role, capabilities: [fs.write], decision: deny}\n",
            "roles.mine",
        ),
        (
            "policy:\n  default: allow\n  rules:\n    - {name: x, principals: [], decision: deny}\n",
            "'principals' is empty",
        ),
        (
            "policy:\n  rules:\n    - {name: x, capabilities: [], decision: deny}\n",
            "'capabilities' is empty",
        ),
        (
            "policy:\n  rules:\n    - {name: x, capabilities: [no.such.cap], decision: deny}\n",
            "matches no known capability",
        ),
    ],
)
def test_a_workflow_cannot_loosen_the_policy(agent: World, policy_block: str, needle: str) -> None:
    snap = agent.snapshot()
    before = agent.store_bytes()
    with pytest.raises(SpecError) as exc:
        from airun_nb import Workflow

        Workflow.from_yaml("name: loosen\n" + policy_block + "steps:\n" + SHELL_STEP)
    assert needle in exc.value.message
    assert not (agent.root / "pwned.txt").exists()
    agent.assert_unchanged(snap)
    agent.assert_store_untouched(before)


def test_a_lower_risk_does_not_escape_a_risk_rule(agent: World) -> None:
    snap = agent.snapshot()
    _r, error = run_refused(
        agent,
        "name: low\nsteps:\n  - id: sh\n    capability: http.request\n    risk: low\n"
        "    with: {url: 'http://127.0.0.1:9/'}\n",
    )
    assert "denied by the policy" in error and "no-risky" in error and "risk high" in error
    agent.assert_unchanged(snap)


def test_a_higher_risk_is_kept(agent: World) -> None:
    _r, error = run_refused(
        agent,
        "name: high\nsteps:\n  - id: w\n    capability: fs.write\n    risk: critical\n"
        "    with: {path: out.txt, content: x}\n",
    )
    assert "risk critical" in error
    assert not (agent.root / "out.txt").exists()


def test_a_seed_capability_id_in_a_rule_matches_the_native_step(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = world.root.parent / "seedids.yaml"
    path.write_text(
        "rules:\n  - {name: no-deletes, capabilities: [io.fs.delete_file], decision: deny}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(path))
    snap = world.snapshot()
    _r, error = run_refused(
        world,
        "name: del\nsteps:\n  - id: d\n    capability: fs.delete\n    with: {path: data.txt}\n",
    )
    assert "no-deletes" in error
    world.assert_unchanged(snap)


def test_a_native_name_in_a_rule_matches_a_seed_id_step(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = world.root.parent / "native.yaml"
    path.write_text("rules:\n  - {name: no-writes, capabilities: [fs.write], decision: deny}\n")
    monkeypatch.setenv("AIRUN_POLICY", str(path))
    snap = world.snapshot()
    _r, error = run_refused(
        world,
        "name: w\nsteps:\n  - id: w\n    capability: io.fs.write_file\n"
        "    with: {path: data.txt, content: overwritten}\n",
    )
    assert "no-writes" in error
    world.assert_unchanged(snap)


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ("{name: typo, capabilities: [fs.wirte], decision: deny}", "rule 'typo'"),
        (
            "{name: nobody, principals: [], capabilities: ['*'], decision: deny}",
            "'principals' is empty",
        ),
        (
            "{name: ask, capabilities: ['*'], decision: require_approval, approvers: []}",
            "'approvers' is empty",
        ),
    ],
)
def test_a_configured_rule_that_can_never_match_is_an_error(
    tmp_path: Path, rule: str, needle: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"rules:\n  - {rule}\n")
    with pytest.raises(PolicyError) as exc:
        policy_mod.load_file(path)
    assert needle in exc.value.message


def test_a_workflow_may_add_its_own_role_and_deny_rules(agent: World) -> None:
    from airun_nb import Workflow

    snap = agent.snapshot()
    wf = Workflow.from_yaml(
        "name: tighter\npolicy:\n  roles: {writers: [agent-7]}\n  rules:\n"
        "    - {name: no-writes-here, principals: [role:writers], capabilities: [fs.write],"
        " decision: deny}\n"
        "steps:\n  - id: w\n    capability: fs.write\n    with: {path: data.txt, content: x}\n"
    )
    r = wf.run(raise_on_failure=False)
    assert "no-writes-here" in str(r.error)
    agent.assert_unchanged(snap)
