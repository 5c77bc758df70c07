"""A real MCP client session with `airun mcp` started as a subprocess (the SDK's stdio client)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client

from support import AIRUN

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def agent_policy() -> str:
    """The policy for agents that docs/security.md gives (its YAML block with `agents-no-code`)."""
    return doc_block("yaml", "agents-no-code", "security.md")


def doc_block(lang: str, containing: str, doc: str = "agents.md") -> str:
    """The ```LANG block of docs/DOC that contains ``containing``."""
    text = (DOCS / doc).read_text()
    for block in re.findall(rf"```{lang}\n(.*?)```", text, re.S):
        if containing in block:
            return str(block)
    raise AssertionError(f"docs/{doc} has no {lang} block with {containing!r}")


@contextlib.asynccontextmanager
async def agent_session(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    """`airun mcp ARGS` in ``cwd``, importing this tree, with an initialized client session."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    params = StdioServerParameters(
        command=AIRUN[0], args=[*AIRUN[1:], "mcp", *args], env=full_env, cwd=str(cwd)
    )
    with open(cwd / "mcp-server.log", "a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's answer as JSON; fails the test when the tool answers with an error."""
    result = await session.call_tool(tool, arguments)
    text = result.content[0].text if result.content else ""
    assert not result.is_error, f"{tool} failed: {text}"
    doc: dict[str, Any] = json.loads(text)
    return doc


async def refusal(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The one-line error a tool answers with; fails the test when the tool succeeds."""
    result = await session.call_tool(tool, arguments)
    text = result.content[0].text if result.content else ""
    assert result.is_error, f"{tool} was not refused: {text}"
    return str(text)
