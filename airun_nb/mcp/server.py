"""The MCP server: the agent's tools and resources on the official ``mcp`` SDK, over stdio or HTTP.

Every tool has a JSON schema (from its typed parameters) and a one-line description. Arguments
are checked against that schema before a tool runs, so a bad one is a one-line schema error;
a refused or failed action is a tool error of one line; nothing returns a traceback. The HTTP
transport listens on 127.0.0.1 only and admits a request only with a bearer token (``airun token
create PRINCIPAL``) that stands for the server's principal.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from airun_nb.errors import AirunError
from airun_nb.mcp.continuation import Continuer
from airun_nb.mcp.limits import MAX_WAIT_SECONDS, Limits
from airun_nb.mcp.tools import SOURCE, Tools
from airun_nb.settings.environment import StoreURL

INSTRUCTIONS = """\
airun_nb runs workflows (YAML) step by step, checkpointed, under a policy. You act as one \
principal, fixed by the server's owner. Validate a workflow before running it. A run that \
reaches an approval gate waits for a person: you cannot decide gates; tell the person which \
gate waits (get_run shows who may decide and the command they use), then wait_for_run. Refused \
actions come back as one line naming the rule."""
_PRINCIPAL = re.compile(r"^[A-Za-z0-9._@:+\-]{1,64}$")

Yaml = Annotated[str, Field(description="The workflow as YAML text (name, params, steps).")]
RunId = Annotated[str, Field(description="A run id, as run_workflow or list_runs gave it.")]
Wait = Annotated[
    float,
    Field(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait at most (0 to 300)."),
]


def check_principal(principal: str) -> str:
    if not _PRINCIPAL.match(principal):
        raise AirunError(
            f"principal {principal!r} is not valid (letters, digits and . _ @ : + -, up to 64)"
        )
    return principal


def _failure(text: str) -> Any:
    """A tool error of one line (what the agent reads)."""
    line = " ".join(text.split())
    return CallToolResult(content=[TextContent(type="text", text=line)], is_error=True)


async def _call(name: str, fn: Callable[[], Any]) -> Any:
    """Run a blocking operation in a worker thread; AirunError and anything unexpected become a
    one-line tool error."""
    try:
        return await anyio.to_thread.run_sync(fn)
    except AirunError as exc:
        return _failure(exc.message)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"airun mcp: {name} failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return _failure(f"{name} failed: {type(exc).__name__}: {first}")


def build(tools: Tools) -> MCPServer:
    """The MCP server of ``tools``: its ten tools and two resources."""
    check = _ArgumentCheck()
    app: MCPServer = MCPServer(
        "airun_nb", instructions=INSTRUCTIONS, log_level="WARNING", middleware=[check]
    )

    @app.tool(
        description="List capabilities: name, risk, parameters, undo, and the policy's "
        "decision for you."
    )
    async def list_capabilities() -> dict[str, Any]:
        return await _call("list_capabilities", tools.list_capabilities)

    @app.tool(
        description="Check a workflow as `airun validate` does; returns its problems; "
        "runs and stores nothing."
    )
    async def validate_workflow(yaml: Yaml) -> dict[str, Any]:
        return await _call("validate_workflow", lambda: tools.validate_workflow(yaml))

    @app.tool(
        description="Start a run of a workflow; returns its id and status once it "
        "finishes, waits at a gate, or wait_s passes."
    )
    async def run_workflow(
        yaml: Yaml,
        params: Annotated[
            dict[str, Any] | None, Field(description="Values for the workflow's params.")
        ] = None,
        wait_s: Wait = 30.0,
    ) -> dict[str, Any]:
        return await _call("run_workflow", lambda: tools.run_workflow(yaml, params, wait_s))

    @app.tool(
        description="A run: status, steps, bounded and redacted outputs, open gates and "
        "who may decide them."
    )
    async def get_run(run_id: RunId) -> dict[str, Any]:
        return await _call("get_run", lambda: tools.get_run(run_id))

    @app.tool(
        description="Wait (at most timeout_s) for a run to leave running/waiting; "
        "returns its state."
    )
    async def wait_for_run(run_id: RunId, timeout_s: Wait = 60.0) -> dict[str, Any]:
        return await _call("wait_for_run", lambda: tools.wait_for_run(run_id, timeout_s))

    @app.tool(description="Recent runs, newest first, optionally of one workflow or status.")
    async def list_runs(
        workflow: Annotated[str | None, Field(description="Only runs of this workflow.")] = None,
        status: Annotated[
            str | None, Field(description="Only runs with this status (waiting, failed...).")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="How many runs.")] = 20,
    ) -> dict[str, Any]:
        return await _call("list_runs", lambda: tools.list_runs(workflow, status, limit))

    @app.tool(
        description="Open approval gates: what each asks, who may decide it, how a person does."
    )
    async def list_approvals() -> dict[str, Any]:
        return await _call("list_approvals", tools.list_approvals)

    @app.tool(
        description="Undo one of your runs through its compensations, if the policy lets you."
    )
    async def rollback_run(run_id: RunId, wait_s: Wait = 30.0) -> dict[str, Any]:
        return await _call("rollback_run", lambda: tools.rollback_run(run_id, wait_s))

    @app.tool(
        description="Cancel one of your waiting, failed or interrupted runs, if the "
        "policy lets you."
    )
    async def cancel_run(
        run_id: RunId,
        comment: Annotated[
            str | None, Field(max_length=4000, description="Kept with the cancel.")
        ] = None,
    ) -> dict[str, Any]:
        return await _call("cancel_run", lambda: tools.cancel_run(run_id, comment))

    @app.tool(
        description="One read-only SELECT over the history tables (runs, steps, "
        "attempts, events, approvals, audit, specs); rows and time bounded."
    )
    async def query_history(
        sql: Annotated[str, Field(max_length=20_000, description="One SELECT statement.")],
    ) -> dict[str, Any]:
        return await _call("query_history", lambda: tools.query_history(sql))

    @app.resource(
        "airun://runs",
        name="recent runs",
        description="The 20 newest runs of the store (JSON).",
        mime_type="application/json",
    )
    async def recent_runs() -> str:
        doc = await anyio.to_thread.run_sync(lambda: tools.list_runs(None, None, 20))
        return json.dumps(doc, default=str)

    @app.resource(
        "airun://capabilities",
        name="capabilities",
        description="Capabilities, their risk and undo, and the policy's decision (JSON).",
        mime_type="application/json",
    )
    async def capability_list() -> str:
        doc = await anyio.to_thread.run_sync(tools.list_capabilities)
        return json.dumps(doc, default=str)

    check.app = app
    return app


