"""The store's tables on a PostgreSQL server, built from :data:`~airun_nb.store.schema.TABLES`.

Migrations are versioned (``airun_meta.pg_schema_version``) and run under a session advisory
lock, so several processes that open a new database at once create it exactly once; each one
afterwards adds any table or column that ``TABLES`` gained (a newer airun_nb adds, never drops).
The ``airun_meta`` table with ``app = airun_nb`` marks a database as a store: a database that
holds other tables and no marker belongs to another application and is refused.
"""

from __future__ import annotations

from typing import Any

from airun_nb.errors import StoreIncompatible
from airun_nb.store.schema import APP, OUTPUTS, TABLES  # OUTPUTS: every output table, as Parquet

PG_TYPES = {
    "VARCHAR": "text",
    "BIGINT": "bigint",
    "BLOB": "bytea",
    "DOUBLE": "double precision",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp",  # naive UTC, as in the DuckDB file
}
# Advisory lock keys (one 64-bit space per database): the migration, the events' numbering.
MIGRATION_LOCK = 0x61697275_6E000001
EVENT_SEQ_LOCK = 0x61697275_6E000002
WRITER_LOCK = 0x61697275_6E000003
LEASES = "airun_run_leases"  # runs executing now: holder and lease_until, renewed while held


def table_ddl(name: str) -> str:
    cols, pk = TABLES[name]
    body = ", ".join(f"{c} {PG_TYPES[t]}" for c, t in cols)
    if pk:
        body += f", PRIMARY KEY ({', '.join(pk)})"
    return f"CREATE TABLE IF NOT EXISTS {name} ({body})"


def _v1() -> list[str]:
    out = [
        "CREATE TABLE IF NOT EXISTS airun_meta (key text PRIMARY KEY, value text)",
        f"CREATE TABLE IF NOT EXISTS {OUTPUTS} (name text PRIMARY KEY, created_at timestamp "
        "DEFAULT (now() AT TIME ZONE 'utc'), data bytea NOT NULL)",
    ]
    out += [table_ddl(name) for name in TABLES]
    out += [
        "CREATE INDEX IF NOT EXISTS events_seq ON events (seq)",
        "CREATE INDEX IF NOT EXISTS events_run ON events (run_id, seq)",
        "CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow, created_at)",
        "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at)",
        "CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, opened_at)",
        "INSERT INTO airun_meta VALUES ('event_seq', '0') ON CONFLICT DO NOTHING",
    ]
    return out


def _v2() -> list[str]:
    # Runs executing now: who holds each, and until when its holder last said it is alive.
    return [
        f"CREATE TABLE IF NOT EXISTS {LEASES} (run_id text PRIMARY KEY, owner_host text, "
        "owner_pid bigint, lease_until timestamp NOT NULL)"
    ]


def _v3() -> list[str]:
    # The workers' claim reads the oldest queued rows of its queues (store/queue.py).
    return ["CREATE INDEX IF NOT EXISTS queue_claim ON queue (state, queue, enqueued_at, run_id)"]


# Version -> the statements that bring a database from the version before to it.
MIGRATIONS: dict[int, Any] = {1: _v1, 2: _v2, 3: _v3}
PG_SCHEMA_VERSION = max(MIGRATIONS)


def migrate(con: Any, where: str) -> None:
    """Create or upgrade the store's tables on ``con`` (a psycopg connection in autocommit),
    under the migration lock; refuse a database of another application or a newer airun_nb."""
    con.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
    try:
        with con.transaction():
            _migrate(con, where)
    finally:
        con.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])


def _migrate(con: Any, where: str) -> None:
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    }
    meta: dict[str, str] = {}
    if "airun_meta" in tables:
        meta = dict(con.execute("SELECT key, value FROM airun_meta").fetchall())
    if meta.get("app") not in (None, APP) or (not meta and tables):
        listed = ", ".join(sorted(tables)[:5])
        raise StoreIncompatible(
            f"{where} is a PostgreSQL database of another application (it has tables "
            f"{listed}); give airun_nb a database of its own"
        )
    version = int(meta.get("pg_schema_version", "0"))
    if version > PG_SCHEMA_VERSION:
        raise StoreIncompatible(
            f"{where} was written by a newer airun_nb (server schema {version}; this version "
            f"reads up to {PG_SCHEMA_VERSION}); upgrade airun_nb to open it"
        )
    for v in range(version + 1, PG_SCHEMA_VERSION + 1):
        for stmt in MIGRATIONS[v]():
            con.execute(stmt)
    # Every open: tables and columns TABLES gained since (a newer airun_nb only adds).
    have: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema()"
    ).fetchall():
        have.setdefault(table, set()).add(column)
    for name, (cols, _pk) in TABLES.items():
        if name not in have:
            con.execute(table_ddl(name))
            continue
        for col, typ in cols:
            if col not in have[name]:
                con.execute(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {col} {PG_TYPES[typ]}")
    if version < PG_SCHEMA_VERSION or meta.get("app") != APP:
        con.execute(
            "INSERT INTO airun_meta VALUES ('app', %s), ('pg_schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [APP, str(PG_SCHEMA_VERSION)],
        )
