"""``airun``: the command line front end to the same store and engine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click

from airun_nb.cli.group import Group
from airun_nb.errors import AirunError, StoreError
from airun_nb.history import runlist
from airun_nb.settings.environment import resolve_db
from airun_nb.store.database import Store
from airun_nb.store.faults import os_fault, short

if TYPE_CHECKING:
    import pandas as pd

_TABLES = ("runs", "steps", "attempts", "events", "approvals", "audit")


db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AIRUN_DB",
    help="Store file (default: $AIRUN_DB or ./airun.duckdb).",
)


def _existing_store(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Commands that read or act on runs never create a store: a typo is one line."""
    path = resolve_db(value)
    if not path.exists():
        raise StoreError(f"there is no store at {short(path)} (check --db or AIRUN_DB)")
    return value


def _output_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and not value.parent.exists():
        raise AirunError(
            f"cannot write {short(value)}: folder {short(value.parent)} does not exist"
        )
    return value


store_option = click.option(
    "--db",
    type=click.Path(path_type=Path),
    envvar="AIRUN_DB",
    callback=_existing_store,
    help="Store file (default: $AIRUN_DB or ./airun.duckdb); it must exist.",
)


@click.group(cls=Group)
@click.version_option(package_name="airun_nb")
def main() -> None:
    """Inspect and drive airun_nb workflow runs."""


def _print_frame(df: pd.DataFrame, columns: list[str]) -> None:
    import pandas as pd

    if df.empty:
        click.echo("(no runs)")
        return
    view = df[columns].copy()
    for col in view.columns:
        if pd.api.types.is_datetime64_any_dtype(view[col]):
            view[col] = view[col].dt.strftime("%Y-%m-%d %H:%M:%S")
        elif pd.api.types.is_timedelta64_dtype(view[col]):
            view[col] = (
                view[col].dt.total_seconds().map(lambda s: "" if pd.isna(s) else f"{s:.2f}s")
            )
    click.echo(view.fillna("").to_string(index=False))


@main.command()
@store_option
@click.option("--workflow", "-w", help="Only runs of this workflow.")
@click.option("--limit", "-n", default=20, show_default=True, help="Newest N runs.")
def runs(db: Path | None, workflow: str | None, limit: int) -> None:
    """List runs, newest last."""
    click.echo(runlist.text(db, workflow, limit))


@main.command()
@click.argument("run_id")
@store_option
def show(run_id: str, db: Path | None) -> None:
    """Show the step table of one run."""
    from airun_nb.history import frames as history

    click.echo(repr(history.stored_run(run_id, db)))


@main.command()
@click.argument("run_id")
@store_option
def resume(run_id: str, db: Path | None) -> None:
    """Resume an unfinished run outside its notebook.

    Only the steps that still have to run need their code: python, sql, call: 'module:function',
    and notebook functions the notebook stored (`%config Workflow.store_code = True`); otherwise
    re-open the notebook and resume there.
    """
    from airun_nb.engine.stepkinds import ResolveError
    from airun_nb.store import code as codestore
    from airun_nb.store.database import Store
    from airun_nb.workflow import Workflow

    wf = Workflow.from_run(run_id, db=db)
    store = Store.open(db)
    try:
        result = wf.run(
            db=db, resume=run_id, namespace=codestore.load(store, run_id), raise_on_failure=False
        )
    except ResolveError as exc:
        found = store.query("SELECT source FROM runs WHERE run_id = ?", [run_id])
        where = found[0][0] if found and found[0][0] else "the notebook that started it"
        raise ResolveError(
            f"{exc.message}. Re-open {where}, run its cells, then `%workflow resume {run_id}`; "
            "or let the notebook store its code (`%config Workflow.store_code = True`, then "
            "run the cell again) and resume here"
        ) from None
    click.echo(repr(result))
    if result.status != "completed":
        sys.exit(1)


@main.command("rollback")
@click.argument("run_id")
@store_option
def rollback_cmd(run_id: str, db: Path | None) -> None:
    """Undo a run through its compensations (or finish a rollback that stopped).

    Compensations that call notebook functions need the notebook: use `%workflow rollback RUN`
    there; importable ones (module:function, python, sql) run here.
    """
    from airun_nb.workflow import rollback

    result = rollback(run_id, db=db)
    click.echo(repr(result))


