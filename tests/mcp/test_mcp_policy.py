"""Through MCP an agent gets exactly what the policy for its principal allows, and no more."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from airun_nb.store.database import Store
from support.agent import agent_policy, agent_session, call, doc_block, refusal

# Each capability the agent policy of docs/security.md denies to agents, as a step that would
# run after a first step writing a marker file (so a partial run would leave the file behind).
DENIED = {
    "python.exec": "python: \"open('ran.txt', 'w').write('x')\"",
    "shell.run": "capability: shell.run\n    with: {command: touch ran.txt}",
}


def _workflow(step: str) -> str:
    return (
        "name: sneaky\nsteps:\n"
        "  - id: first\n    capability: fs.write\n    with: {path: marker.txt, content: m}\n"
        f"  - id: then\n    needs: [first]\n    {step}\n"
    )


@pytest.fixture
def workspace(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("AIRUN_CONFIG", "AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "policy.yaml").write_text(agent_policy())
    monkeypatch.setenv("AIRUN_POLICY", str(tmp_path / "policy.yaml"))
    return tmp_path


@pytest.mark.parametrize("capability", sorted(DENIED))
def test_a_denied_capability_is_refused_in_one_line_and_nothing_runs(
    workspace: Path, db: Path, capability: str
) -> None:
    """Under the agent policy of docs/security.md, a workflow using a capability denied to
    agents is refused whole: one line with what, why and the rule; no run is stored, not even
    its allowed first step ran; the refusal is on the audit record."""

    async def scenario() -> tuple[str, dict]:
        async with agent_session(workspace, "--as", "llm-bot", "--db", str(db)) as session:
            caps = await call(session, "list_capabilities")
            line = await refusal(session, "run_workflow", yaml=_workflow(DENIED[capability]))
            return line, caps

    line, caps = anyio.run(scenario)
    assert line.startswith("run_workflow refused: step 'then' uses " + capability)
    assert "denies to llm-bot" in line and line.endswith("(rule 'agents-no-code')")
    assert "\n" not in line
    assert not (workspace / "marker.txt").exists() and not (workspace / "ran.txt").exists()
    store = Store.open(db)
    assert store.query("SELECT count(*) FROM runs")[0][0] == 0
    rows = store.query_dicts("SELECT principal, decision, rule, arguments FROM audit")
    assert [(r["principal"], r["decision"], r["rule"]) for r in rows] == [
        ("llm-bot", "refused", "agents-no-code")
    ]
    assert json.loads(rows[0]["arguments"])["channel"] == "mcp"
    listed = {c["name"]: c for c in caps["capabilities"]}
    if capability in listed:
        assert listed[capability]["policy"]["decision"] == "deny"
    assert listed["fs.write"]["policy"]["decision"] == "allow"
    assert "path" in listed["fs.write"]["parameters"]


def test_undo_and_cancel_go_through_the_policy_and_touch_only_the_agents_runs(
    workspace: Path, db: Path
) -> None:
    """rollback_run is high risk: under the agent policy it needs a person, so it is refused
    naming the rule and the command a person runs; cancel_run is allowed on the agent's own
    waiting run (its gate closes); a run someone else launched is refused whole."""
    from airun_nb import Workflow

    gated = "name: g\nsteps:\n  - id: ok\n    approval: {message: Go?}\n"
    theirs = Workflow.from_yaml(gated).run(db=db, user="alice")
    assert theirs.status == "waiting"

    async def scenario() -> tuple[dict, list[str], dict]:
        async with agent_session(workspace, "--as", "llm-bot", "--db", str(db)) as session:
            mine = await call(session, "run_workflow", yaml=gated, wait_s=120)
            refused = [
                await refusal(session, "rollback_run", run_id=mine["run_id"]),
                await refusal(session, "cancel_run", run_id=theirs.run_id),
            ]
            cancelled = await call(session, "cancel_run", run_id=mine["run_id"], comment="no")
            return mine, refused, cancelled

    mine, (undo, other), cancelled = anyio.run(scenario)
    assert mine["status"] == "waiting"
    assert undo == (
        f"rollback_run refused: run.rollback (risk high) needs a person for llm-bot; ask one to "
        f"run `airun rollback {mine['run_id']}` (rule 'agents-ask-for-risky')"
    )
    assert other.startswith(f"cancel_run refused: run {theirs.run_id} was launched by alice")
    assert other.endswith("(rule 'own runs only')")
    assert cancelled["status"] == "cancelled" and cancelled["gates_closed"] == ["ok"]
    store = Store.open(db)
    statuses = dict(store.query("SELECT run_id, status FROM runs"))
    assert statuses == {theirs.run_id: "waiting", mine["run_id"]: "cancelled"}
    gate = store.query_dicts(
        "SELECT actor, channel FROM approvals WHERE run_id = ?", [mine["run_id"]]
    )
    assert gate == [{"actor": "llm-bot", "channel": "mcp"}]


def test_runs_per_minute_and_the_principal_come_from_the_settings(
    workspace: Path, db: Path
) -> None:
    """With `mcp: {principal: ..., runs_per_minute: 1}` in the settings file the server acts
    as that principal, and a second run in the same minute is refused naming the limit."""
    (workspace / "airun.yaml").write_text("mcp: {principal: llm-bot, runs_per_minute: 1}\n")
    plain = "name: p\nsteps:\n  - id: a\n    capability: fs.write\n    with: {path: a.txt, content: x}\n"

    async def scenario() -> tuple[dict, str]:
        async with agent_session(workspace, "--db", str(db)) as session:
            first = await call(session, "run_workflow", yaml=plain, wait_s=120)
            second = await refusal(session, "run_workflow", yaml=plain)
            return first, second

    first, second = anyio.run(scenario)
    assert first["status"] == "completed" and first["launched_by"] == "llm-bot"
    assert second.startswith("run_workflow refused: 1 runs were started in the last minute")
    assert second.endswith("(rule 'mcp.runs_per_minute')")
    assert Store.open(db).query("SELECT count(*) FROM runs")[0][0] == 1


def test_the_documented_settings_set_the_principal_and_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `mcp:` block of docs/agents.md is what the server reads: its principal and limits;
    a key it does not know is refused in one line naming it."""
    from airun_nb.mcp.limits import Limits
    from airun_nb.settings import file as settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIRUN_CONFIG", raising=False)
    (tmp_path / "airun.yaml").write_text(doc_block("yaml", "runs_per_minute"))
    assert settings.agent_server()["principal"] == "llm-bot"
    limits = Limits.from_settings()
    assert (limits.runs_per_minute, limits.max_rows, limits.query_seconds) == (10, 200, 5.0)
    (tmp_path / "airun.yaml").write_text("mcp: {principal: llm-bot, runs_per_hour: 3}\n")
    with pytest.raises(settings.SettingsError, match=r"mcp.runs_per_hour in the settings"):
        settings.agent_server()


