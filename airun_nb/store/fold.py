"""Folding: journal records into DuckDB rows, in one transaction per batch.

Records of tables with a primary key are full rows, so the latest record of a row wins
(``INSERT OR REPLACE``); events and audit rows are appended. The transaction also records, for
each journal slot it read, the generation and the byte offset folded up to, so folding again
after a crash is harmless and a slot is never folded twice.

The records reach DuckDB as the JSON text the journal holds: DuckDB parses, groups and inserts
them, one statement a table, so a reader folding thousands of records another process wrote
does not decode them in Python (that was most of a read's time beside busy writers).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import duckdb

from airun_nb.store.crashpoints import crashpoint
from airun_nb.store.journal import meta_keys
from airun_nb.store.schema import _TS, RECORD_TABLE, TABLES, quote_ident

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
    con: duckdb.DuckDBPyConnection,
    records: Sequence[dict[str, Any] | str],
    marks: Sequence[Mark],
) -> int:
    """Fold ``records`` (oldest first; a record is a dict or its JSON text as the journal holds
    it) into DuckDB and set each slot's mark, in one transaction. The records are parsed and
    grouped inside DuckDB (as :func:`group` does: the latest record of a key wins, events and
    audit rows appended in order), one statement a table, however many there are. Returns
    how many records were skipped because they are not JSON objects (none, unless a record's
    checksum matched bytes that are not one)."""
    texts = [r if isinstance(r, str) else encode_record(r) for r in records]
    skipped = 0
    con.execute("BEGIN")
    try:
        if texts:
            skipped = _fold_texts(con, texts)
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
    return skipped


def encode_record(record: dict[str, Any]) -> str:
    """A record's JSON text, as the journal writes it."""
    return json.dumps(record, separators=(",", ":"), default=str)


_RECS = "__airun_recs"
_APPENDED = ("events", "audit")
# The key columns of every keyed table, read from each record with one parse of its text, so
# that only the latest record of each key is turned into a row.
_KEYS = sorted(
    {k for t in RECORD_TABLE.values() if t not in _APPENDED for k in TABLES[t][1]} - {"t", "att"}
)


def parse_texts(con: duckdb.DuckDBPyConnection, texts: list[str]) -> dict[str, int]:
    """Parse the records' JSON texts into the scratch table of records (one row a record: its
    order, text, kind and key columns); how many records of each kind it holds."""
    paths = ", ".join(f"'$.{k}'" for k in ("t", "att", *_KEYS))
    picked = ", ".join(f"k[{i}] AS {quote_ident(k)}" for i, k in enumerate(_KEYS, 3))
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_RECS} AS SELECT ord, rec, k[1] AS t, k[2] AS att, "
        f"{picked} FROM (SELECT ord, rec, json_extract_string(rec, [{paths}]) AS k FROM "
        "(SELECT generate_subscripts(l, 1) AS ord, unnest(l) AS rec "
        " FROM (SELECT string_split(?, chr(10)) AS l)) WHERE json_valid(rec))",
        ["\n".join(texts)],  # JSON text never holds a raw newline
    )
    found = con.execute(f"SELECT t, count(*) FROM {_RECS} GROUP BY t").fetchall()
    return {str(t): int(n) for t, n in found}


def drop_parsed(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"DROP TABLE IF EXISTS {_RECS}")


def keyed_rows(kinds: dict[str, int]) -> dict[str, str]:
    """For each keyed table the parsed records (of ``kinds``) hold rows of: the SELECT of
    those rows, the latest record of each key winning (the fold inserts them, a read lays
    them over the table)."""
    out: dict[str, str] = {}
    for t, table in RECORD_TABLE.items():
        if t in kinds and table not in (*_APPENDED, "attempts"):
            out[table] = _latest(
                table, f"SELECT ord, {_key_of(table)}, rec FROM {_RECS} WHERE t = '{t}'"
            )
    if "step" in kinds or "att" in kinds:
        # ``att`` records, and the attempt a step record carries (its run and step are the
        # step's): the latest of each key wins.
        out["attempts"] = _latest(
            "attempts",
            f"SELECT ord, run_id, step_id, phase, attempt, rec FROM {_RECS} WHERE t = 'att' "
            "UNION ALL SELECT ord, run_id, step_id, p[1], p[2], att FROM (SELECT *, "
            f"json_extract_string(att, ['$.phase', '$.attempt']) AS p FROM {_RECS} "
            "WHERE t = 'step' AND starts_with(att, '{') AND att <> '{}')",
            f"struct_update({_parsed('attempts')}, run_id := run_id, step_id := step_id)",
        )
    return out


