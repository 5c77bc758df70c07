"""The ``airun`` command group: one-line errors, and commands of other modules loaded on use.

Commands defined in other modules are imported only when one of them runs (or ``--help``
lists them), so that ``airun runs`` does not import the engine.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from airun_nb.errors import AirunError

LAZY_COMMANDS = {
    "fork": "travel",
    "diff": "travel",
    "why": "travel",
    "validate": "migrate",
    "convert": "migrate",
    "exec": "migrate",
    "mcp": "agents",
}


class Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in LAZY_COMMANDS:
            module = importlib.import_module(f".{LAZY_COMMANDS[cmd_name]}", __package__)
            found = next((c for c in module.COMMANDS if c.name == cmd_name), None)
        if found is None:  # the old runtime's verbs: one line naming the new command
            from airun_nb.cli import oldverbs

            if cmd_name in oldverbs.MOVED:
                found = oldverbs.command(cmd_name)
        return found

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AirunError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)