class _ArgumentCheck:
    """Check a tool call's arguments against the tool's published schema before it runs: a
    bad or unknown argument is a one-line error naming it."""

    def __init__(self) -> None:
        self.app: MCPServer | None = None
        self._schemas: dict[str, dict[str, Any]] | None = None

    async def __call__(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        params = getattr(ctx, "params", None)
        if getattr(ctx, "method", None) != "tools/call" or not isinstance(params, dict):
            return await call_next(ctx)
        name, args = params.get("name"), params.get("arguments") or {}
        schema = (await self._schema_of()).get(str(name))
        if schema is None or not isinstance(args, dict):
            return await call_next(ctx)
        problem = _problem(schema, args)
        if problem:
            return _failure(f"{name}: bad arguments: {problem}")
        return await call_next(ctx)

    async def _schema_of(self) -> dict[str, dict[str, Any]]:
        if self._schemas is None:
            assert self.app is not None
            self._schemas = {t.name: t.input_schema for t in await self.app.list_tools()}
        return self._schemas


def _problem(schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    """The first way ``args`` break ``schema``, in one line, or None."""
    import fastjsonschema

    known = set(schema.get("properties") or {})
    unknown = sorted(set(args) - known)
    if unknown:
        return f"unknown argument '{unknown[0]}' (arguments: {', '.join(sorted(known)) or 'none'})"
    try:
        _validator(json.dumps(schema, sort_keys=True))(args)
    except fastjsonschema.JsonSchemaValueException as exc:
        where = str(exc.name or "data").removeprefix("data").lstrip(".") or "arguments"
        message = " ".join(str(exc.message).split()).replace(str(exc.name), where, 1)
        return message if len(message) <= 200 else message[:200] + "..."
    return None


@functools.lru_cache(maxsize=32)
def _validator(schema: str) -> Callable[[Any], Any]:
    import fastjsonschema

    validate: Callable[[Any], Any] = fastjsonschema.compile(json.loads(schema))
    return validate


# -- transports --------------------------------------------------------------------------------
def serve(db: Path | StoreURL, principal: str, transport: str, port: int, limits: Limits) -> None:
    """Run the server until its client goes away (stdio) or it is stopped (HTTP)."""
    tools = Tools(db, check_principal(principal), limits)
    continuer = Continuer(db, principal, SOURCE, tools.continue_run)
    tools.on_waiting = continuer.watch
    continuer.start()
    app = build(tools)
    try:
        if transport == "stdio":
            app.run("stdio")
        else:
            _serve_http(app, tools, port)
    finally:
        continuer.stop()


def _serve_http(app: MCPServer, tools: Tools, port: int) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise AirunError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(64)
    bound = sock.getsockname()[1]
    print(
        f"airun mcp on http://127.0.0.1:{bound}/mcp as {tools.principal} "
        f"(store {tools.db}); requests need a bearer token for {tools.principal}",
        file=sys.stderr,
        flush=True,
    )
    guarded = BearerGuard(app.streamable_http_app(host="127.0.0.1"), tools)
    config = uvicorn.Config(guarded, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


class BearerGuard:
    """Admit an HTTP request only with ``Authorization: Bearer TOKEN`` for the principal."""

    def __init__(self, app: Any, tools: Tools) -> None:
        self.app = app
        self.tools = tools

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        header = headers.get(b"authorization", b"").decode("latin-1").strip()
        refusal = await anyio.to_thread.run_sync(self._refusal, header)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": refusal}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="airun mcp"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, header: str) -> str | None:
        from airun_nb.service import tokens

        me = self.tools.principal
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            return f"a bearer token is required (make one with `airun token create {me}`)"
        try:
            who = tokens.authenticate(self.tools.reader, header[7:].strip())
        except AirunError:  # no store yet, so no token either
            who = None
        if who is None:
            return "the bearer token is not valid (unknown or revoked)"
        if who.user != me:
            return f"the token stands for {who.user}, not {me}, the principal of this server"
        return None
