"""The sql.exec capability: a statement against a DuckDB or SQLite file, undone from table snapshots."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import duckdb

from airun_nb.capabilities import confine
from airun_nb.capabilities.registry import CapabilityError, Context, register
from airun_nb.settings.environment import current as settings_now

SNAPSHOT_MAX_ROWS = 100_000  # default; AIRUN_SNAPSHOT_MAX_ROWS or `snapshot_max_rows` change it

_TOUCH = re.compile(
    r"\b(?:insert\s+(?:or\s+\w+\s+)?into|update|delete\s+from|create\s+(?:or\s+replace\s+)?table"
    r"(?:\s+if\s+not\s+exists)?|drop\s+table(?:\s+if\s+exists)?|alter\s+table|truncate(?:\s+table)?"
    r"|replace\s+into)\s+([\"`\[]?[\w.]+[\"`\]]?)",
    re.IGNORECASE,
)


def touched_tables(sql: str) -> list[str]:
    """Tables a statement writes (best effort, from the SQL text)."""
    out: list[str] = []
    for m in _TOUCH.finditer(sql):
        name = m.group(1).strip('"`[]')
        if name.lower() not in out:
            out.append(name.lower())
    return out


def _db_kind(path: Path) -> str:
    if path.suffix in (".sqlite", ".sqlite3", ".db") and path.suffix != ".duckdb":
        return "sqlite"
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(16)
        if head.startswith(b"SQLite format 3"):
            return "sqlite"
    return "duckdb"


def _sql_connect(path: Path, ctx: Context) -> Any:
    """A connection confined to the workspace (see :mod:`airun_nb.capabilities.confine`)."""
    root, store = ctx.workspace.root, ctx.store_path
    try:
        if _db_kind(path) == "sqlite":
            return confine.sqlite_connect(path, root, store)
        return confine.duckdb_connect(str(path), root, store)
    except (duckdb.Error, sqlite3.Error) as exc:
        raise CapabilityError(
            f"sql.exec: cannot open {path.name}: {str(exc).splitlines()[0]}"
        ) from None


def _table_exists(con: Any, kind: str, table: str) -> bool:
    if kind == "sqlite":
        row = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND lower(name)=?", [table]
        ).fetchone()
    else:
        row = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE lower(table_name)=?", [table]
        ).fetchone()
    return bool(row and row[0])


def _sql_exec_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = ctx.path(args.get("database"), field="database", capability="sql.exec")
    sql = args.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise CapabilityError("sql.exec needs 'sql'")
    kind = _db_kind(path)
    tables = touched_tables(sql)
    limit = int(
        args.get("snapshot_max_rows", settings_now().snapshot_max_rows or SNAPSHOT_MAX_ROWS)
    )
    snapshots: dict[str, str | None] = {}
    con = _sql_connect(path, ctx)
    try:
        for table in tables:
            if not _table_exists(con, kind, table):
                snapshots[table] = None  # created by the statement: undo drops it
                continue
            count = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if count > limit:
                raise CapabilityError(
                    f"sql.exec touches table {table} ({count} rows, more than the {limit}-row "
                    "snapshot limit): declare 'compensate' on the step to undo it yourself"
                )
            dest = ctx.undo_path("tables", f"{table}.json")
            cur = con.execute(f'SELECT * FROM "{table}"')
            cols = [d[0] for d in cur.description]
            rows = [list(r) for r in cur.fetchall()]
            ddl = None
            if kind == "sqlite":
                found = con.execute(
                    "SELECT sql FROM sqlite_master WHERE type='table' AND lower(name)=?", [table]
                ).fetchone()
                ddl = found[0] if found else None
            else:
                found = con.execute(
                    "SELECT sql FROM duckdb_tables() WHERE lower(table_name)=?", [table]
                ).fetchone()
                ddl = found[0] if found else None
            if kind == "sqlite":
                indexes = [
                    r[0]
                    for r in con.execute(
                        "SELECT sql FROM sqlite_master WHERE type='index' AND lower(tbl_name)=? "
                        "AND sql IS NOT NULL",
                        [table],
                    ).fetchall()
                ]
            else:
                indexes = [
                    r[0]
                    for r in con.execute(
                        "SELECT sql FROM duckdb_indexes() WHERE lower(table_name)=? "
                        "AND sql IS NOT NULL",
                        [table],
                    ).fetchall()
                ]
            dest.write_text(
                json.dumps(
                    {"columns": cols, "rows": rows, "ddl": ddl, "indexes": indexes}, default=str
                )
            )
            snapshots[table] = str(dest)
    finally:
        con.close()
    return {"database": str(path), "kind": kind, "snapshots": snapshots}


def _sql_exec_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.path(args.get("database"), field="database", capability="sql.exec")
    con = _sql_connect(path, ctx)
    try:
        cur = con.execute(args["sql"], list(args.get("params") or []))
        rows = None
        if cur.description is not None:
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        if isinstance(con, sqlite3.Connection):
            con.commit()
        return {"rows": rows, "tables": touched_tables(args["sql"])}
    except (duckdb.Error, sqlite3.Error) as exc:
        raise CapabilityError(f"sql.exec: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def _columns(con: Any, table: str) -> list[str] | None:
    try:
        cur = con.execute(f'SELECT * FROM "{table}" LIMIT 0')
    except (duckdb.Error, sqlite3.Error):
        return None
    return [d[0] for d in cur.description]


def _sql_exec_undo(rec: dict[str, Any], ctx: Context) -> None:
    path = Path(rec["database"])

    con = _sql_connect(path, ctx)
    try:
        for table, snap in (rec.get("snapshots") or {}).items():
            if snap is None:
                con.execute(f'DROP TABLE IF EXISTS "{table}"')  # the statement created it
                continue
            data = json.loads(Path(snap).read_text())
            if _columns(con, table) == data["columns"]:
                con.execute(f'DELETE FROM "{table}"')  # same shape: keep the table and indexes
            else:
                con.execute(f'DROP TABLE IF EXISTS "{table}"')
                if data.get("ddl"):
                    con.execute(data["ddl"])
                else:
                    cols = ", ".join(f'"{c}" VARCHAR' for c in data["columns"])
                    con.execute(f'CREATE TABLE "{table}" ({cols})')
                for index_sql in data.get("indexes") or []:
                    con.execute(index_sql)
            if data["rows"]:
                marks = ", ".join("?" for _ in data["columns"])
                con.executemany(f'INSERT INTO "{table}" VALUES ({marks})', data["rows"])
        if isinstance(con, sqlite3.Connection):
            con.commit()
    finally:
        con.close()


register(
    "sql.exec",
    _sql_exec_apply,
    risk="medium",
    prepare=_sql_exec_prepare,
    undo=_sql_exec_undo,
    description="a statement against a DuckDB or SQLite file; undo restores the touched tables",
    plain=False,
)