@main.command()
@store_option
@click.option("--all", "show_all", is_flag=True, help="Decided gates too, not only open ones.")
@click.option("--run", "run_id", help="Only gates of this run.")
def approvals(db: Path | None, show_all: bool, run_id: str | None) -> None:
    """List approval gates waiting for a decision (with --all, decided ones too)."""
    import pandas as pd

    from airun_nb.gates import form as forms
    from airun_nb.gates import gate
    from airun_nb.history import frames as history
    from airun_nb.history.readmodels import rejected_line

    df = history.approvals(run_id, db, pending=not show_all)
    if df.empty:
        click.echo("(no open gates)" if not show_all else "(no gates)")
        return
    store = Store.open(db)
    for _, row in df.iterrows():
        click.echo(
            f"{row['run_id']} {row['gate_id']} [{row['status']}] {row['workflow']}: "
            f"{row['message']}"
        )
        full = gate.gate_row(store, str(row["run_id"]), str(row["gate_id"])) or {}
        if row["status"] == "open":
            deadline = (
                row["deadline"].strftime("%Y-%m-%d %H:%M:%S UTC")
                if not pd.isna(row["deadline"])
                else "none"
            )
            click.echo(f"    may decide: {gate.who_may_decide(full)}; deadline: {deadline}")
            count = gate.progress(full)
            if count:
                click.echo(f"    {count}")
            spec = gate.form_spec(full)
            for f in forms.fields_of(spec).values():
                click.echo(f"    field {forms.describe_field(f)}")
            if spec.get("options"):
                click.echo(f"    options: {', '.join(spec['options'])}")
            cmds = gate.commands(str(row["run_id"]), str(row["gate_id"]), db=store.path, row=full)
            click.echo(f"    {cmds['approve']}   |   {cmds['reject']}")
        elif row["status"] == "rejected":
            click.echo(f"    {rejected_line(full)} (via {row['channel']})")
        elif row["status"] == "approved":
            out = gate.output_of(full)
            chosen = f", option {out['option']}" if out["option"] else ""
            click.echo(f"    Approved by {', '.join(out['by'])}{chosen} (via {row['channel']})")
        else:
            click.echo(f"    {row['status']} by {row['actor']} via {row['channel']}")


def _decide(
    decision: str,
    run_id: str,
    gate_id: str,
    by: str | None,
    comment: str | None,
    db: Path | None,
    sets: tuple[str, ...] = (),
    option: str | None = None,
    request_id: str | None = None,
) -> None:
    from airun_nb.gates import form as forms
    from airun_nb.gates import gate
    from airun_nb.governance import identity

    store = Store.open(db)
    out = gate.decide(
        store,
        run_id,
        gate_id,
        decision,
        actor=identity.acting_as(by),
        channel="cli",
        comment=comment,
        form=forms.parse_sets(sets) if sets else None,
        option=option,
        request_id=request_id,
    )
    verb = "approved" if decision == gate.APPROVE else "rejected"
    who = identity.acting_as(by)
    if out["status"] == "open":
        click.echo(
            f"{verb} gate {gate_id} of run {run_id} as {who}; the gate stays open: "
            f"{out['progress']}"
        )
        return
    chosen = f" with option {out['option']}" if decision == gate.APPROVE and out["option"] else ""
    then = "continues" if out["status"] == "approved" else "rolls back"
    resume = gate.resume_command(run_id, store.path)
    click.echo(
        f"{verb} gate {gate_id} of run {run_id} as {who}{chosen}; the run {then} "
        f"when it resumes (re-run its cell, or `{resume}`)"
    )


_by = click.option(
    "--by", help="Decide as this user (needs a 'gate.decide_as' right; default: you)."
)
_comment = click.option("--comment", "-m", help="A comment kept with the decision.")
_set = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME=VALUE",
    help="A value for one of the gate's form fields (repeat for each field).",
)
_request = click.option(
    "--request-id",
    help="Names this request: running the same command again with it returns the first answer.",
)


@main.command()
@click.argument("run_id")
@click.argument("gate_id")
@_by
@_comment
@_set
@click.option("--option", help="The option chosen, one of the gate's options.")
@_request
@store_option
def approve(
    run_id: str,
    gate_id: str,
    by: str | None,
    comment: str | None,
    sets: tuple[str, ...],
    option: str | None,
    request_id: str | None,
    db: Path | None,
) -> None:
    """Approve gate GATE_ID of run RUN_ID (with its form values and option, if it has them)."""
    _decide("approve", run_id, gate_id, by, comment, db, sets, option, request_id)


