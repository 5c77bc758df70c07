"""Moving a run between stores: everything a run is, out of one store and into another.

``airun pull RUN --from TEAM`` and ``airun push RUN --to TEAM`` copy one run so that a
teammate's failed run can be read, forked and fixed locally, and the fix sent back. The copy is a
*bundle*: logical table name -> the run's rows (plain Python values, the same from every
backend), the run's DataFrame output tables as Arrow under ``"__outputs__"`` and one row of
facts about the bundle under ``"__meta__"``. :func:`export_run` makes one from this DuckDB store
and :func:`import_run` loads one into it; a server backend implements the same two methods of
:class:`~.backend.Backend`, and :func:`copy_run` works between any two.

What travels (:data:`RUN_TABLES`): the run's row, its steps, attempts, gates (``approvals``,
with their votes and decisions), events and audit rows, the workflow text it ran (``specs``, by
content hash: shared, never replaced), and every output table its steps point at or that is
named after it (``<run>/<step>/<attempt>``, and the stored code ``code/<run>``,
``code/<run>/sources``). What stays (:data:`LOCAL_TABLES` and the files beside the store): the
approval service's API tokens (people of that store, not of the run), the parsed-spec cache, the
queue (who should run what on that store), the journal marks and the event counter in
``airun_meta``, the file lease, the journal slots and the heads folder: per-store bookkeeping
that describes the store and its processes, not the run. The run's owner (pid, host, process
start) is cleared too: it names a process on the other host, and a run is only copied when that
process is no longer executing it.

Importing is a bulk load, not a state transition: it adds a run, as a whole and unchanged, that
some store's one writer (:func:`~.transitions.commit`) already checked step by step; replaying
it through the journal would re-check transitions the run made elsewhere and number its rows in
the wrong order. So it writes the rows itself, inside ``store/``, in one DuckDB transaction
under the store's lease (the same discipline as a fold: nobody else writes the file meanwhile),
after folding every journal so the check "is this run already here?" sees every record. Events
get fresh ``seq`` numbers at the end of the destination's order, so an event stream reading the
destination sees them as new. Either everything is copied or nothing is.

Stored code and pickled outputs are signed with a key outside the store (:mod:`.signing`): a
copied signature would make code from another store trusted just by being copied. The bundle
therefore never carries a signature (:func:`unseal` on the way out); the copy is refused like
an unsigned pickle until the user says they trust it (``--trust-stored-code``: :func:`reseal`
signs it with their key).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import duckdb

from airun_nb.errors import RunNotFound, StoreError
from airun_nb.settings import caps
from airun_nb.store import packed, signing
from airun_nb.store.crashpoints import crashpoint
from airun_nb.store.owner import owner_alive
from airun_nb.store.schema import _TS, SCHEMA_VERSION, TABLES

if TYPE_CHECKING:
    import pyarrow as pa

    from airun_nb.store.backend import Backend
    from airun_nb.store.database import Store

Bundle = dict[str, list[dict[str, Any]]]

OUTPUTS = "__outputs__"
META = "__meta__"
# Tables whose rows belong to one run and travel with it (specs: the text it ran).
RUN_TABLES = ("specs", "runs", "steps", "attempts", "approvals", "events", "audit")
# Tables that describe the store, not a run: they never travel.
LOCAL_TABLES = {
    "tokens": "API tokens of that store's approval service: people of a store, not of a run",
    "spec_cache": "parsed workflows cached by that store's processes: rebuilt on use",
    "queue": "which runs that store's workers should run: a copied run is not queued",
}
OWNER = ("owner_pid", "owner_host", "owner_token")
_EXECUTING = ("running", "rolling_back")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced (``user:***@``)."""
    # (``:/`` too: the same URL after it went through a file path, which folds ``//``)
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*:/{1,2}[^\s:/@]*):[^\s@/]*@", r"\1:***@", text)


def executing(row: Mapping[str, Any]) -> bool:
    """Is a process executing this run right now (so copying it would copy half a state)?"""
    return executing_here(row, owner_alive)


def executing_here(row: Mapping[str, Any], alive: Callable[[Mapping[str, Any]], bool]) -> bool:
    """:func:`executing`, with a store's own way to tell whether the owner is alive."""
    return row.get("status") in _EXECUTING and alive(row)


