"""``airun``: the command line front end to the same store and engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from airun_nb.cli.group import Group
from airun_nb.cli.storeoption import STORE
from airun_nb.errors import AirunError, StoreError
from airun_nb.settings.environment import StoreURL, resolve_db
from airun_nb.store.faults import os_fault, short

if TYPE_CHECKING:
    import pandas as pd

    from airun_nb.store.backend import Backend

_TABLES = ("runs", "steps", "attempts", "events", "approvals", "audit")


db_option = click.option(
    "--db",
    type=STORE,
    envvar="AIRUN_DB",
    help="Store file or postgresql:// URL (default: $AIRUN_DB or ./airun.duckdb).",
)


def _existing_store(
    ctx: click.Context, param: click.Parameter, value: Path | StoreURL | None
) -> Path | StoreURL | None:
    """Commands that read or act on runs never create a store: a typo is one line."""
    path = resolve_db(value)
    if isinstance(path, StoreURL):
        return path  # a server store: opening it says whether it can be reached
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
    type=STORE,
    envvar="AIRUN_DB",
    callback=_existing_store,
    help="Store file or postgresql:// URL (default: $AIRUN_DB or ./airun.duckdb); it must exist.",
)


def _open_store(db: Path | StoreURL | None, *, create: bool = True) -> Backend:
    """The store (its modules, and DuckDB, imported by the commands that use it)."""
    from airun_nb.store.opening import open_store

    return open_store(db, create=create)


@click.group(cls=Group)
@click.version_option(package_name="airun_nb")
def main() -> None:
    """Inspect and drive airun_nb workflow runs."""
    # As `python -m` does: modules in the working folder import (`call: payments:refund` in a
    # resume or rollback outside the notebook).
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


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
    from airun_nb.history import runlist

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
@click.option(
    "--trust-stored-code",
    is_flag=True,
    help="Load the notebook functions the notebook stored for this run (unpickling runs them).",
)
@store_option
def resume(run_id: str, db: Path | None, trust_stored_code: bool = False) -> None:
    """Resume an unfinished run outside its notebook.

    Only the steps that still have to run need their code: python, sql, call: 'module:function',
    and notebook functions the notebook stored (`%config Workflow.store_code = True`), loaded
    only with --trust-stored-code (or `trust_stored_code: true` in the settings) and only when
    signed with your key; otherwise re-open the notebook and resume there.
    """
    from airun_nb.engine.stepkinds import ResolveError
    from airun_nb.settings import file as settings
    from airun_nb.store import code as codestore
    from airun_nb.workflow import Workflow

    wf = Workflow.from_run(run_id, db=db)
    store = _open_store(db)
    trusted = trust_stored_code or settings.trust_stored_code()
    namespace = codestore.load(store, run_id) if trusted else {}
    try:
        result = wf.run(db=db, resume=run_id, namespace=namespace, raise_on_failure=False)
    except ResolveError as exc:
        if not trusted and codestore.stored_names(store, run_id):
            raise ResolveError(
                f"{exc.message}. The notebook stored its code for this run: resume with "
                f"`airun resume {run_id} --trust-stored-code` to load it (loading runs it), "
                "or re-open the notebook and resume there"
            ) from None
        row = store.run_row(run_id)
        where = row["source"] if row and row["source"] else "the notebook that started it"
        raise ResolveError(
            f"{exc.message}. Re-open {where}, run its cells, then `%workflow resume {run_id}`; "
            "or let the notebook store its code (`%config Workflow.store_code = True`, then "
            "run the cell again) and resume here with --trust-stored-code"
        ) from None
    click.echo(repr(result))
    if result.status != "completed":
        sys.exit(1)


@main.command("rollback")
@click.argument("run_id")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Undo only the last N finished steps of a completed run.",
)
@store_option
def rollback_cmd(run_id: str, steps: int | None, db: Path | None) -> None:
    """Undo a run through its compensations (or finish a rollback that stopped).

    With --steps N only the N newest finished steps of a completed run are undone (the old
    `airun undo --steps N`). Compensations that call notebook functions need the notebook: use
    `%workflow rollback RUN` there; importable ones (module:function, python, sql) run here.
    """
    from airun_nb.workflow import rollback

    result = rollback(run_id, db=db, steps=steps)
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
    store = _open_store(db)
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
            click.echo(
                f"    Approved by {', '.join(gate.shown_by(full))}{chosen} (via {row['channel']})"
            )
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

    store = _open_store(db)
    me = identity.acting_as(by)
    with store.session("recording an approval decision"):
        found = store.run_row(run_id)  # read before the decision, so nothing is laid over
        out = gate.decide(
            store,
            run_id,
            gate_id,
            decision,
            actor=me,
            channel="cli",
            comment=comment,
            form=forms.parse_sets(sets) if sets else None,
            option=option,
            request_id=request_id,
        )
        who = _voter(store, out, me, run_id, gate_id)
    # The command ends here: the decision is durable, and the next process to hold the store
    # folds it (a watching kernel, which continues the run, does at its next look).
    store.let_go()
    verb = "approved" if decision == gate.APPROVE else "rejected"
    _say_decided(out, found, decision, verb, who, run_id, gate_id, store.path)


def _voter(store: Backend, out: dict[str, Any], me: str, run_id: str, gate_id: str) -> str:
    """Who the vote was recorded for: ``carol for bob`` through a delegation, else ``me``."""
    from airun_nb.gates import delegation, gate

    for actor, delegate in (out.get("delegated") or {}).items():
        if delegate == me:
            return f"{me} for {actor}"
    if out["status"] != "open":
        return me
    row = store.gate_row(run_id, gate_id) or {}  # a vote towards a quorum: its own record
    mine = [v for v in gate.votes_of(row) if me in (v.get("delegate"), v.get("actor"))]
    return delegation.shown(mine[-1]) if mine else me


def _say_decided(
    out: dict[str, Any],
    found: dict[str, Any] | None,
    decision: str,
    verb: str,
    who: str,
    run_id: str,
    gate_id: str,
    where: Any,
) -> None:
    from airun_nb.gates import gate

    if out["status"] == "open":
        click.echo(
            f"{verb} gate {gate_id} of run {run_id} as {who}; the gate stays open: "
            f"{out['progress']}"
        )
        return
    chosen = f" with option {out['option']}" if decision == gate.APPROVE and out["option"] else ""
    said = f"{verb} gate {gate_id} of run {run_id} as {who}{chosen}"
    status = str(found["status"]) if found else "waiting"
    if status != "waiting":  # a kernel showing the gate took the decision and went on
        click.echo(f"{said}; the run has already continued (now {status})")
        return
    then = "continues" if out["status"] == "approved" else "rolls back"
    from airun_nb.store.queue import continued_by

    worker = continued_by(found.get("source")) if found else None
    if worker is not None:  # a submitted run: no kernel waits for it, a worker takes it on
        how = "" if out["status"] == "approved" else " (and rolls it back)"
        click.echo(f"{said}; {worker.replace('continues it', 'continues it' + how, 1)}")
        return
    resume = gate.resume_command(run_id, where)
    click.echo(
        f"{said}; a notebook showing this gate {then.replace('continues', 'continues the run')}"
        f" now, otherwise the run {then} when it resumes (re-run its cell, or `{resume}`)"
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


@main.command("delegate")
@click.option("--to", "to", required=True, help="Who may give your approvals meanwhile.")
@click.option(
    "--until",
    help="The last day (2026-12-31, through its end, UTC) or time (2026-12-31T18:00Z).",
)
@click.option("--revoke", is_flag=True, help="End your delegations to --to now instead.")
@click.option(
    "--from",
    "principal",
    help="Whose approvals (default: yours; another person's needs a 'gate.decide_as' right).",
)
@store_option
def delegate_cmd(
    to: str, until: str | None, revoke: bool, principal: str | None, db: Path | None
) -> None:
    """Let another person decide the gates you may decide, until a date (where the policy
    allows delegation); their decisions are recorded with both names."""
    from airun_nb.gates import delegation

    if revoke:
        from airun_nb.governance import identity

        n = delegation.revoke(_open_store(db), to=to, principal=principal)
        who = principal or identity.current()
        click.echo(f"ended {n} delegation(s): {to} no longer decides for {who}")
        return
    if not until:
        raise click.UsageError("--until DATE is needed (or --revoke)")
    found = delegation.grant(_open_store(db), to=to, until=until, principal=principal)
    click.echo(
        f"{found.delegate} may decide the gates {found.principal} may decide until "
        f"{found.until_text()}; each decision is recorded as "
        f"'{found.delegate} for {found.principal}'"
    )


@main.command("delegations")
@store_option
def delegations_cmd(db: Path | None) -> None:
    """The delegations in force (expired ones do nothing and are not listed)."""
    from airun_nb.gates import delegation

    store = _open_store(db, create=False)
    found = delegation.active(store, store.clock())
    if not found:
        click.echo("no delegation in force")
    for d in found:
        click.echo(f"{d.delegate} for {d.principal} until {d.until_text()} (by {d.granted_by})")


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

    if run_id and not _open_store(db, create=False).has_run(run_id):
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


# `airun run NOTEBOOK` exit codes (docs/headless.md): what a script or CI job branches on.
EXIT_RUN_OK = 0  # every cell ran and every run the notebook made completed
EXIT_NOTEBOOK = 1  # the notebook could not run, or a cell that is not a run raised
EXIT_WAITING = 3  # a run waits at an approval gate (decide it, then resume)
EXIT_RUN_FAILED = 4  # a run failed, was rolled back after failing, or was interrupted
_FAILED_RUN = ("failed", "rollback_failed", "interrupted")


def _parameters(pairs: tuple[tuple[str, str], ...], file: Path | None) -> dict[str, object]:
    """``-f params.yaml`` then ``-p NAME VALUE`` (later wins); values read as YAML scalars."""
    import yaml

    params: dict[str, object] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text())
        except OSError as exc:
            raise AirunError(f"cannot read {short(file)}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise AirunError(f"{short(file)}{where}: not valid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise AirunError(f"{short(file)}: parameters must be a mapping of NAME: value")
        params.update(loaded or {})
    for name, value in pairs:
        try:
            params[name] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            params[name] = value
    return params


@main.command("run")
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the executed notebook (default: NAME.out.ipynb).",
)
@click.option(
    "--parameter",
    "-p",
    "pairs",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set NAME (a YAML value) in a cell after the 'parameters'-tagged cell, as papermill.",
)
@click.option(
    "--parameters-file",
    "-f",
    "params_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A YAML file of NAME: value parameters (-p wins over it).",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds per cell.")
@db_option
def run_cmd(
    notebook: Path,
    output: Path | None,
    pairs: tuple[tuple[str, str], ...],
    params_file: Path | None,
    timeout: float,
    db: Path | None,
) -> None:
    """Execute a notebook headless and print the runs it made.

    Exits 0 when every run completed, 3 when a run waits at an approval gate, 4 when a run
    failed (or was rolled back or interrupted), 1 when the notebook itself could not run.
    """
    from airun_nb.history import frames as history
    from airun_nb.jupyter.headless import (
        run_notebook,  # nbclient is slow to import: only when needed
    )

    parameters = _parameters(pairs, params_file)
    env = {"AIRUN_DB": str(db.resolve())} if db else None
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    failure: AirunError | None = None
    try:
        result = run_notebook(
            notebook, output=output, timeout=timeout, env=env, parameters=parameters
        )
        click.echo(f"executed {notebook} in {result.seconds:.1f} s -> {result.output}")
    except AirunError as exc:
        failure = exc
    store_path = db or _notebook_store(notebook)
    statuses: list[str] = []
    if store_path is not None and store_path.exists():
        store = _open_store(store_path)
        # Every run the notebook touched: the ones it created and the ones it resumed.
        for row in store.runs_touched_since(started):
            run_id, resumed = row["run_id"], row["resumed"]
            status, failed_step = row["status"], row["failed_step"]
            # a rollback after a failure is a failure; one asked for (or a cancel) is not
            statuses.append("failed" if status == "rolled_back" and failed_step else str(status))
            click.echo("")
            if resumed:
                click.echo(f"(resumed run {run_id}, started before this notebook run)")
            click.echo(repr(history.stored_run(run_id, store_path)))
    if failure is not None:
        click.echo(f"error: {failure.message}", err=True)
    if any(s in _FAILED_RUN for s in statuses):
        click.echo(f"exit {EXIT_RUN_FAILED}: a run did not complete", err=True)
        sys.exit(EXIT_RUN_FAILED)
    if "waiting" in statuses:
        click.echo(
            f"exit {EXIT_WAITING}: a run waits at an approval gate "
            "(`airun approvals`, then resume it)",
            err=True,
        )
        sys.exit(EXIT_WAITING)
    if failure is not None:
        sys.exit(EXIT_NOTEBOOK)


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

    click.echo(tokens.create(_open_store(db), user, role=role, created_by=identity.current()))


@token_group.command("revoke")
@click.argument("token_id_or_user")
@db_option
def token_revoke(token_id_or_user: str, db: Path | None) -> None:
    """Revoke a token by its id, or every token of a user."""
    from airun_nb.service import tokens

    ids = tokens.revoke(_open_store(db), token_id_or_user)
    click.echo(f"revoked {', '.join(ids)}")


@token_group.command("list")
@db_option
def token_list(db: Path | None) -> None:
    """List tokens (id, user, role, created, revoked); never their secrets."""
    from airun_nb.service import tokens

    rows = tokens.listing(_open_store(db))
    if not rows:
        click.echo("(no tokens)")
    for r in rows:
        revoked = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "live"
        click.echo(
            f"{r['token_id']}  {r['user_name']:<16} {r['role']:<9} "
            f"created {r['created_at']:%Y-%m-%d %H:%M} by {r['created_by']}  {revoked}"
        )


def _need_extra(extra: str, command: str, modules: tuple[str, ...]) -> None:
    """One line naming the extra to install when a command's optional packages are missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise AirunError(
            f"{command} needs the '{extra}' extra ({', '.join(missing)} missing): "
            f"pip install 'airun_nb[{extra}]' (from a clone: pip install -e '.[{extra}]')"
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
    _need_extra("serve", "airun serve", ("fastapi", "uvicorn", "sse_starlette", "itsdangerous"))
    from airun_nb.service.server import serve

    serve(db, host, port, allow_remote=allow_remote, public_url=public_url)


