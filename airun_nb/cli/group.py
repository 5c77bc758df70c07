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
    "push": "transfer",
    "pull": "transfer",
    "submit": "queueing",
    "worker": "queueing",
}


class Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``airun --help``, without importing the lazy commands' modules
        (their help is read from their source)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            cmd = super().get_command(ctx, name)
            if cmd is None and name in LAZY_COMMANDS:
                rows.append((name, _lazy_help(LAZY_COMMANDS[name], name, limit)))
            elif cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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


def _lazy_help(module: str, name: str, limit: int) -> str:
    """The short help of command ``name`` in ``airun_nb.cli.<module>``, read from the docstring
    of the function its ``@click.command("name")`` decorates (the module is not imported)."""
    import ast
    from pathlib import Path

    from click import utils

    short_help = getattr(utils, "make_default_short_help")  # noqa: B009 - untyped in click

    try:
        tree = ast.parse(Path(__file__).with_name(f"{module}.py").read_text())
    except (OSError, SyntaxError):
        return ""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            if (
                isinstance(deco, ast.Call)
                and deco.args
                and isinstance(deco.args[0], ast.Constant)
                and deco.args[0].value == name
                and getattr(deco.func, "attr", getattr(deco.func, "id", "")) == "command"
            ):
                return str(short_help(ast.get_docstring(node) or "", limit))
    return ""
