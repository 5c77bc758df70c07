"""``airun mcp``: the door for AI agents (an MCP server), loaded only when it runs.

The ``mcp`` SDK is an optional extra (``pip install 'airun_nb[mcp]'``); ``airun --help`` lists
the command without importing it.
"""

from __future__ import annotations

import click

from airun_nb.errors import AirunError


@click.command("mcp")
@click.option(
    "--db",
    metavar="PATH|URL",
    help="Store file or postgresql:// URL (default: $AIRUN_DB or ./airun.duckdb).",
    envvar="AIRUN_DB",
)
@click.option(
    "--as",
    "principal",
    help="The principal the agent acts as (default: 'mcp: {principal: ...}' in the settings).",
)
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio for a client that starts the server; http listens on 127.0.0.1.",
)
@click.option("--port", default=8766, show_default=True, type=int, help="HTTP port (0: any).")
def mcp_cmd(db: str | None, principal: str | None, transport: str, port: int) -> None:
    """Serve an MCP server through which an AI agent drives workflows under the policy.

    The agent acts as one principal, set here or in the settings; every action is governed by
    the policy for it and audited with channel mcp. No tool decides a gate: a person does.
    """
    from airun_nb.settings import file as settings
    from airun_nb.settings.environment import resolve_db

    who = principal or settings.agent_server().get("principal")
    if not who:
        raise AirunError(
            "airun mcp needs the principal the agent acts as: --as NAME, or "
            "'mcp: {principal: NAME}' in the settings"
        )
    try:
        from airun_nb.mcp.server import serve
    except ImportError as exc:
        raise click.ClickException(f"{exc.name} is missing: pip install 'airun_nb[mcp]'") from None
    from airun_nb.mcp.limits import Limits

    serve(resolve_db(db or None), str(who), transport, port, Limits.from_settings())


COMMANDS = [mcp_cmd]