@main.command()
@click.argument("run_id")
@click.argument("gate_id")
@_by
@_comment
@_set
@_request
@store_option
def reject(
    run_id: str,
    gate_id: str,
    by: str | None,
    comment: str | None,
    sets: tuple[str, ...],
    request_id: str | None,
    db: Path | None,
) -> None:
    """Reject gate GATE_ID of run RUN_ID (the run rolls back when it resumes)."""
    _decide("reject", run_id, gate_id, by, comment, db, sets, None, request_id)


@main.command("audit")
@store_option
@click.option("--run", "run_id", help="Only this run.")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), callback=_output_path
)
def audit_cmd(db: Path | None, run_id: str | None, fmt: str, output: Path | None) -> None:
    """Export the audit trail (secrets are redacted when recorded)."""
    from airun_nb.history import frames as history

    _emit(history.audit(run_id, db), "json" if fmt == "jsonl" else "csv", output)


@main.command("history")
@store_option
@click.option("--table", "-t", type=click.Choice(_TABLES), default="runs", show_default=True)
@click.option("--run", "run_id", help="Only this run (steps, attempts, events).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "json"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_output_path,
    help="Write here instead of standard output (required for parquet).",
)
def history_cmd(
    db: Path | None, table: str, run_id: str | None, fmt: str, output: Path | None
) -> None:
    """Export run history as CSV, Parquet or JSON lines."""
    from airun_nb.history import frames as history

    if run_id and not Store.open(db, create=False).query(
        "SELECT 1 FROM runs WHERE run_id = ?", [run_id]
    ):
        click.echo(f"error: no run {run_id} in {short(resolve_db(db))}", err=True)
        sys.exit(2)
    if table == "runs":
        df = history.runs(db)
        if run_id:
            df = df[df["run_id"] == run_id]
    else:
        df = getattr(history, table)(run_id, db)
    if "duration" in df:
        df["duration_s"] = df["duration"].dt.total_seconds()
        df = df.drop(columns=["duration"])
    if fmt == "parquet":
        if output is None:
            raise click.UsageError("--format parquet needs --output FILE")
        _write(output, lambda: df.to_parquet(output, index=False))
        click.echo(f"wrote {len(df)} rows to {output}")
        return
    _emit(df, fmt, output)


def _write(output: Path, write: Callable[[], object]) -> None:
    try:
        write()
    except OSError as exc:
        raise os_fault(exc, output, "write") from None


def _emit(df: pd.DataFrame, fmt: str, output: Path | None) -> None:
    """Write a frame as CSV or JSON lines to a file, or to standard output."""
    text = (
        df.to_csv(index=False)
        if fmt == "csv"
        else df.to_json(orient="records", lines=True, date_format="iso")
    )
    if output is not None:
        _write(output, lambda: output.write_text(text))
        click.echo(f"wrote {len(df)} rows to {output}")
    else:
        click.echo(text, nl=False)


@main.command("run")
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the executed notebook (default: NAME.out.ipynb).",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds per cell.")
@db_option
def run_cmd(notebook: Path, output: Path | None, timeout: float, db: Path | None) -> None:
    """Execute a notebook headless and print the runs it made."""
    from airun_nb.history import frames as history
    from airun_nb.jupyter.headless import (
        run_notebook,  # nbclient is slow to import: only when needed
    )

    env = {"AIRUN_DB": str(db.resolve())} if db else None
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    failure: AirunError | None = None
    try:
        result = run_notebook(notebook, output=output, timeout=timeout, env=env)
        click.echo(f"executed {notebook} in {result.seconds:.1f} s -> {result.output}")
    except AirunError as exc:
        failure = exc
    store_path = db or _notebook_store(notebook)
    if store_path is not None and store_path.exists():
        store = Store.open(store_path)
        # Every run the notebook touched: the ones it created and the ones it resumed.
        rows = store.query(
            "SELECT run_id, created_at < ? AS resumed FROM runs "
            "WHERE created_at >= ? OR updated_at >= ? ORDER BY created_at",
            [started, started, started],
        )
        for run_id, resumed in rows:
            click.echo("")
            if resumed:
                click.echo(f"(resumed run {run_id}, started before this notebook run)")
            click.echo(repr(history.stored_run(run_id, store_path)))
    if failure is not None:
        raise failure


