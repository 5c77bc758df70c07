"""An agent drives workflows through `airun mcp` over stdio, and a person approves with the CLI."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import anyio
import pytest

import airun_nb
from airun_nb.store.database import Store
from airun_nb.store.opening import open_store
from support import AIRUN
from support.agent import agent_policy, agent_session, call, doc_block, refusal

TOOLS = {
    "list_capabilities",
    "validate_workflow",
    "run_workflow",
    "get_run",
    "wait_for_run",
    "list_runs",
    "list_approvals",
    "rollback_run",
    "cancel_run",
    "query_history",
}
# The example of docs/agents.md: the client configuration and the workflow an agent runs.
PUBLISH = doc_block("yaml", "name: publish")
CLIENT = json.loads(doc_block("json", "mcpServers"))["mcpServers"]["airun"]
AUDIT_QUERY = doc_block("python", "FROM audit")
BAD = """
name: broken
steps:
  - id: a
    capability: fs.write
    with: {path: a.txt, content: x}
  - id: b
    needs: [nowhere]
    capability: fs.write
    with: {path: b.txt, content: y}
"""


@pytest.fixture
def workspace(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's working folder, with the agent policy of docs/security.md beside it."""
    (tmp_path / "policy.yaml").write_text(agent_policy())
    for name in ("AIRUN_CONFIG", "AIRUN_POLICY", "AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _approve(db: Path | str, run_id: str, gate: str, cwd: Path) -> str:
    done = subprocess.run(
        [*AIRUN, "approve", run_id, gate, "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "AIRUN_USER": "alice"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_agent_validates_runs_waits_and_a_person_approves_with_the_cli(
    workspace: Path, store_db: Path | str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole door: tools listed with schemas; a bad workflow's problems come back and
    nothing is stored; a run stops at its gate and the tool returns at once; `airun approve`
    by a person lets the server continue the run it launched; wait_for_run sees it completed;
    and the audit names the agent and the channel mcp. On both backends: the DuckDB file and
    the PostgreSQL team store (the server's wait woken by NOTIFY)."""
    db = store_db
    monkeypatch.setenv("AIRUN_DB", str(db))

    def nothing_stored() -> bool:
        if backend == "duckdb":
            return not Path(db).exists()
        return bool(airun_nb.runs(db=db).empty)

    env = {"AIRUN_POLICY": str(workspace / "policy.yaml"), "AIRUN_USER": "someone-else"}
    assert CLIENT["command"] == "airun" and CLIENT["args"][0] == "mcp"
    args = list(CLIENT["args"][1:])
    args[args.index("--db") + 1] = str(db)  # the documented command, on this test's store

    async def scenario() -> tuple[str, dict, dict]:
        async with agent_session(workspace, *args, env=env) as session:
            listed = await session.list_tools()
            assert {t.name for t in listed.tools} == TOOLS
            for tool in listed.tools:
                assert tool.description and "\n" not in tool.description
                assert tool.input_schema["type"] == "object"

            checked = await call(session, "validate_workflow", yaml=BAD)
            assert checked["ok"] is False
            assert any("nowhere" in p for p in checked["errors"]), checked
            assert nothing_stored()  # validating stores nothing

            started = await call(session, "run_workflow", yaml=PUBLISH, wait_s=120)
            assert started["status"] == "waiting"
            gate = started["open_gates"][0]
            assert gate["gate_id"] == "review"
            assert gate["who_may_decide"] == ["anyone"]  # no approvers, no four-eyes
            assert "airun approve" in gate["a_person_decides_with"]["approve"]
            assert (workspace / "draft.txt").read_text() == "hello"
            assert not (workspace / "published.txt").exists()

            shown = await call(session, "get_run", run_id=started["run_id"])
            assert [s["status"] for s in shown["steps"]] == ["completed", "waiting", "pending"]
            approvals = await call(session, "list_approvals")
            assert [g["gate_id"] for g in approvals["open_gates"]] == ["review"]

            said = _approve(db, started["run_id"], "review", workspace)
            assert "approved gate review" in said
            finished = await call(session, "wait_for_run", run_id=started["run_id"], timeout_s=240)
            return started["run_id"], finished, shown

    run_id, finished, shown = anyio.run(scenario)
    assert finished["status"] == "completed", finished
    assert finished["timed_out"] is False
    assert (workspace / "published.txt").read_text() == "hello"
    assert shown["launched_by"] == "llm-bot"

    rows = open_store(db).query_dicts(
        "SELECT kind, principal, capability, decision, arguments FROM audit WHERE run_id = ? "
        "ORDER BY ts",
        [run_id],
    )
    mcp_rows = [r for r in rows if r["kind"] == "mcp"]
    assert {r["capability"] for r in mcp_rows} >= {"mcp.run_workflow", "mcp.continue"}
    for r in mcp_rows:
        assert r["principal"] == "llm-bot"
        assert json.loads(r["arguments"])["channel"] == "mcp"
    executed = [r for r in rows if r["kind"] == "capability"]
    assert {r["capability"] for r in executed} == {"fs.write", "fs.copy"}
    assert {r["principal"] for r in executed} == {"llm-bot"}
    decided = [r for r in rows if r["kind"] == "human"]
    assert decided and decided[0]["principal"] == "alice"

    # The documented audit query (AIRUN_DB names this store) shows the agent's actions.
    tree = ast.parse(AUDIT_QUERY)
    last = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]
    scope: dict = {}
    exec(compile(tree, "docs/agents.md", "exec"), scope)
    frame = eval(compile(last, "docs/agents.md", "eval"), scope)
    assert {"mcp.run_workflow", "mcp.continue"} <= set(frame["capability"])
    assert set(frame["decision"]) >= {"started", "continued"}


def test_arguments_are_checked_against_the_schema_in_one_line(workspace: Path, db: Path) -> None:
    """A wrong type or an argument the tool does not take (a principal, say) is refused in
    one line before anything runs: nothing the agent sends changes who it acts as."""

    async def scenario() -> list[str]:
        async with agent_session(workspace, "--as", "llm-bot", "--db", str(db)) as session:
            return [
                await refusal(session, "run_workflow", yaml=PUBLISH, principal="alice", wait_s=1),
                await refusal(session, "wait_for_run", run_id="r-1", timeout_s="soon"),
                await refusal(session, "wait_for_run", run_id="r-1", timeout_s=100000),
                await refusal(session, "get_run", run_id="r-nope"),
            ]

    unknown, wrong_type, too_long, missing = anyio.run(scenario)
    assert unknown.startswith("run_workflow: bad arguments: unknown argument 'principal'")
    assert wrong_type == "wait_for_run: bad arguments: timeout_s must be number"
    assert too_long.startswith("wait_for_run: bad arguments: timeout_s must be smaller than")
    assert missing.startswith("there is no store at")
    for line in (unknown, wrong_type, too_long, missing):
        assert "\n" not in line and "Traceback" not in line
    assert not db.exists()  # nothing ran


def test_a_restarted_server_continues_its_run_after_a_rejection(workspace: Path, db: Path) -> None:
    """The server that launched a run may be gone when the person decides: a new server of the
    same principal picks the waiting run up and continues it. A rejection rolls the run back
    (the draft it wrote is undone), and wait_for_run reports that."""

    async def launch() -> str:
        async with agent_session(workspace, "--as", "llm-bot", "--db", str(db)) as session:
            started = await call(session, "run_workflow", yaml=PUBLISH, wait_s=120)
            assert started["status"] == "waiting"
            return str(started["run_id"])

    async def later(run_id: str) -> dict:
        async with agent_session(workspace, "--as", "llm-bot", "--db", str(db)) as session:
            return await call(session, "wait_for_run", run_id=run_id, timeout_s=240)

    run_id = anyio.run(launch)
    assert (workspace / "draft.txt").exists()
    done = subprocess.run(
        [*AIRUN, "reject", run_id, "review", "--db", str(db), "-m", "not today"],
        capture_output=True,
        text=True,
        cwd=workspace,
        env={**os.environ, "AIRUN_USER": "alice"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    finished = anyio.run(later, run_id)
    assert finished["status"] == "rolled_back", finished
    assert not (workspace / "draft.txt").exists()
    assert not (workspace / "published.txt").exists()


def test_what_an_agent_reads_is_redacted_bounded_and_only_the_history(
    workspace: Path, db: Path
) -> None:
    """get_run shows a step's output redacted and cut to its preview size (a step printing does
    not disturb the protocol); the resources list the runs; query_history answers a SELECT over
    the history tables with bounded rows and refuses other tables, files and writes in one line
    each, leaving the store as it was."""
    from airun_nb import Workflow

    noisy = (
        "name: noisy\nsteps:\n  - id: out\n    python: |\n      print('a step printing')\n"
        "      result = {'password': 'hunter2', 'url': 'https://bob:pw1234@db.example', "
        "'big': 'x' * 5000}\n"
    )
    for i in range(3):
        Workflow.from_yaml(f"name: w{i}\nsteps:\n  - id: a\n    python: 'result = {i}'\n").run(
            db=db
        )
    (workspace / "airun.yaml").write_text("mcp: {max_rows: 2}\n")

    async def scenario() -> tuple[dict, list[str]]:
        async with agent_session(workspace, "--as", "llm-bot", "--db", str(db)) as session:
            ran = await call(session, "run_workflow", yaml=noisy, wait_s=120)
            shown = await call(session, "get_run", run_id=ran["run_id"])
            preview = shown["steps"][0]["output"]
            assert "hunter2" not in preview and "pw1234" not in preview
            assert "more characters" in preview and len(preview) < 1200
            resources = await session.list_resources()
            assert {str(r.uri) for r in resources.resources} == {
                "airun://runs",
                "airun://capabilities",
            }
            recent = await session.read_resource("airun://runs")
            assert ran["run_id"] in recent.contents[0].text
            answer = await call(
                session, "query_history", sql="SELECT workflow, status FROM runs ORDER BY workflow"
            )
            refused = [
                await refusal(session, "query_history", sql=sql)
                for sql in (
                    "SELECT * FROM tokens",
                    "SELECT * FROM read_text('/etc/passwd')",
                    "DELETE FROM runs",
                    "SELECT 1; SELECT 2",
                )
            ]
            return answer, refused

    answer, refused = anyio.run(scenario)
    assert answer["columns"] == ["workflow", "status"]
    assert answer["rows"] == [["noisy", "completed"], ["w0", "completed"]]
    assert "first 2 rows" in answer["truncated"]
    assert "tokens is not a history table" in refused[0]
    assert "table function is not readable" in refused[1]
    assert "only SELECT" in refused[2]
    assert "expected one SELECT" in refused[3]
    assert all("\n" not in r for r in refused)
    assert Store.open(db).query("SELECT count(*) FROM runs")[0][0] == 4
