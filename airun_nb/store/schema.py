"""The store's schema: its tables and columns, the DDL, and the checks made when a file is opened.

The column lists in :data:`TABLES` are the single source of truth for the DDL, the Arrow batches
folded into DuckDB and the journal records. Each schema version only adds tables or columns, so
an older store is upgraded in place; a newer one, or a DuckDB file of something else, is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from airun_nb.errors import StoreIncompatible

SCHEMA_VERSION = 11
# Version history: 1 runs/steps/attempts/events/specs; 2 adds approvals and audit; 3 adds tokens
# (hashed API tokens of the approval service); 4 adds attempts.traceback (the full traceback of
# a failed attempt); 5 adds runs.forked_from / forked_step (a fork's run and step) and
# steps.fingerprint (a step's code fingerprint components and what changed); 6 adds
# approvals.four_eyes (the launcher may not decide the gate); 7 adds spec_cache (parsed workflows
# by the hash of their text and of the parser, see speccache); 8 adds events.seq (the event's
# place in the store's one order, assigned when it is folded); 9 adds approvals.form_spec (a
# gate's form fields, options and quorum), votes (each person's vote), option and form (the
# decided option and form values); 10 adds queue (runs submitted to a named queue, and which
# worker holds each, see store/queue.py); 11 adds runs.copied_from / origin_launcher (a run
# copied in by pull or push: the store it came from, and who launched it first),
# audit.copied_from (an audit row recorded in another store, and which) and airun_outputs
# (small output tables as Parquet bytes, see store/packed.py; older output tables stay DuckDB
# tables and are read as before). Each version only adds tables or columns, so an older store
# is upgraded in place when it is opened.
APP = "airun_nb"
# Output tables whose Arrow data is small, as Parquet bytes by table name (store/packed.py); the
# team store keeps every output table so, under the same name. Larger ones are DuckDB tables in
# the ``outputs`` schema.
OUTPUTS = "airun_outputs"

# Column lists are the single source of truth for DDL, Arrow batches and journal records.
_TS = "TIMESTAMP"

# Settings every DuckDB connection gets at connect time: never fetch or load extensions.
NO_EXTENSIONS: dict[str, Any] = {
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}
# A store's own connection reads and writes that one file and nothing else: a store file
# someone else made (``airun pull --from``) may hold views that read files of this machine
# (``read_text('~/.config/...')``) or attach other databases; with external access off,
# DuckDB refuses them instead of copying what they read into this store.
STORE_CONFIG: dict[str, Any] = {**NO_EXTENSIONS, "enable_external_access": False}

TABLES: dict[str, tuple[list[tuple[str, str]], tuple[str, ...]]] = {
    "specs": (
        [("spec_hash", "VARCHAR"), ("workflow", "VARCHAR"), ("text", "VARCHAR")],
        ("spec_hash",),
    ),
    "runs": (
        [
            ("run_id", "VARCHAR"),
            ("workflow", "VARCHAR"),
            ("status", "VARCHAR"),
            ("spec_hash", "VARCHAR"),
            ("params", "VARCHAR"),
            ("created_at", _TS),
            ("started_at", _TS),
            ("finished_at", _TS),
            ("updated_at", _TS),
            ("launched_by", "VARCHAR"),
            ("owner_pid", "BIGINT"),
            ("owner_host", "VARCHAR"),
            ("owner_token", "VARCHAR"),
            ("seeded_from", "VARCHAR"),
            ("failed_step", "VARCHAR"),
            ("error", "VARCHAR"),
            ("source", "VARCHAR"),
            ("on_failure", "VARCHAR"),
            ("forked_from", "VARCHAR"),
            ("forked_step", "VARCHAR"),
            ("copied_from", "VARCHAR"),
            ("origin_launcher", "VARCHAR"),
        ],
        ("run_id",),
    ),
    "steps": (
        [
            ("run_id", "VARCHAR"),
            ("step_id", "VARCHAR"),
            ("position", "BIGINT"),
            ("kind", "VARCHAR"),
            ("status", "VARCHAR"),
            ("attempts", "BIGINT"),
            ("def_hash", "VARCHAR"),
            ("code_hash", "VARCHAR"),
            ("eff_hash", "VARCHAR"),
            ("started_at", _TS),
            ("finished_at", _TS),
            ("finish_seq", "BIGINT"),
            ("output_kind", "VARCHAR"),
            ("output_json", "VARCHAR"),
            ("output_table", "VARCHAR"),
            ("output_blob", "BLOB"),
            ("replayed_from", "VARCHAR"),
            ("reason", "VARCHAR"),
            ("error", "VARCHAR"),
            ("compensation", "VARCHAR"),
            ("comp_status", "VARCHAR"),
            ("comp_attempts", "BIGINT"),
            ("comp_error", "VARCHAR"),
            ("comp_finished_at", _TS),
            ("fingerprint", "VARCHAR"),
        ],
        ("run_id", "step_id"),
    ),
    "attempts": (
        [
            ("run_id", "VARCHAR"),
            ("step_id", "VARCHAR"),
            ("phase", "VARCHAR"),
            ("attempt", "BIGINT"),
            ("status", "VARCHAR"),
            ("started_at", _TS),
            ("finished_at", _TS),
            ("error", "VARCHAR"),
            ("pid", "BIGINT"),
            ("traceback", "VARCHAR"),
        ],
        ("run_id", "step_id", "phase", "attempt"),
    ),
    "approvals": (
        [
            ("run_id", "VARCHAR"),
            ("gate_id", "VARCHAR"),
            ("workflow", "VARCHAR"),
            ("status", "VARCHAR"),
            ("message", "VARCHAR"),
            ("preview_text", "VARCHAR"),
            ("preview_html", "VARCHAR"),
            ("approvers", "VARCHAR"),
            ("allow_self_approval", "BOOLEAN"),
            ("four_eyes", "BOOLEAN"),
            ("launched_by", "VARCHAR"),
            ("opened_at", _TS),
            ("deadline", _TS),
            ("on_timeout", "VARCHAR"),
            ("decision", "VARCHAR"),
            ("actor", "VARCHAR"),
            ("channel", "VARCHAR"),
            ("comment", "VARCHAR"),
            ("decided_at", _TS),
            ("form_spec", "VARCHAR"),
            ("votes", "VARCHAR"),
            ("option", "VARCHAR"),
            ("form", "VARCHAR"),
        ],
        ("run_id", "gate_id"),
    ),
    "audit": (
        [
            ("ts", _TS),
            ("kind", "VARCHAR"),
            ("principal", "VARCHAR"),
            ("run_id", "VARCHAR"),
            ("step_id", "VARCHAR"),
            ("capability", "VARCHAR"),
            ("decision", "VARCHAR"),
            ("risk", "VARCHAR"),
            ("rule", "VARCHAR"),
            ("arguments", "VARCHAR"),
            ("result", "VARCHAR"),
            ("undo_ref", "VARCHAR"),
            ("copied_from", "VARCHAR"),
        ],
        (),
    ),
    "events": (
        [
            ("ts", _TS),
            ("run_id", "VARCHAR"),
            ("step_id", "VARCHAR"),
            ("kind", "VARCHAR"),
            ("detail", "VARCHAR"),
            ("seq", "BIGINT"),  # assigned by the fold: the events' one total order
        ],
        (),
    ),
    "tokens": (
        [
            ("token_id", "VARCHAR"),
            ("token_hash", "VARCHAR"),
            ("user_name", "VARCHAR"),
            ("role", "VARCHAR"),
            ("created_at", _TS),
            ("created_by", "VARCHAR"),
            ("revoked_at", _TS),
        ],
        ("token_id",),
    ),
    "spec_cache": (
        [("cache_key", "VARCHAR"), ("created_at", _TS), ("data", "BLOB")],
        ("cache_key",),
    ),
    # A submitted run's place in a queue: queued until a worker claims it, then claimed (by
    # that worker's process), parked while the run waits at a gate, done or failed at the end.
    "queue": (
        [
            ("run_id", "VARCHAR"),
            ("queue", "VARCHAR"),
            ("state", "VARCHAR"),
            ("enqueued_at", _TS),
            ("claimed_at", _TS),
            ("finished_at", _TS),
            ("worker", "VARCHAR"),
            ("worker_pid", "BIGINT"),
            ("worker_host", "VARCHAR"),
            ("worker_token", "VARCHAR"),
            ("claims", "BIGINT"),
            ("trust_code", "BOOLEAN"),
            ("error", "VARCHAR"),
        ],
        ("run_id",),
    ),
}
# Journal record type -> table.
RECORD_TABLE = {
    "spec": "specs",
    "run": "runs",
    "step": "steps",
    "att": "attempts",
    "gate": "approvals",
    "ev": "events",
    "audit": "audit",
    "token": "tokens",
    "queue": "queue",
}


def ddl() -> list[str]:
    out = ["CREATE SCHEMA IF NOT EXISTS outputs"]
    out.append("CREATE TABLE IF NOT EXISTS airun_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    out.append(
        f"CREATE TABLE IF NOT EXISTS {OUTPUTS} (name VARCHAR PRIMARY KEY, created_at {_TS}, "
        "data BLOB NOT NULL)"
    )
    for name, (cols, pk) in TABLES.items():
        body = ", ".join(f"{c} {t}" for c, t in cols)
        if pk:
            body += f", PRIMARY KEY ({', '.join(pk)})"
        out.append(f"CREATE TABLE IF NOT EXISTS {name} ({body})")
    return out


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Create the tables of a new store, upgrade an older one, refuse anything else."""
    try:  # a store: one small read (listing the catalog costs a first query 3x more)
        meta = dict(con.execute("SELECT key, value FROM airun_meta").fetchall())
    except duckdb.CatalogException:
        meta = None
    if meta is None:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        if tables:
            listed = ", ".join(sorted(tables)[:5])
            raise StoreIncompatible(
                f"{path} is a DuckDB database but not an airun_nb store (it has tables "
                f"{listed}); choose another store path"
            )
        con.execute("BEGIN")
        for stmt in ddl():
            con.execute(stmt)
        con.execute(
            "INSERT INTO airun_meta VALUES ('app', ?), ('schema_version', ?)",
            [APP, str(SCHEMA_VERSION)],
        )
        con.execute("COMMIT")
        return
    if meta.get("app") != APP:
        raise StoreIncompatible(f"{path} is not an airun_nb store")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StoreIncompatible(
            f"{path} was written by a newer airun_nb (store schema {version}; this "
            f"version reads up to {SCHEMA_VERSION}); upgrade airun_nb to open it"
        )
    if version < SCHEMA_VERSION:
        con.execute("BEGIN")
        for stmt in ddl():
            con.execute(stmt)
        _add_columns(con)
        if version < 8:  # events recorded before the store numbered them, in time order
            con.execute(
                "UPDATE events SET seq = n.seq FROM (SELECT rowid AS r, row_number() OVER "
                "(ORDER BY ts, rowid) AS seq FROM events) n WHERE events.rowid = n.r"
            )
        con.execute(
            "INSERT OR REPLACE INTO airun_meta VALUES ('schema_version', ?)",
            [str(SCHEMA_VERSION)],
        )
        con.execute("COMMIT")


def _add_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Columns a newer version added to a table that an older store already has."""
    have: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall():
        have.setdefault(table, set()).add(column)
    for name, (cols, _pk) in TABLES.items():
        for col, typ in cols:
            if col not in have.get(name, {col}):
                con.execute(f"ALTER TABLE {name} ADD COLUMN {col} {typ}")


def _sqlite_header(path: Path) -> bool:
    """Does the file start like a SQLite database? (DuckDB, refused its extensions, says
    only that it cannot load one.)"""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def incompatible(path: Path, msg: str) -> StoreIncompatible:
    if "sqlite" in msg.lower() or _sqlite_header(path):
        return StoreIncompatible(f"{path} is a SQLite file, not an airun_nb store (DuckDB)")
    if "not a valid DuckDB database" in msg or "database file" in msg.lower():
        return StoreIncompatible(f"{path} is not an airun_nb store (not a DuckDB database file)")
    if "newer" in msg.lower() or "version" in msg.lower():
        return StoreIncompatible(f"{path} was written by an incompatible DuckDB version: {msg}")
    return StoreIncompatible(f"cannot open the store {path}: {msg.splitlines()[0]}")
