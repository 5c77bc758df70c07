"""Reads beside writers: the journal's unfolded records laid over the tables a read sees.

A read must see every state change committed before it began, and those sit partly in DuckDB
and partly in journal slots not folded yet. Folding them first (parse, ``INSERT OR REPLACE``,
commit) made a reader pay for the writers' work: beside four busy writers, most of a read's time.
A read that only runs a SELECT does not need them folded: the unfolded records (usually a few
hundred) are parsed and grouped by the fold's own SQL (:func:`~airun_nb.store.fold.keyed_rows`:
the latest record of a key wins) into temporary tables, and laid over each keyed table the read
names as a temporary view of the same name for the read's connection::

    runs  =  stored rows whose key has no newer record   UNION ALL   the newest records

The views shadow the tables for the duration of the read and are dropped after it; nothing is
written, and the records stay for the next holder of the lease to fold. Events and audit rows
are numbered as they are folded, so a read that names those tables while such records are
unfolded folds first instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airun_nb.store.fold import drop_parsed, encode_record, keyed_rows, parse_texts
from airun_nb.store.schema import RECORD_TABLE, TABLES, quote_ident

if TYPE_CHECKING:
    import duckdb

AT_MOST = 512  # unfolded records past which a read folds them instead (a fold pays off)

_PREFIX = "__airun_over_"
_SELECT = re.compile(r"\s*(\(\s*)*(SELECT|WITH|FROM)\b", re.IGNORECASE)
_APPENDED = ("events", "audit")


def can_read(sql: str | None) -> bool:
    """Is ``sql`` one statement that only reads (laying records over its tables is enough)?"""
    return (
        bool(sql)
        and _SELECT.match(sql or "") is not None
        and ";" not in (sql or "").rstrip("; \n\t")
    )


def lay(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    records: Sequence[dict[str, Any] | str],
    sql: str,
) -> list[str] | None:
    """Lay ``records`` (oldest first; dicts or the journal's JSON texts) over the keyed tables
    ``sql`` names, as temporary views on ``con``; the tables laid over (for :func:`lift`), or
    None when ``sql`` names events or audit rows that are among the records (they need the
    fold's numbers) or a record is not a JSON object (the fold says so and skips it)."""
    texts = [r if isinstance(r, str) else encode_record(r) for r in records]
    laid: list[str] = []
    try:
        kinds = parse_texts(con, texts)
        appended = {RECORD_TABLE[t] for t in kinds if RECORD_TABLE.get(t) in _APPENDED}
        if sum(kinds.values()) != len(texts) or any(_names(t, sql) for t in appended):
            drop_parsed(con)
            return None
        for table, rows in keyed_rows(kinds).items():
            if not _names(table, sql):
                continue  # a table the statement does not name is not read by it
            over = quote_ident(_PREFIX + table)
            con.execute(f"CREATE OR REPLACE TEMP TABLE {over} AS {rows}")
            laid.append(table)
            match = " AND ".join(
                f"o.{quote_ident(k)} = m.{quote_ident(k)}" for k in TABLES[table][1]
            )
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {quote_ident(table)} AS "
                f"SELECT * FROM {quote_ident(catalog)}.main.{quote_ident(table)} m "
                f"WHERE NOT EXISTS (SELECT 1 FROM {over} o WHERE {match}) "
                f"UNION ALL BY NAME SELECT * FROM {over}"
            )
        drop_parsed(con)
    except BaseException:
        lift(con, laid)
        raise
    return laid


def _names(table: str, sql: str) -> bool:
    """Does ``sql`` name ``table`` (anywhere, as a word: erring towards yes)?"""
    pattern = _NAMED.get(table)
    if pattern is None:
        pattern = _NAMED[table] = re.compile(rf"\b{re.escape(table)}\b", re.IGNORECASE)
    return pattern.search(sql) is not None


_NAMED: dict[str, re.Pattern[str]] = {}


def lift(con: duckdb.DuckDBPyConnection, laid: Sequence[str]) -> None:
    """Drop the views :func:`lay` made: the connection sees the stored tables again."""
    for table in laid:
        con.execute(f"DROP VIEW IF EXISTS temp.main.{quote_ident(table)}")
        con.execute(f"DROP TABLE IF EXISTS temp.main.{quote_ident(_PREFIX + table)}")
