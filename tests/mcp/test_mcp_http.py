"""`airun mcp --transport http`: loopback only, and only with a bearer token for its principal."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from support import AIRUN
from support.agent import REPO


@pytest.fixture
def http_server(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`airun mcp --transport http --port 0` as llm-bot; yields the URL it says it serves."""
    for name in ("AIRUN_CONFIG", "AIRUN_POLICY"):
        monkeypatch.delenv(name, raising=False)
    proc = subprocess.Popen(
        [*AIRUN, "mcp", "--as", "llm-bot", "--db", str(db), "--transport", "http", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # said once the socket listens
        assert line.startswith("airun mcp on http://127.0.0.1:"), line
        yield line.split()[3]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _token(db: Path, user: str) -> str:
    done = subprocess.run(
        [*AIRUN, "token", "create", user, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def _tools_over_http(url: str, token: str) -> tuple[set[str], dict]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        listed = await session.list_tools()
        result = await session.call_tool("list_runs", {})
        assert not result.is_error, result.content
        return {t.name for t in listed.tools}, result.structured_content or {}


def test_http_serves_a_token_of_its_principal_and_refuses_the_rest(
    http_server: str, db: Path
) -> None:
    """On 127.0.0.1 the server answers an MCP client whose bearer token is one of llm-bot's
    (`airun token create llm-bot`); without a token, with a made-up one, or with a person's
    token it answers 401 with one line and never reaches a tool."""
    assert http_server.startswith("http://127.0.0.1:") and http_server.endswith("/mcp")
    bot = _token(db, "llm-bot")
    names, runs = anyio.run(_tools_over_http, http_server, bot)
    assert "run_workflow" in names and "query_history" in names
    assert runs == {"runs": []}

    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    alice = _token(db, "alice")
    for headers, said in (
        ({}, "a bearer token is required"),
        ({"Authorization": "Bearer airun_00000000_" + "x" * 40}, "not valid"),
        ({"Authorization": f"Bearer {alice}"}, "stands for alice, not llm-bot"),
    ):
        answer = httpx.post(
            http_server,
            json=hello,
            headers={**headers, "Accept": "application/json, text/event-stream"},
            timeout=60,
        )
        assert answer.status_code == 401
        assert said in answer.json()["error"]
        assert answer.headers["www-authenticate"].startswith("Bearer")