@main.command("dashboard")
@db_option
def dashboard_cmd(db: Path | None) -> None:
    """A terminal dashboard of runs and gates (keyboard only; works over SSH)."""
    _need_extra("dashboard", "airun dashboard", ("textual",))
    from airun_nb.dashboard.app import Dashboard

    Dashboard(_open_store(db)).run()


def _finish(run_id: str, db: Path | None) -> str:
    """Resume an unfinished run here (a rollback is finished), with the code the notebook
    stored for it; how it ended, or an AirunError that says what it needs."""
    from airun_nb.engine.stepkinds import ResolveError
    from airun_nb.settings import file as settings
    from airun_nb.store import code as codestore
    from airun_nb.workflow import Workflow

    wf = Workflow.from_run(run_id, db=db)
    store = _open_store(db)
    # Stored code runs when it is loaded: only where the resuming side opted in too.
    trusted = settings.trust_stored_code()
    try:
        result = wf.run(
            db=db,
            resume=run_id,
            namespace=codestore.load(store, run_id) if trusted else {},
            raise_on_failure=False,
        )
    except ResolveError as exc:
        stored = not trusted and codestore.stored_names(store, run_id)
        hint = " (its notebook stored its code: set trust_stored_code to load it)" if stored else ""
        raise ResolveError(
            f"{exc.message}{hint}; re-open its notebook and `%workflow resume {run_id}`"
        ) from None
    return result.status


@main.command("doctor")
@db_option
@click.option(
    "--repair",
    is_flag=True,
    help="Move damaged parts aside; finish unfinished runs (rollbacks, runs whose process "
    "died, decided gates) where their code is available; close the rest.",
)
def doctor_cmd(db: Path | None, repair: bool) -> None:
    """Check a store: it opens, its journal folds, its rows hang together, no run is stuck.

    Exits 1 when a problem is left (run again with --repair).
    """
    from airun_nb.engine import doctor

    findings = doctor.examine(db, repair=repair, finish=lambda run_id: _finish(run_id, db))
    click.echo(doctor.table(findings))
    if not doctor.healthy(findings):
        sys.exit(1)