def _notebook_store(notebook: Path) -> Path | None:
    """The store a notebook used: its own AIRUN_DB setting, else airun.duckdb beside it."""
    import json
    import re

    try:
        text = json.dumps(json.loads(notebook.read_text()).get("cells", []))
    except ValueError:
        return None
    m = re.search(r"AIRUN_DB[\\\"']*\]?\s*=\s*[\\\"']+([^\\\"']+)", text)
    if m:
        p = Path(m.group(1))
        return p if p.is_absolute() else notebook.parent / p
    default = resolve_db(None)
    return notebook.parent / default.name


@main.command("cancel")
@click.argument("run_id")
@click.option("--rollback", is_flag=True, help="Undo the run's finished steps first.")
@_by
@_comment
@store_option
def cancel_cmd(
    run_id: str, rollback: bool, by: str | None, comment: str | None, db: Path | None
) -> None:
    """End a waiting, failed or interrupted run as cancelled (closing its open gates)."""
    from airun_nb.engine.cancel import cancel, describe

    click.echo(
        describe(cancel(run_id, rollback=rollback, by=by, channel="cli", comment=comment, db=db))
    )


@main.group("token")
def token_group() -> None:
    """Tokens for the approval service (`airun serve`)."""


@token_group.command("create")
@click.argument("user")
@click.option("--role", default="approver", show_default=True, help="viewer, approver or admin.")
@db_option
def token_create(user: str, role: str, db: Path | None) -> None:
    """Make a token for USER and print it (only this once; the store keeps its hash)."""
    from airun_nb.governance import identity
    from airun_nb.service import tokens

    click.echo(tokens.create(Store.open(db), user, role=role, created_by=identity.current()))


@token_group.command("revoke")
@click.argument("token_id_or_user")
@db_option
def token_revoke(token_id_or_user: str, db: Path | None) -> None:
    """Revoke a token by its id, or every token of a user."""
    from airun_nb.service import tokens

    ids = tokens.revoke(Store.open(db), token_id_or_user)
    click.echo(f"revoked {', '.join(ids)}")


@token_group.command("list")
@db_option
def token_list(db: Path | None) -> None:
    """List tokens (id, user, role, created, revoked); never their secrets."""
    from airun_nb.service import tokens

    rows = tokens.listing(Store.open(db))
    if not rows:
        click.echo("(no tokens)")
    for r in rows:
        revoked = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "live"
        click.echo(
            f"{r['token_id']}  {r['user_name']:<16} {r['role']:<9} "
            f"created {r['created_at']:%Y-%m-%d %H:%M} by {r['created_by']}  {revoked}"
        )


@main.command("serve")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (TLS in front).")
@click.option("--public-url", help="The https:// address people reach it at (for links).")
def serve_cmd(
    db: Path | None, host: str, port: int, allow_remote: bool, public_url: str | None
) -> None:
    """Run the approval service: REST API, approval pages and event stream."""
    try:
        from airun_nb.service.server import serve
    except ImportError as exc:
        raise click.ClickException(
            f"{exc.name} is missing: pip install 'airun_nb[serve]'"
        ) from None
    serve(db, host, port, allow_remote=allow_remote, public_url=public_url)


@main.command("dashboard")
@db_option
def dashboard_cmd(db: Path | None) -> None:
    """A terminal dashboard of runs and gates (keyboard only; works over SSH)."""
    try:
        from airun_nb.dashboard.app import Dashboard
    except ImportError as exc:
        raise click.ClickException(
            f"{exc.name} is missing: pip install 'airun_nb[dashboard]'"
        ) from None
    Dashboard(Store.open(db)).run()


@main.command("doctor")
@db_option
@click.option("--repair", is_flag=True, help="Move damaged parts aside; close dead runs.")
def doctor_cmd(db: Path | None, repair: bool) -> None:
    """Check a store: it opens, its journal folds, its rows hang together, no run is stuck.

    Exits 1 when a problem is left (run again with --repair).
    """
    from airun_nb.engine import doctor

    findings = doctor.examine(db, repair=repair)
    click.echo(doctor.table(findings))
    if not doctor.healthy(findings):
        sys.exit(1)
