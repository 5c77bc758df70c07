"""History at DuckDB speed: SQL and relations over the history tables, frames straight from Arrow.

``query(sql)`` runs one read-only SELECT over the store's tables (``runs``, ``steps``,
``attempts``, ``events``, ``approvals``, ``audit``, ``specs``) and returns a DataFrame.
``history_relation("steps")`` is a DuckDB relation that runs when it is materialized: filters,
projections, aggregations, ordering and limits are DuckDB's own relational methods, replayed on
the store's connection under the lease (so nothing holds the file in between), and only the
result travels to pandas.

Frames come from Arrow in one conversion (``to_pandas(types_mapper=...)``): text columns are
``string`` (Arrow-backed), timestamps are UTC-aware, integer columns with NULLs are ``Int64``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from airun_nb.errors import QueryError
from airun_nb.store import packed
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store

_Db = str | os.PathLike[str] | None
HISTORY_TABLES = ("runs", "steps", "attempts", "events", "approvals", "audit", "specs")
_STRING = pd.StringDtype()
_MAPPED = {pa.string(): _STRING, pa.large_string(): _STRING}
if hasattr(pa, "string_view"):
    _MAPPED[pa.string_view()] = _STRING
# Relational methods replayed on the store's connection; each returns a relation.
_CHAINABLE = frozenset(
    {
        "aggregate",
        "distinct",
        "except_",
        "filter",
        "intersect",
        "join",
        "limit",
        "order",
        "project",
        "select",
        "set_alias",
        "sort",
        "union",
    }
)


def duration_text(seconds: float) -> str:
    """A duration as people read it: ``0.19s``, ``2m03.5s``, ``3h05m``, ``2d04h``."""
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def _readable(col: pd.Series) -> pd.Series:
    return col.map(lambda v: "" if pd.isna(v) else duration_text(v.total_seconds()))


class HistorySeries(pd.Series):
    """A column of a :class:`HistoryFrame` (durations shown as ``0.19s``); what it builds
    (a groupby aggregation, say) stays readable too."""

    @property
    def _constructor(self) -> type[HistorySeries]:
        return HistorySeries

    @property
    def _constructor_expanddim(self) -> type[HistoryFrame]:
        return HistoryFrame

    def __repr__(self) -> str:
        plain = pd.Series(self)
        if not pd.api.types.is_timedelta64_dtype(plain.dtype):
            return repr(plain)
        text = repr(_readable(plain))  # the footer names the real dtype, not the text's
        head, sep, _ = text.rpartition("dtype: ")
        return f"{head}{sep}{plain.dtype}" if sep else text


class HistoryFrame(pd.DataFrame):
    """A history DataFrame: the same data and dtypes (durations stay ``timedelta64``), shown
    with durations written as ``0.19s`` / ``2m03.5s`` instead of ``0 days 00:00:00.194005``."""

    @property
    def _constructor(self) -> type[HistoryFrame]:
        return HistoryFrame

    @property
    def _constructor_sliced(self) -> type[HistorySeries]:
        return HistorySeries

    def shown(self) -> pd.DataFrame:
        """A plain copy for display, durations as text."""
        df = pd.DataFrame(self).copy()
        for i in range(df.shape[1]):
            col = df.iloc[:, i]
            if pd.api.types.is_timedelta64_dtype(col.dtype):
                df.isetitem(i, _readable(col))
        return df

    def __repr__(self) -> str:
        return repr(self.shown())

    def _repr_html_(self) -> str | None:
        html: str | None = self.shown()._repr_html_()  # type: ignore[operator]
        return html


def to_frame(table: pa.Table, duration: tuple[str, str] | None = None) -> pd.DataFrame:
    """An Arrow result as a DataFrame with the history dtypes (see the module docstring)."""
    nullable_ints = []
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            utc = pa.timestamp(field.type.unit, tz="UTC")
            table = table.set_column(i, field.name, table.column(i).cast(utc))
        elif pa.types.is_decimal(field.type):
            # sum() of integers is a HUGEINT, arriving as decimal(38, 0): whole numbers become
            # int64 when they fit, other decimals float64 (as DuckDB's own .df() gives them),
            # never a column of Python Decimal objects.
            table = table.set_column(i, field.name, _from_decimal(table.column(i), field.type))
            if pa.types.is_integer(table.schema.field(i).type) and table.column(i).null_count:
                nullable_ints.append(field.name)
        elif pa.types.is_integer(field.type) and table.column(i).null_count:
            nullable_ints.append(field.name)
    df: pd.DataFrame = table.to_pandas(types_mapper=_MAPPED.get)
    for name in nullable_ints:  # as DuckDB's own .df() gives them: Int64, not float64
        df[name] = pd.Int64Dtype().__from_arrow__(table.column(name))  # type: ignore[attr-defined]
    if duration is not None:
        start, end = duration
        df["duration"] = df[end] - df[start]
    return HistoryFrame(df)


def _from_decimal(column: pa.ChunkedArray, typ: pa.DataType) -> pa.ChunkedArray:
    if typ.scale == 0:
        try:
            return column.cast(pa.int64())
        except (pa.ArrowInvalid, OverflowError):
            pass
    return column.cast(pa.float64())


def arrow_of(
    store: Backend,
    sql: str,
    params: Sequence[Any] = (),
    *,
    run: str | None = None,
    rows: tuple[str, str, list[Any]] | None = None,
) -> pa.Table:
    """Run ``sql`` on the store (every journaled change included) as an Arrow table.
    ``run``: ``sql`` keeps that run's rows only of every table it reads; ``rows``: (table,
    condition, parameters) that ``sql`` keeps no other row of that table than; a team store
    then fetches only those rows."""
    with store.session(reads=sql) as con:
        only_run = getattr(con, "only_run", None)
        if run is not None and only_run is not None:
            only_run(run)
        only_rows = getattr(con, "only_rows", None)
        if rows is not None and only_rows is not None:
            only_rows(*rows)
        return _fetch(con.sql(sql, params=list(params) or None))


def _fetch(rel: duckdb.DuckDBPyRelation | None) -> pa.Table:
    if rel is None:
        return pa.table({})
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    table: pa.Table = fetch()
    return table


def query(sql: str, params: Sequence[Any] = (), *, db: _Db = None) -> pd.DataFrame:
    """Run one SELECT over the history tables and return the result as a DataFrame.

    ``params`` fill ``?`` or ``$1`` placeholders. The query runs in a transaction that is rolled
    back, and anything but a single SELECT is refused, so a query never changes the store.
    """
    statements = _statements(sql)
    store = open_store(db, create=False)
    with store.session("answering a history query") as con:
        packed.expose(con, store.path, statements)  # small output tables, kept as Parquet
        con.execute("BEGIN")
        try:
            table = _fetch(con.sql(statements, params=list(params) or None))
        except duckdb.Error as exc:
            raise QueryError(f"query: {_first_line(exc)}") from None
        finally:
            con.execute("ROLLBACK")
    return to_frame(table)


def _statements(sql: str) -> str:
    try:
        found = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"query: {_first_line(exc)}") from None
    if len(found) != 1:
        raise QueryError(f"query: expected one SELECT statement, got {len(found)}")
    if found[0].type != duckdb.StatementType.SELECT:
        raise QueryError(f"query: only SELECT reads the history (got {found[0].type.name.lower()})")
    return sql.strip().rstrip(";")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class HistoryRelation:
    """A DuckDB relation over one history table, evaluated when it is materialized.

    Call DuckDB's relational methods on it (``filter``, ``project``/``select``, ``aggregate``,
    ``order``/``sort``, ``limit``, ``distinct``, ``join`` with another history relation of the
    same store...); each returns a new ``HistoryRelation``. ``df()``, ``arrow()``,
    ``fetchall()`` and ``fetchone()`` run it in DuckDB and return the result; ``sql`` is the SQL
    DuckDB would run.
    """

    def __init__(self, store: Backend, table: str, ops: tuple[tuple[str, tuple, dict], ...] = ()):
        self._store = store
        self._table = table
        self._ops = ops

    def __getattr__(self, name: str) -> Any:
        if name not in _CHAINABLE:
            raise AttributeError(
                f"HistoryRelation has no '{name}' (relational methods: "
                f"{', '.join(sorted(_CHAINABLE))}; results: df, arrow, fetchall, fetchone)"
            )

        def chained(*args: Any, **kwargs: Any) -> HistoryRelation:
            return HistoryRelation(self._store, self._table, (*self._ops, (name, args, kwargs)))

        return chained

    def _build(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
        rel = con.table(self._table)
        for name, args, kwargs in self._ops:
            args = tuple(a._build(con) if isinstance(a, HistoryRelation) else a for a in args)
            try:
                rel = getattr(rel, name)(*args, **kwargs)
            except (duckdb.Error, TypeError) as exc:
                raise QueryError(
                    f"history_relation('{self._table}').{name}: {_first_line(exc)}"
                ) from None
        return rel

    def _run(self, what: str) -> Any:
        with self._store.session("answering a history query") as con:
            rel = self._build(con)
            try:
                if what == "arrow":
                    return _fetch(rel)
                if what == "sql":
                    return rel.sql_query()
                return getattr(rel, what)()
            except duckdb.Error as exc:
                raise QueryError(f"history_relation('{self._table}'): {_first_line(exc)}") from None

    def arrow(self) -> pa.Table:
        table: pa.Table = self._run("arrow")
        return table

    def df(self) -> pd.DataFrame:
        return to_frame(self.arrow())

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._run("fetchall")
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.limit(1).fetchall()
        return rows[0] if rows else None

    @property
    def sql(self) -> str:
        text: str = self._run("sql")
        return text

    def __repr__(self) -> str:
        chain = "".join(f".{name}(...)" for name, _, _ in self._ops)
        return f"history_relation({self._table!r}){chain}"


def history_relation(table: str, *, db: _Db = None) -> HistoryRelation:
    """A DuckDB relation over one history table (``runs``, ``steps``, ``attempts``, ...)."""
    if table not in HISTORY_TABLES:
        raise QueryError(
            f"history_relation: no history table '{table}' (tables: {', '.join(HISTORY_TABLES)})"
        )
    return HistoryRelation(open_store(db, create=False), table)


# What a bounded query may read from: the history tables, through these kinds of FROM items.
_FROM_KINDS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST"})


def _sources(node: Any, ctes: set[str], out: list[str]) -> None:
    """Collect into ``out`` every FROM item of a parsed statement (DuckDB's JSON form) that a
    bounded query may not read: anything but the history tables and the query's own CTEs."""
    if isinstance(node, dict):
        for entry in (node.get("cte_map") or {}).get("map") or []:
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                ctes.add(entry["key"].lower())
        kind = node.get("type")
        if "sample" in node and "alias" in node and not {"class", "modifiers"} & set(node):
            if kind not in _FROM_KINDS:
                out.append(f"{str(kind).lower().replace('_', ' ')} is not readable here")
            elif kind == "BASE_TABLE":
                name = str(node.get("table_name", "")).lower()
                schema = str(node.get("schema_name", "")).lower()
                if node.get("catalog_name") or schema not in ("", "main"):
                    out.append(f"table {schema}.{name} is not a history table")
                elif name not in HISTORY_TABLES and name not in ctes:
                    out.append(f"table {name} is not a history table")
        for value in node.values():
            _sources(value, ctes, out)
    elif isinstance(node, list):
        for value in node:
            _sources(value, ctes, out)


def bounded_query(
    sql: str, *, db: _Db = None, max_rows: int = 200, seconds: float = 5.0
) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """One SELECT over the history tables only (no other table, file or table function), for a
    caller that is not trusted: at most ``max_rows`` rows, stopped after ``seconds``.

    Returns (columns, rows, truncated). The query runs in a transaction that is rolled back."""
    import json
    import threading

    statements = _statements(sql)
    probe = duckdb.connect()
    try:
        found = probe.execute("SELECT json_serialize_sql(?)", [statements]).fetchone()
        tree = json.loads(found[0]) if found else {"error": True}
    finally:
        probe.close()
    if tree.get("error"):
        raise QueryError(f"query: {str(tree.get('error_message', 'cannot parse')).splitlines()[0]}")
    wrong: list[str] = []
    _sources(tree.get("statements"), set(), wrong)
    if wrong:
        raise QueryError(f"query: {wrong[0]} (readable: {', '.join(HISTORY_TABLES)})")
    store = open_store(db, create=False)
    with store.session("answering a history query") as con:
        timer = threading.Timer(seconds, con.interrupt)
        con.execute("BEGIN")
        timer.start()
        try:
            cur = con.execute(statements)
            columns = [d[0] for d in cur.description or []]
            rows = cur.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise QueryError(
                f"query: stopped after {seconds:g} s (the limit for a query)"
            ) from None
        except duckdb.Error as exc:
            raise QueryError(f"query: {_first_line(exc)}") from None
        finally:
            timer.cancel()
            con.execute("ROLLBACK")
    return columns, rows[:max_rows], len(rows) > max_rows
