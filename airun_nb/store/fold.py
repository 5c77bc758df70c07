"""Folding: journal records into DuckDB rows, in one transaction per batch.

Records of tables with a primary key are full rows, so the latest record of a row wins
(``INSERT OR REPLACE``); events and audit rows are appended. The transaction also records, for
each journal slot it read, the generation and the byte offset folded up to, so folding again
after a crash is harmless and a slot is never folded twice.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import duckdb

from airun_nb.store.crashpoints import crashpoint
from airun_nb.store.journal import meta_keys
from airun_nb.store.schema import _TS, RECORD_TABLE, TABLES

if TYPE_CHECKING:
    import pyarrow as pa


def batch(table: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Journal records of one table as an Arrow table with the store's column types."""
    import pyarrow as pa  # here, not at import: small folds do without it

    arrow = {
        "VARCHAR": pa.string(),
        "BIGINT": pa.int64(),
        "BLOB": pa.binary(),
        "DOUBLE": pa.float64(),
        "BOOLEAN": pa.bool_(),
    }
    cols, _ = TABLES[table]
    arrays = []
    for name, typ in cols:
        values = [r.get(name) for r in rows]
        if typ == _TS:
            arrays.append(
                pa.array(
                    [None if v is None else int(float(v) * 1_000_000) for v in values],
                    pa.int64(),
                ).cast(pa.timestamp("us"))
            )
        elif typ == "BLOB":
            arrays.append(
                pa.array([None if v is None else base64.b64decode(v) for v in values], pa.binary())
            )
        else:
            arrays.append(pa.array(values, arrow[typ]))
    return pa.Table.from_arrays(arrays, names=[c for c, _ in cols])


Mark = tuple[int, str, int]  # (slot, generation, byte offset folded up to)


def group(
    records: Sequence[dict[str, Any]],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Records (oldest first) by table, as every backend writes them: rows of keyed tables, the
    latest record of a key winning (a step record's attempt included), and appended rows
    (events, audit) in order, copied (a backend numbers its events)."""
    keyed: dict[str, dict[Any, dict[str, Any]]] = {}
    appended: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        t = rec.get("t")
        table = RECORD_TABLE.get(t or "")
        if table is None:
            continue
        if table in ("events", "audit"):
            appended.setdefault(table, []).append(dict(rec))
            continue
        pk = TABLES[table][1]
        keyed.setdefault(table, {})[tuple(rec.get(k) for k in pk)] = rec
        if t == "step" and rec.get("att"):
            att = dict(rec["att"], run_id=rec["run_id"], step_id=rec["step_id"])
            key = (att["run_id"], att["step_id"], att.get("phase"), att.get("attempt"))
            keyed.setdefault("attempts", {})[key] = att
    return {t: list(rows.values()) for t, rows in keyed.items()}, appended


def fold(
    con: duckdb.DuckDBPyConnection, records: Sequence[dict[str, Any]], marks: Sequence[Mark]
) -> None:
    """Fold ``records`` (oldest first) into DuckDB and set each slot's mark, in one
    transaction."""
    grouped, appended = group(records)
    con.execute("BEGIN")
    try:
        if appended.get("events"):
            appended["events"] = _numbered(con, appended["events"])
        for table, rows in grouped.items():
            _insert(con, table, rows, replace=True)
        for table, rows_ in appended.items():
            _insert(con, table, rows_, replace=False)
        for slot, gen, offset in marks:
            gen_key, offset_key = meta_keys(slot)
            con.execute(
                "INSERT OR REPLACE INTO airun_meta VALUES (?, ?), (?, ?)",
                [gen_key, gen, offset_key, str(offset)],
            )
        crashpoint("fold:before_commit")
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    crashpoint("fold:after_commit")


def _numbered(con: duckdb.DuckDBPyConnection, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with the next numbers of the store's one order (``events.seq``). Folds are
    serial (under the lease, one transaction each), so the numbers never repeat, and a stream
    that read up to N has seen every event numbered N or less, whatever the writers' clocks."""
    row = con.execute("SELECT value FROM airun_meta WHERE key = 'event_seq'").fetchone()
    if row is None:
        row = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    last = int(row[0]) if row else 0
    out = [dict(ev, seq=last + i) for i, ev in enumerate(events, 1)]
    con.execute("INSERT OR REPLACE INTO airun_meta VALUES ('event_seq', ?)", [str(last + len(out))])
    return out


# Up to this many rows are inserted as parameters, without Arrow: a reader folding another
# process's few records (``airun runs`` beside a live kernel) then imports no columnar library.
SMALL_BATCH = 64


def _insert(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]], replace: bool
) -> None:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    if len(rows) <= SMALL_BATCH:
        # One statement with a row of parameters per record: ``executemany`` runs the statement
        # once a row, which costs DuckDB 10-40x more than the whole batch at once.
        cols, _ = TABLES[table]
        marks = ", ".join("make_timestamp(?::BIGINT)" if typ == _TS else "?" for _, typ in cols)
        values = ", ".join(f"({marks})" for _ in rows)
        con.execute(
            f"{verb} INTO {table} VALUES {values}", [v for r in rows for v in _params(cols, r)]
        )
        return
    con.register("__airun_batch", batch(table, rows))
    try:
        con.execute(f"{verb} INTO {table} SELECT * FROM __airun_batch")
    finally:
        con.unregister("__airun_batch")


def _params(cols: Sequence[tuple[str, str]], row: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for name, typ in cols:
        v = row.get(name)
        if v is not None and typ == _TS:
            v = int(float(v) * 1_000_000)
        elif v is not None and typ == "BLOB":
            v = base64.b64decode(v)
        out.append(v)
    return out
