"""``airun fork``, ``airun diff`` and ``airun why``: time travel from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from airun_nb.cli.storeoption import STORE

# The history and the engine are imported by the command that runs, not by `airun --help`
# (which lists these commands), so that help and the light commands start fast.

db_option = click.option(
    "--db",
    type=STORE,
    envvar="AIRUN_DB",
    help="Store file or postgresql:// URL (default: $AIRUN_DB or ./airun.duckdb).",
)


@click.command("fork")
@click.argument("run_id")
@click.option("--from", "from_step", required=True, help="The step to run again from.")
@click.option("--param", "-p", multiple=True, metavar="KEY=VALUE", help="A new param value.")
@db_option
def fork_cmd(run_id: str, from_step: str, param: tuple[str, ...], db: Path | None) -> None:
    """Start a new run from a step of RUN_ID: earlier steps are reused, the rest runs.

    Steps that call notebook functions need the notebook (`%%workflow --fork RUN --from STEP`).
    """
    from airun_nb.cli.migrate import param_value

    params: dict[str, Any] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"takes KEY=VALUE, got {item!r}", param_hint="--param")
        params[key.strip()] = param_value(key.strip(), value, "--param")
    from airun_nb.workflow import fork

    result = fork(run_id, from_step, params=params, db=db, raise_on_failure=False)
    click.echo(repr(result))
    if result.status != "completed":
        sys.exit(1)


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--step", help="Show the rows of this step's DataFrame output that differ.")
@db_option
def diff_cmd(run_a: str, run_b: str, step: str | None, db: Path | None) -> None:
    """Compare two runs step by step (or the rows of one step's output)."""
    from airun_nb.history.diff import diff

    df = diff(run_a, run_b, step=step, db=db)
    click.echo("(no differing rows)" if df.empty else df.fillna("").to_string(index=False))


@click.command("why")
@click.argument("run_id")
@db_option
def why_cmd(run_id: str, db: Path | None) -> None:
    """Why each step of a run replayed or ran, and what changed."""
    from airun_nb.history.why import why

    df = why(run_id, db)
    df["changed"] = df["changed"].map("; ".join)
    click.echo(df.fillna("").to_string(index=False))


COMMANDS = (fork_cmd, diff_cmd, why_cmd)