def busy_line(run_id: str, row: Mapping[str, Any], where: str) -> str:
    """The one line a copy onto (or from) a run being executed gets."""
    pid, host = row.get("owner_pid"), row.get("owner_host")
    return f"run {run_id} is running in {where} (pid {pid} on {host}); nothing copied"


def _belongs(name: str, run_id: str) -> bool:
    """Is output table ``name`` the run's own (its step outputs, its stored code)?"""
    return name.startswith(f"{run_id}/") or name in (f"code/{run_id}", f"code/{run_id}/sources")


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _columns(table: str) -> list[str]:
    return [c for c, _ in TABLES[table][0]]


# -- out ------------------------------------------------------------------------------------
def export_run(store: Store, run_id: str) -> Bundle:
    """The run ``run_id`` of ``store`` as a bundle (signatures removed, see :func:`unseal`).
    :class:`RunNotFound` when the store has no such run, :class:`StoreError` while a live
    process is executing it."""

    try:
        return _export(store, run_id)
    except duckdb.Error as exc:  # a store file someone else made: one line, nothing copied
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"cannot read run {run_id} from {store.path}: {first}; nothing copied"
        ) from None


def _views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The store's tables (and output tables) that are not plain tables: a view runs a query
    written by whoever made the file, so a copy never reads through one."""
    names = [*RUN_TABLES, packed.OUTPUTS]  # and the Parquet-kept output tables
    found = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type <> 'BASE TABLE' AND table_schema IN ('main', 'outputs')"
    ).fetchall()
    return [f"{schema}.{name}" for schema, name in found if schema == "outputs" or name in names]


def _export(store: Store, run_id: str) -> Bundle:
    with store.session("copying a run out") as con:
        views = _views(con)
        if views:
            raise StoreError(
                f"{store.path} is not a store airun_nb wrote: {', '.join(sorted(views)[:3])} "
                "is a view, not a table; nothing copied"
            )
        found = _dicts(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not found:
            raise RunNotFound(f"no run '{run_id}' in {store.path}")
        run = found[0]
        if executing(run):
            raise StoreError(busy_line(run_id, run, str(store.path)))
        bundle: Bundle = {"runs": found}
        bundle["specs"] = _dicts(
            con, "SELECT * FROM specs WHERE spec_hash = ?", [run.get("spec_hash")]
        )
        order = {
            "steps": "position, step_id",
            "attempts": "step_id, phase, attempt",
            "approvals": "opened_at, gate_id",
            "events": "seq, rowid",
            "audit": "ts, rowid",
        }
        for table, by in order.items():
            bundle[table] = _dicts(
                con, f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {by}", [run_id]
            )
        wanted = {str(s["output_table"]) for s in bundle["steps"] if s.get("output_table")}
        tables: dict[str, pa.Table] = {}
        for name in packed.names(con):  # both kinds (DuckDB tables, Parquet bytes)
            if name in wanted or _belongs(name, run_id):
                tables[name] = packed.read(con, name, store.path)
    cast(dict[str, Any], bundle)[OUTPUTS] = tables
    bundle[META] = [{"run_id": run_id, "schema_version": SCHEMA_VERSION, "source": str(store.path)}]
    return unseal(bundle)


def unseal(bundle: Bundle) -> Bundle:
    """The bundle with every signed pickle unsigned and marked as copied (stored code, pickled
    step outputs): a copy is never trusted on arrival. Harmless to apply twice."""
    return _blobs(bundle, signing.unseal)


def reseal(bundle: Bundle) -> Bundle:
    """The bundle with its copied pickles signed with this user's key: only when the user
    said they trust this run's stored code (``--trust-stored-code``)."""
    return _blobs(bundle, signing.reseal)