def test_the_server_does_not_start_without_a_principal(tmp_path: Path, db: Path) -> None:
    """`airun mcp` with no --as and no principal in the settings says so in one line and
    exits 1 (it never falls back to the login of whoever started it)."""
    import os
    import subprocess

    from support import AIRUN
    from support.agent import REPO

    env = {k: v for k, v in os.environ.items() if k != "AIRUN_CONFIG"}
    done = subprocess.run(
        [*AIRUN, "mcp", "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "error: airun mcp needs the principal the agent acts as: --as NAME, or "
        "'mcp: {principal: NAME}' in the settings\n"
    )
    assert not db.exists()


def test_a_step_needing_approval_waits_and_says_who_may_decide(workspace: Path, db: Path) -> None:
    """Under the agent policy a high-risk step opens the policy's gate: run_workflow answers
    `waiting` at once, and the gate names its approver from the rule, excludes the agent that
    launched the run, and gives the command a person uses. Nothing was sent anywhere."""
    egress = (
        "name: ping\nsteps:\n  - id: call_home\n    capability: http.request\n"
        "    with: {url: 'http://127.0.0.1:9/hook', method: POST}\n"
    )

    async def scenario() -> tuple[dict, dict]:
        async with agent_session(workspace, "--as", "llm-bot", "--db", str(db)) as session:
            started = await call(session, "run_workflow", yaml=egress, wait_s=120)
            listed = await call(session, "list_approvals")
            return started, listed

    started, listed = anyio.run(scenario)
    assert started["status"] == "waiting", started
    assert len(started["open_gates"]) == 1, started
    gate = started["open_gates"][0]
    assert gate["gate_id"] == "call_home.approval"
    assert "agent-egress" in gate["message"] or "agents-ask-for-risky" in gate["message"]
    assert gate["who_may_decide"] == ["alice", "(not llm-bot, who launched the run)"], gate
    assert gate["a_person_decides_with"]["approve"].startswith(
        f"airun approve {started['run_id']} call_home.approval"
    )
    assert [g["gate_id"] for g in listed["open_gates"]] == ["call_home.approval"]
    steps = Store.open(db).query("SELECT step_id, status FROM steps")
    assert steps == [("call_home", "waiting")]
