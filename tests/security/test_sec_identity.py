"""Identity: the principal comes from trusted configuration; claims to be someone else need a
delegation right."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from sec_support import World, airun, one_line

import airun_nb
from airun_nb import Workflow
from airun_nb.governance import identity
from airun_nb.store.database import Store

ME = getpass.getuser()


def _gate_run(world: World) -> str:
    wf = Workflow.from_yaml(
        "name: gated\nsteps:\n  - id: review\n    approval: {message: ship?, four_eyes: true}\n"
        "  - id: after\n    needs: [review]\n    python: result = 1\n"
    )
    r = wf.run(raise_on_failure=False)
    assert r.status == "waiting", r.status
    return r.run_id


def _gate(world: World, run_id: str) -> dict[str, object]:
    store = Store.open(world.store)
    rows = store.query_dicts("SELECT * FROM approvals WHERE run_id = ?", [run_id])
    store.release()
    return rows[0]


def test_os_mode_is_the_default_and_ignores_airun_user(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRUN_IDENTITY")
    monkeypatch.setenv("AIRUN_USER", "admin")
    assert identity.mode() == "os"
    assert identity.current() == ME
    r = Workflow.from_yaml("name: who\nsteps:\n  - id: a\n    python: result = 1\n").run()
    assert airun_nb.runs().set_index("run_id").loc[r.run_id, "launched_by"] == ME


def test_env_and_jupyterhub_modes(monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    monkeypatch.setenv("AIRUN_USER", "ci-bot")
    assert identity.current() == "ci-bot"
    monkeypatch.setenv("AIRUN_IDENTITY", "jupyterhub")
    monkeypatch.setenv("JUPYTERHUB_USER", "hub-alice")
    assert identity.current() == "hub-alice"


def test_jupyterhub_mode_without_its_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, world: World
) -> None:
    monkeypatch.setenv("AIRUN_IDENTITY", "jupyterhub")
    with pytest.raises(identity.IdentityError, match="JUPYTERHUB_USER is not set"):
        identity.current()


def test_a_bad_mode_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    monkeypatch.setenv("AIRUN_IDENTITY", "trust-me")
    with pytest.raises(identity.IdentityError, match="AIRUN_IDENTITY is 'trust-me'"):
        identity.current()


def test_the_settings_pin_the_mode_over_the_environment(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    (world.root / "airun.yaml").write_text("identity: os\n")
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    monkeypatch.setenv("AIRUN_USER", "admin")
    assert identity.mode() == "os"
    assert identity.current() == ME
    done = airun("runs", env={"AIRUN_IDENTITY": "env", "AIRUN_USER": "admin"})
    assert done.returncode == 0, done.stderr


def test_approve_by_someone_else_is_refused_without_a_delegation_right(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRUN_IDENTITY")  # os mode: the login launches and decides
    run_id = _gate_run(world)
    before = _gate(world, run_id)
    done = airun(
        "approve", run_id, "review", "--by", "bob", env={"AIRUN_IDENTITY": "os", "AIRUN_USER": ME}
    )
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert f"{ME} may not decide as bob" in line
    with pytest.raises(identity.IdentityError):
        airun_nb.approve(run_id, "review", by="bob")
    assert _gate(world, run_id) == before  # still open, nothing recorded
    assert airun_nb.audit(run_id).query("kind == 'human'").empty


def test_a_delegation_right_lets_a_relay_decide_and_both_names_are_recorded(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRUN_USER", "launcher")
    run_id = _gate_run(world)
    policy = tmp_path / "relay.yaml"
    policy.write_text(
        f"rules:\n  - {{name: relay, principals: [{ME}], capabilities: [gate.decide_as],"
        " decision: allow}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_IDENTITY", "os")
    out = airun_nb.approve(run_id, "review", by="bob", comment="relayed")
    assert out["actor"] == "bob"
    human = airun_nb.audit(run_id).query("kind == 'human'").iloc[0]
    assert human["principal"] == "bob"
    assert json.loads(human["arguments"])["recorded_by"] == ME
    ev = airun_nb.events(run_id)
    detail = json.loads(ev[ev["kind"] == "gate_decided"]["detail"].iloc[0])
    assert detail["actor"] == "bob" and detail["recorded_by"] == ME


def test_four_eyes_compares_the_resolved_identity(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AIRUN_IDENTITY")
    run_id = _gate_run(world)  # launched by the login
    policy = tmp_path / "relay.yaml"
    policy.write_text(
        f"rules:\n  - {{name: relay, principals: [{ME}], capabilities: [gate.decide_as],"
        " decision: allow}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    before = _gate(world, run_id)
    with pytest.raises(airun_nb.ApprovalError, match="four-eyes"):
        airun_nb.approve(run_id, "review", by="bob")  # the launcher, through a relay
    assert _gate(world, run_id) == before


def test_a_workflow_cannot_name_its_principal(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_USER", "agent-7")
    with pytest.raises(airun_nb.SpecError, match="unknown key 'principal'"):
        Workflow.from_yaml("name: me\nprincipal: admin\nsteps:\n  - id: a\n    python: x = 1\n")