def _blobs(bundle: Bundle, change: Any) -> Bundle:
    import pyarrow as pa

    runs = bundle.get("runs") or [{}]
    run_id = str(runs[0].get("run_id") or "") if len(runs) == 1 else ""
    out: Bundle = dict(bundle)
    out["steps"] = [
        dict(r, output_blob=change(r["output_blob"])) if r.get("output_blob") else r
        for r in bundle.get("steps", [])
    ]
    tables = dict(outputs_of(bundle))
    for name, table in tables.items():
        if (
            name == f"code/{run_id}"  # only the run's own stored code is ever signed
            and not name.endswith("/sources")
            and "code" in table.schema.names
        ):
            blobs = [None if b is None else change(b) for b in table["code"].to_pylist()]
            at = table.schema.get_field_index("code")
            tables[name] = table.set_column(at, "code", pa.array(blobs, pa.binary()))
    cast(dict[str, Any], out)[OUTPUTS] = tables
    return out


def outputs_of(bundle: Bundle) -> dict[str, pa.Table]:
    return cast("dict[str, pa.Table]", cast(dict[str, Any], bundle).get(OUTPUTS) or {})


def meta_of(bundle: Mapping[str, Any]) -> dict[str, Any]:
    rows = bundle.get(META) or [{}]
    return dict(rows[0])


def summary(bundle: Bundle) -> str:
    """What a bundle holds, as the commands say it: "5 steps, 7 attempts, 1 gate, 2 output
    tables"."""

    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    tables = [t for t in outputs_of(bundle) if not t.startswith("code/")]
    return ", ".join(
        [
            n(len(bundle.get("steps", [])), "step"),
            n(len(bundle.get("attempts", [])), "attempt"),
            n(len(bundle.get("approvals", [])), "gate"),
            n(len(tables), "output table"),
        ]
    )


# -- in -------------------------------------------------------------------------------------
def _check(bundle: Bundle) -> tuple[str, dict[str, Any]]:
    """The run id of a well-formed bundle and its run row; one line for anything else."""
    meta = meta_of(bundle)
    runs = bundle.get("runs") or []
    if len(runs) != 1 or not runs[0].get("run_id"):
        raise StoreError("the bundle holds no run (or more than one); nothing copied")
    run_id = str(runs[0]["run_id"])
    if meta.get("run_id") not in (None, run_id):
        raise StoreError(f"the bundle's run {meta.get('run_id')} is not {run_id}; nothing copied")
    version = int(meta.get("schema_version") or SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"run {run_id} comes from a newer store (schema {version}; this airun_nb reads up "
            f"to {SCHEMA_VERSION}); upgrade airun_nb to copy it; nothing copied"
        )
    for table in RUN_TABLES:
        if table == "specs":
            continue
        for row in bundle.get(table, []):
            if row.get("run_id") != run_id:
                raise StoreError(
                    f"the bundle of run {run_id} holds a {table} row of run "
                    f"{row.get('run_id')}; nothing copied"
                )
    spec_hash = runs[0].get("spec_hash")
    for row in bundle.get("specs", []):
        if row.get("spec_hash") != spec_hash:
            raise StoreError(f"the bundle of run {run_id} holds another run's workflow text")
    wanted = {str(s["output_table"]) for s in bundle.get("steps", []) if s.get("output_table")}
    for name in outputs_of(bundle):
        if _belongs(name, run_id):
            continue
        if name not in wanted or name.startswith("code/"):
            # Another run's stored code or an output nobody here points at: a copy of one run
            # never plants tables for another (they would be signed by --trust-stored-code).
            raise StoreError(
                f"the bundle of run {run_id} holds output table {name[:80]!r} of another run "
                "that none of its steps reads; nothing copied"
            )
    unknown = set(bundle) - {*RUN_TABLES, OUTPUTS, META}
    if unknown:
        raise StoreError(
            f"the bundle of run {run_id} holds tables this store does not know "
            f"({', '.join(sorted(unknown))}); nothing copied"
        )
    return run_id, runs[0]


