"""``airun mcp``: an MCP server through which an AI agent drives workflows under the policy.

The server acts as one principal, set by its owner (``--as`` or ``mcp: {principal: ...}`` in the
settings); every action runs under the policy for that principal and is on the audit record with
channel ``mcp``. No tool decides a gate: an agent asks, a person decides, and the server
continues the runs it launched once they have. :mod:`~airun_nb.mcp.tools` holds the governed
operations, :mod:`~airun_nb.mcp.server` puts them on the official ``mcp`` SDK (stdio or HTTP),
:mod:`~airun_nb.mcp.continuation` continues decided runs, :mod:`~airun_nb.mcp.limits` bounds
what an agent can ask for.
"""