def _fold_texts(con: duckdb.DuckDBPyConnection, texts: list[str]) -> int:
    """Parse, group and insert the records' JSON texts in DuckDB (transaction open; the
    scratch table of texts goes with it if it is rolled back)."""
    kinds = parse_texts(con, texts)
    for table, select in keyed_rows(kinds).items():
        con.execute(f"INSERT OR REPLACE INTO {table} {select}")
    if "ev" in kinds:
        rows = con.execute("SELECT value FROM airun_meta WHERE key = 'event_seq'").fetchall()
        if not rows:
            rows = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchall()
        last = int(rows[0][0]) if rows else 0
        seq = "CAST(? AS BIGINT) + row_number() OVER (ORDER BY ord)"
        con.execute(
            f"INSERT INTO events SELECT {_columns('events', seq=seq)} FROM (SELECT ord, "
            f"{_parsed('events')} AS j FROM {_RECS} WHERE t = 'ev') ORDER BY ord",
            [last],
        )
        con.execute(
            "INSERT OR REPLACE INTO airun_meta VALUES ('event_seq', ?)", [str(last + kinds["ev"])]
        )
    if "audit" in kinds:
        con.execute(
            f"INSERT INTO audit SELECT {_columns('audit')} FROM (SELECT ord, "
            f"{_parsed('audit')} AS j FROM {_RECS} WHERE t = 'audit') ORDER BY ord"
        )
    con.execute(f"DROP TABLE {_RECS}")
    return len(texts) - sum(kinds.values())


def _key_of(table: str) -> str:
    return ", ".join(quote_ident(k) for k in TABLES[table][1])


def _latest(table: str, source: str, parsed: str | None = None) -> str:
    """The SELECT of the latest record (by ``ord``) of each key of ``source`` (whose columns
    are ``ord``, the table's key columns as text, and ``rec``) as the table's rows: only
    those are parsed into rows (by ``parsed``, an expression over them)."""
    key = _key_of(table)
    return (
        f"SELECT {_columns(table)} FROM (SELECT "
        f"{parsed or _parsed(table)} AS j FROM ({source}) "
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY ord DESC) = 1)"
    )


def _parsed(table: str) -> str:
    return f"json_transform(rec, '{_shape(table)}')"


_SHAPE_TYPE = {_TS: "DOUBLE", "BLOB": "VARCHAR"}
_shapes: dict[str, str] = {}


def _shape(table: str) -> str:
    """The ``json_transform`` structure of a table's records (timestamps as epoch seconds,
    blobs as base64 text)."""
    if table not in _shapes:
        cols = {c: _SHAPE_TYPE.get(typ, typ) for c, typ in TABLES[table][0]}
        _shapes[table] = json.dumps(cols, separators=(",", ":"))
    return _shapes[table]


def _columns(table: str, **override: str) -> str:
    """The table's columns in order, as expressions over the transformed record ``j``, each
    named as the column (a read lays them over the table by name)."""
    out = []
    for name, typ in TABLES[table][0]:
        col = f"j.{quote_ident(name)}"
        if name in override:
            expr = override[name]
        elif typ == _TS:
            expr = f"make_timestamp(CAST(trunc({col} * 1000000) AS BIGINT))"
        elif typ == "BLOB":
            expr = f"from_base64({col})"
        else:
            expr = col
        out.append(f"{expr} AS {quote_ident(name)}")
    return ", ".join(out)


def _numbered(con: duckdb.DuckDBPyConnection, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with the next numbers of the store's one order (``events.seq``). Folds are
    serial (under the lease, one transaction each), so the numbers never repeat, and a stream
    that read up to N has seen every event numbered N or less, whatever the writers' clocks."""
    rows = con.execute("SELECT value FROM airun_meta WHERE key = 'event_seq'").fetchall()
    if not rows:
        rows = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchall()
    last = int(rows[0][0]) if rows else 0
    out = [dict(ev, seq=last + i) for i, ev in enumerate(events, 1)]
    con.execute("INSERT OR REPLACE INTO airun_meta VALUES ('event_seq', ?)", [str(last + len(out))])
    return out