def import_run(store: Store, bundle: Bundle) -> None:
    """Load a bundle into ``store`` as one transaction (all of it or nothing).

    Refuses, with :class:`StoreError` and one line, a run id the store already has ("run r-...
    is already in <store>; nothing copied"), unless the bundle's ``__meta__`` row says
    ``replace: true`` and the store's copy is not executing: then the old copy's rows and
    output tables are removed in the same transaction."""
    run_id, run = _check(bundle)
    replace = bool(meta_of(bundle).get("replace"))
    outputs = outputs_of(bundle)
    with store.session("copying a run in") as con:
        con.execute("BEGIN")
        try:
            here = _dicts(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
            if here and not replace:
                raise StoreError(f"run {run_id} is already in {store.path}; nothing copied")
            if here and executing(here[0]):
                raise StoreError(busy_line(run_id, here[0], str(store.path)))
            if here:
                _remove(con, run_id)
            _insert(con, "specs", bundle.get("specs", []), ignore=True)
            _insert(con, "runs", [{**run, **dict.fromkeys(OWNER)}])
            for table in ("steps", "attempts", "audit"):
                _insert(con, table, bundle.get(table, []))
            _insert(con, "approvals", _decided_here(bundle))
            _insert(con, "events", _numbered(con, bundle.get("events", [])))
            for name, table in outputs.items():  # another run's table already here stays
                packed.write(con, name, table, replace=_belongs(name, run_id))
            crashpoint("import:before_commit")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
    # Rows came in behind the journal's back: what this process and the heads folder remember
    # of the latest run of each workflow is read again from DuckDB.
    store.folds += 1
    store.heads.forget(str(run.get("workflow")))


def _decided_here(bundle: Bundle) -> list[dict[str, Any]]:
    """The bundle's gates, with an approval that nothing has acted on yet closed again.

    A gate approved in another store whose step has not finished (the step after an approval
    step, or the step a policy-inserted ``<step>.approval`` guards) would let a resume here
    go past it on that store's word: a row anyone can write into the file they share. It
    arrives closed "for want of a decision" (``expired`` by ``policy``), so a resume here opens
    it again and this store's approvers decide it; the copied decision stays in its events
    and audit rows."""
    done = {
        str(s.get("step_id"))
        for s in bundle.get("steps", [])
        if s.get("status") in ("completed", "skipped")
    }
    out = []
    for row in bundle.get("approvals", []):
        gate_id = str(row.get("gate_id") or "")
        step = gate_id.removesuffix(".approval")
        if row.get("status") == "approved" and step not in done:
            row = {
                **row,
                "status": "expired",
                "decision": None,
                "channel": "policy",
                "comment": "approved in another store; this store decides again",
                "votes": None,
            }
        out.append(row)
    return out


def _remove(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """The store's own copy of a run, before a replacement is loaded (same transaction)."""
    for table in RUN_TABLES:
        if table != "specs":
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    for name in packed.names(con):
        if _belongs(name, run_id):
            packed.remove(con, name)


def _numbered(con: duckdb.DuckDBPyConnection, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with the next numbers of this store's one order, as a fold numbers them."""
    from airun_nb.store.fold import _numbered as next_numbers

    return next_numbers(con, events) if events else []


def _insert(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]], ignore: bool = False
) -> None:
    if not rows:
        return
    cols = _columns(table)
    con.register("__airun_copy", _arrow(table, rows))
    try:
        names = ", ".join(cols)
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        con.execute(f"{verb} INTO {table} ({names}) SELECT {names} FROM __airun_copy")
    finally:
        con.unregister("__airun_copy")


def _arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of a logical table (values as any backend reads them) as Arrow with the store's
    column types; a column an older store did not have is empty."""
    import pyarrow as pa

    types = {
        "VARCHAR": pa.string(),
        "BIGINT": pa.int64(),
        "BLOB": pa.binary(),
        "DOUBLE": pa.float64(),
        "BOOLEAN": pa.bool_(),
        _TS: pa.timestamp("us"),
    }
    arrays = []
    for name, typ in TABLES[table][0]:
        values = [r.get(name) for r in rows]
        if typ == _TS:
            values = [_naive_utc(v) for v in values]
        arrays.append(pa.array(values, types[typ]))
    return pa.Table.from_arrays(arrays, names=_columns(table))


def _naive_utc(value: Any) -> Any:
    """A timestamp as the store keeps it: naive, in UTC (a server may hand out aware ones)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


# -- between two stores ----------------------------------------------------------------------
def copy_run(
    source: Backend,
    dest: Backend,
    run_id: str,
    *,
    by: str,
    replace: bool = False,
    trust_stored_code: bool = False,
    max_bytes: int | None = None,
) -> Bundle:
    """Copy run ``run_id`` from ``source`` to ``dest`` (any two backends) on behalf of ``by``
    (who pulls or pushes it); the bundle copied.

    Signatures never travel (:func:`unseal`, whatever the source backend did); with
    ``trust_stored_code`` the copy's stored code and pickled outputs are signed with this
    user's key (:func:`reseal`). In the destination the run is launched by ``by``
    (:func:`provenance`); a bundle above ``max_bytes`` (default: the ``copy_max_bytes``
    setting) is refused before anything is written."""
    if _same(source, dest):
        raise StoreError(
            f"the source and the destination are one store ({dest.path}); nothing copied"
        )
    exported = source.export_run(run_id)
    limit = caps.copy_max_bytes() if max_bytes is None else max_bytes
    size = bundle_bytes(exported)
    if size > limit:
        raise StoreError(
            f"run {run_id} is {_mb(size)}, above the copy_max_bytes limit of {_mb(limit)}; "
            "nothing copied (raise the setting copy_max_bytes to copy it)"
        )
    bundle = unseal({k: v for k, v in exported.items() if k not in LOCAL_TABLES})
    if trust_stored_code:
        bundle = reseal(bundle)
    bundle[META] = [{**meta_of(bundle), "replace": replace}]
    # What holds whichever backend receives it: a well-formed bundle of this one run, its
    # owner (a process of the other store) cleared, an approval nothing acted on closed again,
    # the person who copied it as its launcher here.
    _, run = _check(bundle)
    bundle["runs"] = [{**run, **dict.fromkeys(OWNER)}]
    bundle["approvals"] = _decided_here(bundle)
    bundle = provenance(bundle, by=by, source=redact(str(source.path)))
    dest.import_run(bundle)
    return bundle


def provenance(bundle: Bundle, *, by: str, source: str) -> Bundle:
    """The bundle as the destination keeps it: launched by ``by``, who copied it there.

    Who launched a run decides who may act on it in a store: the launcher may not decide its
    own four-eyes gates and may cancel it. A launcher read from the copied row is whatever the
    source store (a file anyone can write) says, so in the destination the run, and each of its
    gates, is launched by the person who pulled or pushed it; the first launcher stays as
    provenance in ``origin_launcher`` (kept through later copies) and the store it came from in
    ``copied_from``. Every audit row recorded elsewhere is marked with ``copied_from`` (the
    store that recorded it), and one new row, ``kind`` ``copy``, records who copied the run
    here and from where."""
    out: Bundle = dict(bundle)
    run = dict(bundle["runs"][0])
    run_id = str(run["run_id"])
    origin = run.get("origin_launcher") or run.get("launched_by")
    out["runs"] = [{**run, "launched_by": by, "origin_launcher": origin, "copied_from": source}]
    out["approvals"] = [{**g, "launched_by": by} for g in bundle.get("approvals", [])]
    copied = [{**a, "copied_from": a.get("copied_from") or source} for a in bundle.get("audit", [])]
    copied.append(
        {
            "ts": datetime.now(timezone.utc).replace(tzinfo=None),
            "kind": "copy",
            "principal": by,
            "run_id": run_id,
            "capability": "run.copy",
            "decision": "done",
            "arguments": json.dumps({"from": source, "launched_by": origin}),
            "result": f"copied from {source}; launched there by {origin or 'nobody known'}",
        }
    )
    out["audit"] = copied
    return out


def bundle_bytes(bundle: Mapping[str, Any]) -> int:
    """About how many bytes a bundle holds: its rows' values and its output tables' buffers."""
    total = 0
    for name, rows in bundle.items():
        if name == OUTPUTS:
            total += sum(int(t.nbytes) for t in (rows or {}).values())
            continue
        for row in rows or []:
            for value in row.values():
                total += len(value) if isinstance(value, (str, bytes, bytearray)) else 8
    return total


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def _same(a: Backend, b: Backend) -> bool:
    if isinstance(a.path, Path) and isinstance(b.path, Path):
        try:
            return a.path.resolve() == b.path.resolve()
        except OSError:
            return False
    return str(a.path) == str(b.path)  # team stores: the same (password-free) URL
