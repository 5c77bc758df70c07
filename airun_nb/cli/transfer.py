"""``airun push`` and ``airun pull``: copy a run, with everything it recorded, between stores."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from airun_nb.errors import AirunError, StoreError

if TYPE_CHECKING:
    from airun_nb.store.backend import Backend

# The store modules are imported by the command that runs, not by `airun --help`.


def _redact(text: str) -> str:
    from airun_nb.store.transfer import redact

    return redact(text)


def _open(where: str | Path | None, *, create: bool, flag: str) -> Backend:
    """The store at ``where`` (a file, or a URL the store's opener knows), through the one
    opener every command uses; a file that is not there is one line naming ``flag``."""
    from airun_nb.settings.environment import resolve_db
    from airun_nb.store.faults import short
    from airun_nb.store.opening import open_store

    text = str(where) if where is not None else None
    if not create and (text is None or "://" not in text):
        path = resolve_db(text)
        if isinstance(path, Path) and not path.exists():
            raise StoreError(f"there is no store at {short(path)} (check {flag})")
    try:
        return open_store(where, create=create)
    except StoreError as exc:
        if text is not None and "://" in text and str(Path(text)) in exc.message:
            # The opener took the URL for a file name: no backend here speaks it.
            scheme = text.split("://", 1)[0]
            raise StoreError(
                f"cannot open {text} ({flag}): this airun_nb opens store files, not "
                f"{scheme}:// URLs"
            ) from None
        raise


def _who() -> str:
    """Who copies the run: in the destination it is launched by them (the first launcher is
    kept as provenance)."""
    from airun_nb.governance import identity

    return identity.current()


def _parent(bundle: dict[str, Any], dest: Backend, where: str) -> str:
    """A fork reuses outputs of the run it was forked from: say when that run is not there."""
    parent = (bundle.get("runs") or [{}])[0].get("forked_from")
    if not parent or dest.run_row(str(parent)) is not None:
        return ""
    return (
        f" (forked from {parent}, which is not in {where}: copy it too for the outputs it reuses)"
    )


def _run(do: Callable[[], str]) -> None:
    """Run ``do()``; an error is one line, with every URL's password hidden."""
    try:
        line = do()
    except AirunError as exc:
        click.echo(f"error: {_redact(exc.message)}", err=True)
        sys.exit(1)
    click.echo(_redact(str(line)))


@click.command("push")
@click.argument("run_id")
@click.option("--to", "to", required=True, metavar="STORE", help="The store to copy it to.")
@click.option(
    "--db",
    envvar="AIRUN_DB",
    metavar="STORE",
    help="The store the run is in (default: $AIRUN_DB or ./airun.duckdb).",
)
@click.option("--replace", is_flag=True, help="Replace the copy already there (not a running one).")
def push_cmd(run_id: str, to: str, db: str | None, replace: bool) -> None:
    """Copy a run (steps, attempts, outputs, gates, events, audit) to another store."""

    def do() -> str:
        from airun_nb.store import transfer

        source = _open(db, create=False, flag="--db or AIRUN_DB")
        dest = _open(to, create=False, flag="--to")
        bundle = transfer.copy_run(source, dest, run_id, by=_who(), replace=replace)
        return f"pushed {run_id}: {transfer.summary(bundle)} to {to}" + _parent(bundle, dest, to)

    _run(do)


@click.command("pull")
@click.argument("run_id")
@click.option("--from", "from_", required=True, metavar="STORE", help="The store the run is in.")
@click.option(
    "--db",
    envvar="AIRUN_DB",
    metavar="STORE",
    help="The store to copy it to (default: $AIRUN_DB or ./airun.duckdb; made if missing).",
)
@click.option("--replace", is_flag=True, help="Replace the copy already here (not a running one).")
@click.option(
    "--trust-stored-code",
    is_flag=True,
    help="Sign the run's stored code and pickled outputs with your key (loading them runs them).",
)
def pull_cmd(
    run_id: str, from_: str, db: str | None, replace: bool, trust_stored_code: bool
) -> None:
    """Copy a run (steps, attempts, outputs, gates, events, audit) from another store here.

    Stored notebook code and pickled outputs arrive unsigned: they load only after a pull with
    --trust-stored-code, which signs them with your key.
    """

    def do() -> str:
        from airun_nb.store import transfer

        source = _open(from_, create=False, flag="--from")
        dest = _open(db, create=True, flag="--db")
        bundle = transfer.copy_run(
            source, dest, run_id, by=_who(), replace=replace, trust_stored_code=trust_stored_code
        )
        line = f"pulled {run_id}: {transfer.summary(bundle)} from {from_}"
        return line + _parent(bundle, dest, db or "this store")

    _run(do)


COMMANDS = (push_cmd, pull_cmd)
