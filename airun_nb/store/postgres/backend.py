"""The team store: every run, step, attempt, gate, output and event in a PostgreSQL database.

Each :meth:`PostgresStore.record_many` is one transaction: rows of tables with a primary key are
upserted (``INSERT ... ON CONFLICT DO UPDATE``: the latest record of a row wins, as in the DuckDB
fold), events and audit rows are appended, and events are numbered in commit order under a
transaction advisory lock, so a stream that read up to N never misses an event numbered below N.
A ``NOTIFY airun_nb`` with the runs it touched is delivered when it commits.

A writer's :meth:`~PostgresStore.session` holds a session advisory lock (the server's counterpart
of the DuckDB file's lease), so ``transitions.commit``'s check-then-write is atomic across hosts.
Inside a session the caller gets a DuckDB connection in memory in which the store's tables are
loaded from the server as Arrow tables (through ADBC's PostgreSQL driver) the first time a
statement names them: history's DuckDB SQL runs unchanged, and DuckDB stays the engine that
analyses history. No DuckDB extension is loaded.

Output tables of DataFrame steps are kept as Parquet bytes in ``airun_outputs`` (one row per
table): exact Arrow types round-trip, and a store needs no DDL per step.

A running run holds a session advisory lock on its run id on a connection kept for the run
(:meth:`~PostgresStore.hold_run`), and renews its ``lease_until`` in ``airun_run_leases`` for
other hosts to read: another host asks the server whether the lock is held, so a run whose
owner died (the server drops a dead client's locks) is resumable from any host.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb

from airun_nb.errors import StoreError
from airun_nb.settings import environment as config
from airun_nb.settings.environment import StoreURL
from airun_nb.store import owner, packed
from airun_nb.store.fold import group
from airun_nb.store.postgres import errors
from airun_nb.store.postgres.schema import EVENT_SEQ_LOCK, LEASES, OUTPUTS, WRITER_LOCK, migrate
from airun_nb.store.queries import Queries
from airun_nb.store.queue import CLAIM_SQL_POSTGRES, END_CLAIM_SQL_POSTGRES, QueueStore
from airun_nb.store.redaction import scrub
from airun_nb.store.schema import _TS, NO_EXTENSIONS, TABLES

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

CHANNEL = "airun_nb"  # NOTIFY channel: a commit's run ids, comma-separated
LEASE_SECONDS = 30.0  # a held run's lease_until is renewed every third of this
_EPOCH = datetime(1970, 1, 1)
_READING = ("reading", "answering", "comparing", "planning")
_TABLE_WORDS = {name: re.compile(rf"\b{name}\b", re.IGNORECASE) for name in TABLES}
# A run's progress between its start and its end: no watcher waits on it (gates, runs, events
# and queue rows are what they wait for), and a NOTIFY serializes the commits that send one.
_QUIET = frozenset({"steps", "attempts", "audit"})
_SPARE_RUN_CONNECTIONS = 4
_IDLE_CHECK = 2.0  # seconds: a pooled connection idle longer is checked before use
_LEASE_ROW = (
    "%(run_id)s, %(host)s, %(pid)s, (now() AT TIME ZONE 'utc') + make_interval(secs => %(secs)s)"
)
_RENEW_SQL = (
    f"INSERT INTO {LEASES} VALUES ({_LEASE_ROW}) ON CONFLICT (run_id) DO UPDATE SET "
    "owner_host = EXCLUDED.owner_host, owner_pid = EXCLUDED.owner_pid, "
    "lease_until = EXCLUDED.lease_until"
)
# The run lock and the lease row in one round trip: no row (and no lock) when another holds it.
_HOLD_SQL = (
    f"INSERT INTO {LEASES} SELECT {_LEASE_ROW} WHERE pg_try_advisory_lock(%(key)s) "
    "ON CONFLICT (run_id) DO UPDATE SET owner_host = EXCLUDED.owner_host, "
    "owner_pid = EXCLUDED.owner_pid, lease_until = EXCLUDED.lease_until RETURNING true"
)
_LET_GO_SQL = (
    f"WITH gone AS (DELETE FROM {LEASES} WHERE run_id = %(run_id)s) "
    "SELECT pg_advisory_unlock(%(key)s)"
)
_registry: dict[str, PostgresStore] = {}
_registry_lock = threading.Lock()


def _timestamp(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return _EPOCH + timedelta(microseconds=int(float(v) * 1_000_000))


def _param(typ: str, v: Any) -> Any:
    if v is None:
        return None
    if typ == _TS:
        return _timestamp(v)
    if typ == "BLOB" and isinstance(v, str):
        return base64.b64decode(v)
    return v


_EPOCH_OF = re.compile(r"\bepoch\(([^()]*)\)", re.IGNORECASE)
# DuckDB's own syntax that PostgreSQL lacks: such a read runs on DuckDB over the tables it names.
_DUCKDB_ONLY = re.compile(
    r"\bEXCLUDE\s*\(|\bstrftime\(|\bBY\s+NAME\b|\bmake_timestamp\(|\bQUALIFY\b|"
    r"\bINSERT\s+OR\b|\$\d",
    re.IGNORECASE,
)


def _pg_sql(sql: str) -> str:
    """Portable SQL with ``?`` marks as psycopg wants it (``%s``, a literal ``%`` doubled;
    DuckDB's ``epoch(ts)`` as PostgreSQL says it)."""
    sql = _EPOCH_OF.sub(r"extract(epoch FROM \1)::double precision", sql)
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def run_lock_key(run_id: str) -> int:
    """The advisory lock key of a run: 63 bits of its id's hash."""
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big") >> 1


def worker_lock_key(token: str) -> int:
    """The advisory lock key a worker process holds while it lives (63 bits of its token's
    hash, apart from every run's)."""
    return run_lock_key("worker:" + token)


def _upsert_sql(table: str) -> str:
    cols, pk = TABLES[table]
    names = [c for c, _ in cols]
    marks = ", ".join("%s" for _ in names)
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
    if pk:
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in pk)
        sql += f" ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {sets}"
    return sql


def _row_params(table: str, row: Mapping[str, Any]) -> list[Any]:
    return [_param(typ, row.get(c)) for c, typ in TABLES[table][0]]


class PostgresStore(Queries, QueueStore):
    """A handle on one PostgreSQL store, shared by every thread of a process."""

    row_locks = True  # queue claims with row locks, not the writer lock (store/queue.py)

    def __init__(self, url: StoreURL) -> None:
        self.path = url
        self.url = url
        self._conninfo = url.given
        self._mutex = threading.RLock()
        self._depth = 0
        self._writer: Any = None  # the connection holding the writer lock in a session
        self._adbc: Any = None
        self._adbc_lock = threading.Lock()
        self._runs: dict[str, Any] = {}  # run id -> the connection holding its run lock
        self._runs_lock = threading.Lock()
        self._spare: list[Any] = []  # run-lock connections that hold no lock now
        self._worker_con: Any = None  # the connection holding this process's worker lock
        self._returned: dict[int, float] = {}  # pooled connection -> when it came back
        self._pool: Any = None
        self.folds = 0
        self._changed = threading.Condition()
        self._notified = 0
        self._listener: threading.Thread | None = None
        self._closed = False
        self._heart: threading.Thread | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, url: StoreURL, *, create: bool = True) -> PostgresStore:
        """The store at ``url``: tables created or upgraded on first open in this process."""
        key = str(url)
        with _registry_lock:
            store = _registry.get(key)
            if store is not None:
                return store
            if "***@" in url.given:
                raise StoreError(
                    f"{url}: the password of a team store is never kept; give it in PGPASSWORD "
                    "or ~/.pgpass"
                )
            store = cls(url)
            store._connect()
            _registry[key] = store
            return store

    def _connect(self) -> None:
        try:
            import psycopg
            import psycopg_pool
        except ImportError:
            raise errors.missing_driver(str(self.url), "psycopg") from None
        try:
            con = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=15)
        except psycopg.Error as exc:
            raise errors.fault(exc, str(self.url), "open the store") from None
        try:
            with con:
                migrate(con, str(self.url))
        except psycopg.Error as exc:
            raise errors.fault(exc, str(self.url), "open the store") from None
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=16,
            kwargs={"autocommit": True},
            check=self._check_idle,  # a dropped one is replaced
            reset=self._stamp,
            timeout=config.lock_timeout(),
            open=True,
            name="airun_nb",
        )

    def _stamp(self, con: Any) -> None:
        """The pool took ``con`` back: when (a connection in steady use is not pinged)."""
        if len(self._returned) > 256:  # ids of connections closed long ago
            self._returned.clear()
        self._returned[id(con)] = time.monotonic()

    def _check_idle(self, con: Any) -> None:
        """Before the pool hands ``con`` out: one round trip to see that it still works, when
        it sat idle long enough for the server to have gone away meanwhile."""
        import psycopg_pool

        back = self._returned.get(id(con))
        if back is None or time.monotonic() - back > _IDLE_CHECK:
            try:
                psycopg_pool.ConnectionPool.check_connection(con)
            except Exception:
                self._returned.clear()  # one is dead: check the others too before use
                raise

    @contextlib.contextmanager
    def _con(self, doing: str) -> Iterator[Any]:
        """A pooled connection (autocommit); a driver error becomes one line."""
        import psycopg
        import psycopg_pool

        try:
            with self._pool.connection() as con:
                yield con
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if isinstance(exc, psycopg.OperationalError):  # the server went away, maybe:
                self._returned.clear()  # every pooled connection is checked before its use
            raise errors.fault(exc, str(self.url), doing) from None

    # -- sessions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(
        self,
        purpose: str = "reading",
        *,
        fold: bool = True,
        peers: bool = True,
        reads: str | None = None,
    ) -> Iterator[Snapshot]:
        """Hold the store for the block: a writer (any purpose but reading) holds the writer
        advisory lock, so what it reads and what it then commits are not interleaved with
        another process's writer. Yields a DuckDB connection with the store's tables."""
        import psycopg

        reading = purpose.startswith(_READING)
        with self._mutex:
            took = False
            if not reading and self._writer is None:
                con = self._pool.getconn()
                try:
                    con.execute(f"SET lock_timeout = '{int(config.lock_timeout() * 1000)}ms'")
                    con.execute("SELECT pg_advisory_lock(%s)", [WRITER_LOCK])
                except psycopg.Error as exc:
                    self._pool.putconn(con)
                    raise errors.fault(exc, str(self.url), purpose.split(" ", 1)[0]) from None
                self._writer, took = con, True
            self._depth += 1
            snap = Snapshot(self)
            try:
                yield snap
            finally:
                snap.close()
                self._depth -= 1
                if took:
                    con, self._writer = self._writer, None
                    try:
                        con.execute("SELECT pg_advisory_unlock(%s)", [WRITER_LOCK])
                    except psycopg.Error:
                        con.close()  # the server drops the lock with the connection
                    self._pool.putconn(con)

    # -- writes ----------------------------------------------------------------------------
    def record(self, rec: dict[str, Any]) -> None:
        self.record_many((rec,))

    def record_many(self, recs: Sequence[dict[str, Any]]) -> None:
        """Write ``recs`` in one transaction: durable on the server when this returns."""
        clean = [scrub(r) for r in recs]
        keyed, appended = group(clean)
        events = appended.get("events", [])
        runs = sorted({str(r["run_id"]) for r in clean if r.get("run_id")})
        # One pipeline: the statements go to the server together (two round trips with events,
        # whose numbers must be read back, else one), and commit as one transaction.
        with self._con("write to") as con, con.pipeline(), con.transaction():
            if events:
                con.execute("SELECT pg_advisory_xact_lock(%s)", [EVENT_SEQ_LOCK])
                row = con.execute(
                    "UPDATE airun_meta SET value = (value::bigint + %s)::text "
                    "WHERE key = 'event_seq' RETURNING value::bigint",
                    [len(events)],
                ).fetchone()
                assert row is not None, "airun_meta lost its event_seq row"
                first = int(row[0]) - len(events) + 1
                for i, ev in enumerate(events):
                    ev["seq"] = first + i
            with con.cursor() as cur:
                for table, rows in [*keyed.items(), *appended.items()]:
                    cur.executemany(_upsert_sql(table), [_row_params(table, r) for r in rows])
            if (set(keyed) | set(appended)) - _QUIET:
                payload = ",".join(runs)
                con.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload[:7000]])

    def claim_queue_rows(
        self, queues: Sequence[str], limit: int, old: str, new: str, holder: Mapping[str, Any]
    ) -> list[str]:
        """Move up to ``limit`` rows of ``queues`` from ``old`` to ``new`` for ``holder`` in one
        statement (``FOR UPDATE SKIP LOCKED``); call only from ``transitions.claim_queued``."""
        params = {"queues": list(queues), "limit": limit, "from": old, "to": new, **holder}
        with self._con("claim queued runs in") as con, con.pipeline(), con.transaction():
            got = con.execute(CLAIM_SQL_POSTGRES, params).fetchall()
            if got:  # an empty queue looked at by idle workers wakes no watcher
                con.execute("SELECT pg_notify(%s, %s)", [CHANNEL, ",".join(r[0] for r in got)])
        got.sort(key=lambda r: (r[1], r[0]))  # oldest first
        return [str(r[0]) for r in got]

    def move_queue_row(
        self, run_id: str, old: str, new: str, holder: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> bool:
        """Move ``run_id``'s queue row from ``old`` to ``new`` while ``holder`` holds it;
        call only from ``transitions.end_claim``."""
        params = {"run_id": run_id, "from": old, "to": new, **holder}
        params |= {"finished_at": _timestamp(changes.get("finished_at"))}
        params |= {"error": changes.get("error"), "clear": "worker_token" in changes}
        with self._con("end a claim in") as con, con.pipeline(), con.transaction():
            moved = bool(con.execute(END_CLAIM_SQL_POSTGRES, params).fetchall())
            if moved:
                con.execute("SELECT pg_notify(%s, %s)", [CHANNEL, run_id])
        return moved

    def sync(self) -> None:
        """Nothing to do: every commit is durable on the server when it returns."""

    def flush(self) -> None:
        """Nothing to do: records are written to the tables as they come."""

    def let_go(self) -> None:
        """Every commit is on the server already: let go of the connections."""
        self.release()

    def release(self) -> None:
        """Let go of every connection of this process (the next use opens them again)."""
        with self._mutex, self._adbc_lock:
            self._close_adbc()

    def _close_adbc(self) -> None:
        if self._adbc is not None:
            with contextlib.suppress(Exception):
                self._adbc.close()
        self._adbc = None

    # -- reads -----------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if _DUCKDB_ONLY.search(sql):
            with self.session() as snap:
                found: list[tuple[Any, ...]] = snap.execute(sql, list(params)).fetchall()
                return found
        with self._con("read") as con:
            rows: list[tuple[Any, ...]] = con.execute(_pg_sql(sql), list(params)).fetchall()
            return rows

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if _DUCKDB_ONLY.search(sql):
            with self.session() as snap:
                cur = snap.execute(sql, list(params))
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        with self._con("read") as con:
            cur = con.execute(_pg_sql(sql), list(params))
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def query_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """The rows of ``sql`` as DuckDB returns them (the same dtypes on both backends)."""
        with self.session() as con:
            return con.execute(sql, list(params)).df()

    def arrow(self, sql: str) -> pa.Table:
        """A whole query's result as Arrow (ADBC's PostgreSQL driver, columnar end to end)."""
        with self._adbc_lock:
            try:
                return self._fetch(self._adbc_con(), sql)
            except StoreError:
                raise
            except Exception as exc:  # the driver's errors have no common base worth naming
                self._close_adbc()
                raise errors.fault(exc, str(self.url), "read") from None

    def read_table(
        self,
        name: str,
        cols: Sequence[str],
        run: str | None = None,
        where: str | None = None,
        params: Sequence[Any] = (),
    ) -> pa.Table:
        """Columns ``cols`` of the store's table ``name`` as Arrow, in that order; ``run``:
        that run's rows only; ``where``: the rows that match it (PostgreSQL SQL over the
        table's columns, ``%s`` for each of ``params``).

        What costs is the rows' trip: the server encodes every field of every row, and the
        driver decodes each, both on one core per connection. So a large table is read in
        block ranges at once on several connections sharing one snapshot (the rows of one
        moment, each once), and the text, integer and timestamp columns the server's
        statistics find NULL in most rows travel as one text array a row, itself NULL when
        they all are (one field to decode, not one each), cast back on arrival."""
        rows = [(f"({where})", list(params))] if where else []
        rows += [("run_id = %s", [run])] if run is not None else []
        kept = self._literal(" AND ".join(w for w, _ in rows), [p for _, ps in rows for p in ps])
        if run is not None:  # a few rows: as they are, one statement
            table = self.arrow(f"SELECT {', '.join(cols)} FROM {name} WHERE {kept}")
            return table.replace_schema_metadata(None)
        size, block, version, sparse = self.query(
            "SELECT pg_relation_size(?::regclass), current_setting('block_size')::int, "
            "current_setting('server_version_num')::int, ARRAY(SELECT attname::text FROM "
            "pg_stats WHERE schemaname = current_schema() AND tablename = ? AND null_frac >= ?)",
            [name, name, SPARSE_SHARE],
        )[0]
        types, sparse = dict(TABLES[name][0]), set(sparse or ())
        packed = [c for c in cols if c in sparse and types[c] in _AS_TEXT]
        packed = packed if len(packed) > 1 else []
        listed = [c for c in cols if c not in packed]
        if packed:
            some = ", ".join(packed)
            texts = ", ".join(_AS_TEXT[types[c]].format(c) for c in packed)
            listed.append(
                f"CASE WHEN num_nonnulls({some}) = 0 THEN NULL ELSE ARRAY[{texts}] END AS {_PACKED}"
            )
        sql = f"SELECT {', '.join(listed)} FROM {name}"
        parts = min(PARTS, max(1, int(size) // SPLIT_BYTES + 1)) if int(version) >= 140000 else 1
        if parts == 1:
            table = self.arrow(f"{sql} WHERE {kept}" if kept else sql)
        else:
            blocks = -(-int(size) // int(block) // parts)  # blocks a part, rounded up
            table = self._read_parts(sql, blocks, parts, kept)
        table = table.replace_schema_metadata(None)
        if not packed:
            return table
        import pyarrow as pa
        import pyarrow.compute as pc

        arrays = table.column(_PACKED)
        unpacked = {c: pc.list_element(arrays, i) for i, c in enumerate(packed)}
        for c in packed:
            if types[c] == "BIGINT":
                unpacked[c] = unpacked[c].cast(pa.int64())
            elif types[c] == _TS:
                unpacked[c] = unpacked[c].cast(pa.timestamp("us"))
        return pa.table([unpacked[c] if c in unpacked else table.column(c) for c in cols], cols)

    def _literal(self, where: str, params: Sequence[Any]) -> str:
        """``where`` with each ``%s`` replaced by its parameter, quoted as this server reads a
        literal ("" for no condition)."""
        if not where:
            return ""
        import psycopg.sql

        quoted = [psycopg.sql.Literal(p) for p in params]
        with self._con("read") as con:
            text: str = psycopg.sql.SQL(where.replace("%s", "{}")).format(*quoted).as_string(con)
        return text

    def _read_parts(self, sql: str, blocks: int, parts: int, kept: str = "") -> pa.Table:
        """``sql`` (one table, no WHERE) read as ``parts`` ranges of ``blocks`` blocks at once:
        the first on the store's ADBC connection, which exports its snapshot, each other one on
        a connection of its own that imports it and is closed after the read (a process keeps
        no idle connections for its next large read)."""
        import pyarrow as pa

        ranges = [f"ctid < '({blocks},0)'::tid"]
        for i in range(1, parts):
            ranges.append(f"ctid >= '({i * blocks},0)'::tid")
            if i < parts - 1:
                ranges[-1] += f" AND ctid < '({(i + 1) * blocks},0)'::tid"
        if kept:
            ranges = [f"{r} AND {kept}" for r in ranges]

        def part(i: int, snapshot: str) -> pa.Table:
            con = self._adbc_connect()
            try:
                with con.cursor() as cur:
                    cur.execute(f"SET TRANSACTION ISOLATION LEVEL {_SHARED}")
                    cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                return self._fetch(con, f"{sql} WHERE {ranges[i]}")
            finally:
                with contextlib.suppress(Exception):
                    con.close()

        with self._adbc_lock:
            try:
                first = self._adbc_con()
                with first.cursor() as cur:
                    cur.execute(f"SET TRANSACTION ISOLATION LEVEL {_SHARED}")
                    cur.execute("SELECT pg_export_snapshot()")
                    found = cur.fetchone()
                snapshot = str(found[0]) if found else ""
                with ThreadPoolExecutor(parts - 1, thread_name_prefix="airun-read") as pool:
                    others = [pool.submit(part, i, snapshot) for i in range(1, parts)]
                    try:  # the snapshot lives as long as its transaction: until all imported it
                        got = [self._fetch(first, f"{sql} WHERE {ranges[0]}", end=False)]
                    finally:
                        got += [f.result() for f in others]
                first.commit()
                return pa.concat_tables(got)
            except Exception as exc:  # the driver's errors have no common base worth naming
                self._close_adbc()
                if isinstance(exc, StoreError):
                    raise
                raise errors.fault(exc, str(self.url), "read") from None

    def _adbc_con(self) -> Any:
        """The ADBC connection (made on first use); call with ``_adbc_lock`` held."""
        if self._adbc is None:
            self._adbc = self._adbc_connect()
        return self._adbc

    def _adbc_connect(self) -> Any:
        try:
            import adbc_driver_postgresql.dbapi as adbc
        except ImportError:
            raise errors.missing_driver(str(self.url), "adbc-driver-postgresql") from None
        return adbc.connect(_libpq_uri(self._conninfo))

    @staticmethod
    def _fetch(con: Any, sql: str, *, end: bool = True) -> pa.Table:
        """``sql``'s rows on ``con``; with ``end``, its transaction ended (the next statement
        starts one)."""
        with con.cursor() as cur:
            cur.execute(sql)
            table: pa.Table = cur.fetch_arrow_table()
        if end:
            con.commit()
        return table

    # -- DataFrame outputs -----------------------------------------------------------------
    def put_table(self, name: str, table: pa.Table) -> None:
        """Store an Arrow table (as Parquet bytes) under ``name``, committed."""
        with self._con("write a step output to") as con:
            con.execute(
                f"INSERT INTO {OUTPUTS} (name, data) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data, "
                "created_at = now() AT TIME ZONE 'utc'",
                [name, packed.to_parquet(table)],
            )

    def get_table(self, name: str, *, large: bool = False) -> pa.Table:
        # Parquet bytes: a frame's strings come back as they were written (large from pandas)
        rows = self.query(f"SELECT data FROM {OUTPUTS} WHERE name = ?", [name])
        if not rows:
            raise StoreError(f"no output table '{name}' in {self.url}")
        return packed.from_parquet(rows[0][0], name, self.url)

    def has_table(self, name: str) -> bool:
        return bool(self.query(f"SELECT 1 FROM {OUTPUTS} WHERE name = ?", [name]))

    # -- moving runs between stores -------------------------------------------------------
    def export_run(self, run_id: str) -> dict[str, Any]:
        """Every row of the run, table by table, and its output tables' Arrow data under
        ``"__outputs__"`` (``{table name: pyarrow.Table}``)."""
        if not self.has_run(run_id):
            raise StoreError(f"no run '{run_id}' in {self.url}")
        bundle: dict[str, Any] = {}
        for table, (cols, _pk) in TABLES.items():
            if any(c == "run_id" for c, _ in cols):
                bundle[table] = self.query_dicts(
                    f"SELECT * FROM {table} WHERE run_id = ?", [run_id]
                )
        bundle["specs"] = self.query_dicts(
            "SELECT s.* FROM specs s JOIN runs r USING (spec_hash) WHERE r.run_id = ?", [run_id]
        )
        names = {str(r["output_table"]) for r in bundle.get("steps", []) if r.get("output_table")}
        bundle["__outputs__"] = {n: self.get_table(n) for n in sorted(names) if self.has_table(n)}
        return bundle

    def import_run(self, bundle: Mapping[str, Any]) -> None:
        """Write an exported run into this store in one transaction; a run id that is here
        already is refused (nothing written)."""
        import pyarrow.parquet as pq

        runs = bundle.get("runs") or []
        if len(runs) != 1:
            raise StoreError("a run to import holds exactly one run row")
        run_id = str(runs[0]["run_id"])
        events = [dict(e) for e in bundle.get("events") or []]
        events.sort(key=lambda e: (e.get("seq") is None, e.get("seq") or 0))
        with self._con("import a run into") as con, con.transaction():
            cur = con.execute("SELECT * FROM runs WHERE run_id = %s FOR UPDATE", [run_id])
            found = cur.fetchone()
            if found is not None:
                self._make_room(
                    con,
                    run_id,
                    dict(zip([d.name for d in cur.description or ()], found, strict=True)),
                    bundle,
                )
            with con.cursor() as cur:
                for table in TABLES:
                    rows = bundle.get(table) or []
                    if not rows or table == "events":
                        continue
                    sql = _upsert_sql(table)
                    if table == "specs":
                        sql = sql.split(" ON CONFLICT")[0] + " ON CONFLICT DO NOTHING"
                    cur.executemany(sql, [_row_params(table, r) for r in rows])
                if events:
                    con.execute("SELECT pg_advisory_xact_lock(%s)", [EVENT_SEQ_LOCK])
                    row = con.execute(
                        "UPDATE airun_meta SET value = (value::bigint + %s)::text "
                        "WHERE key = 'event_seq' RETURNING value::bigint",
                        [len(events)],
                    ).fetchone()
                    first = int(row[0]) - len(events) + 1
                    for i, ev in enumerate(events):  # this store's order: after what it has
                        ev["seq"] = first + i
                    cur.executemany(
                        _upsert_sql("events"), [_row_params("events", e) for e in events]
                    )
                for name, table in (bundle.get("__outputs__") or {}).items():
                    buf = io.BytesIO()
                    pq.write_table(table, buf)
                    cur.execute(
                        f"INSERT INTO {OUTPUTS} (name, data) VALUES (%s, %s) "
                        "ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data",
                        [name, buf.getvalue()],
                    )
            con.execute("SELECT pg_notify(%s, %s)", [CHANNEL, run_id])

    def _make_room(
        self, con: Any, run_id: str, here: dict[str, Any], bundle: Mapping[str, Any]
    ) -> None:
        """The store's own copy of ``run_id`` removed (in the import's transaction) when the
        bundle says ``replace`` and no process executes it here; else one line, nothing
        written."""
        from airun_nb.store import transfer

        if not transfer.meta_of(bundle).get("replace"):
            raise StoreError(f"run {run_id} is already in {self.url}; nothing copied")
        if transfer.executing_here(here, self.owner_alive):
            raise StoreError(transfer.busy_line(run_id, here, self.url))
        for table in transfer.RUN_TABLES:
            if table != "specs":
                con.execute(f"DELETE FROM {table} WHERE run_id = %s", [run_id])
        con.execute(
            f"DELETE FROM {OUTPUTS} WHERE name LIKE %s OR name IN (%s, %s)",
            [f"{run_id}/%", f"code/{run_id}", f"code/{run_id}/sources"],
        )

    # -- the spec cache --------------------------------------------------------------------
    def cached_spec(self, key: str) -> bytes | None:
        rows = self.query("SELECT data FROM spec_cache WHERE cache_key = ?", [key])
        return bytes(rows[0][0]) if rows else None

    def cache_spec(self, key: str, data: bytes) -> None:
        with self._con("write to") as con:
            con.execute(
                "INSERT INTO spec_cache VALUES (%s, now() AT TIME ZONE 'utc', %s) "
                "ON CONFLICT (cache_key) DO UPDATE SET data = EXCLUDED.data",
                [key, data],
            )

    # -- time, owners, notifications -------------------------------------------------------
    def clock(self) -> float:
        """The server's clock (epoch seconds): gate deadlines are set and checked by it."""
        return float(self.query("SELECT extract(epoch FROM clock_timestamp())")[0][0])

    def hold_run(self, run_id: str) -> bool:
        """Hold ``run_id``'s advisory lock on a connection kept while the run executes here
        (False: another process holds it). The lock and the lease row are taken by one
        statement; the connection is one this process kept from an earlier run when it can."""
        import psycopg

        with self._runs_lock:
            if run_id in self._runs:
                return True
            con = None
            try:
                con = self._spare.pop() if self._spare else None
                if con is None or con.closed:
                    con = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=15)
                got = con.execute(_HOLD_SQL, self._lease_params(run_id)).fetchone()
            except psycopg.Error as exc:
                if con is not None:
                    con.close()
                raise errors.fault(exc, str(self.url), "claim a run in") from None
            if not got:
                self._keep_spare(con)
                return False
            self._runs[run_id] = con
            if self._heart is None or not self._heart.is_alive():
                self._heart = threading.Thread(
                    target=self._heartbeat, name="airun-run-leases", daemon=True
                )
                self._heart.start()
            return True

    def _lease_params(self, run_id: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "host": owner.HOST,
            "pid": os.getpid(),
            "secs": LEASE_SECONDS,
            "key": run_lock_key(run_id),
        }

    def _keep_spare(self, con: Any) -> None:
        """Keep a run-lock connection that holds no lock for the next run (or close it)."""
        if len(self._spare) < _SPARE_RUN_CONNECTIONS and not con.closed:
            self._spare.append(con)
        else:
            con.close()

    def _renew(self, run_id: str, con: Any) -> None:
        """Say until when this process holds ``run_id`` (``lease_until``, on the server's
        clock): what other hosts read; the run lock is what decides."""
        con.execute(_RENEW_SQL, self._lease_params(run_id))

    def _heartbeat(self) -> None:
        while not self._closed:
            time.sleep(LEASE_SECONDS / 3)
            with self._runs_lock:
                held = list(self._runs.items())
                if not held:
                    self._heart = None
                    return
                for run_id, con in held:
                    with contextlib.suppress(Exception):
                        self._renew(run_id, con)

    def run_lease(self, run_id: str) -> dict[str, Any] | None:
        """Who holds ``run_id`` now and until when (None: nobody said so)."""
        rows = self.query_dicts(f"SELECT * FROM {LEASES} WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def let_go_run(self, run_id: str) -> None:
        with self._runs_lock:
            con = self._runs.pop(run_id, None)
            if con is None:
                return
            try:
                # Unlocked before the connection is used again or closed (the server ends a
                # closed session a moment later, and a resume in this process must not find
                # the lock still held): one statement drops the lease row and the lock.
                con.execute(_LET_GO_SQL, self._lease_params(run_id))
            except Exception:  # the lock goes with the connection
                with contextlib.suppress(Exception):
                    con.close()  # closing the connection drops its lock on the server too
                return
            self._keep_spare(con)

    def hold_worker(self) -> None:
        """Hold this process's worker lock (keyed by its token) on a connection kept while it
        lives: the server drops it when the process dies, on any host."""
        import psycopg

        with self._runs_lock:
            if self._worker_con is not None and not self._worker_con.closed:
                return
            try:
                con = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=15)
                con.execute("SELECT pg_advisory_lock(%s)", [worker_lock_key(owner.MY_TOKEN)])
            except psycopg.Error as exc:
                raise errors.fault(exc, str(self.url), "serve the queues of") from None
            self._worker_con = con

    def worker_alive(self, worker: Mapping[str, Any]) -> bool:
        """Is the worker process that holds a claim alive, on any host? On this host its pid
        says, at once; on another its worker lock (which the server drops once it sees the
        process's connection go)."""
        token = worker.get("owner_token")
        if not token or worker.get("owner_host") == owner.HOST:
            return super().worker_alive(worker)
        return self._lock_held(worker_lock_key(str(token)))

    def _lock_held(self, key: int) -> bool:
        found = self.query(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
            "((classid::bigint << 32) | objid::bigint) = ?",
            [key],
        )
        return bool(found)

    def owner_alive(self, row: Mapping[str, Any]) -> bool:
        """Is the process recorded as executing this run alive, on any host? Its run lock
        says: the server drops the locks of a client that died."""
        run_id = str(row.get("run_id"))
        if not row.get("owner_pid"):
            return False
        if (
            row.get("owner_host") == owner.HOST
            and row.get("owner_token") == owner.MY_TOKEN
            and int(row["owner_pid"]) == os.getpid()
        ):
            return owner.owner_alive(row)  # this process: is the run executing in it?
        if row.get("owner_host") == owner.HOST and not owner.owner_alive(row):
            return False  # its process is gone: no need to wait for the server to notice
        return self._lock_held(run_lock_key(run_id))

    def change_token(self) -> int:
        """A number that grows with every commit notified on the server (``LISTEN`` in a
        thread of this process, started on first use; a lost connection counts as a change)."""
        self._listen()
        return self._notified

    def wait_for_change(self, timeout: float, stop: Callable[[], bool] | None = None) -> bool:
        """Wait until another commit is notified (True) or ``timeout`` seconds pass."""
        self._listen()
        with self._changed:
            start = self._notified
            self._changed.wait_for(
                lambda: self._notified != start or bool(stop and stop()), timeout=timeout
            )
            return self._notified != start

    def _listen(self) -> None:
        with self._changed:
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(
                    target=self._listening, name="airun-store-listener", daemon=True
                )
                self._listener.start()

    def _listening(self) -> None:
        import psycopg

        while not self._closed:
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=15) as con:
                    con.execute(f"LISTEN {CHANNEL}")
                    self._bump()  # anything committed before LISTEN: look once
                    while not self._closed:
                        for _ in con.notifies(timeout=1.0):
                            self._bump()
            except psycopg.Error:
                self._bump()
                time.sleep(1.0)

    def _bump(self) -> None:
        with self._changed:
            self._notified += 1
            self._changed.notify_all()


def _libpq_uri(conninfo: str) -> str:
    return conninfo if conninfo.startswith("postgresql://") else "postgresql" + conninfo[8:]


# Reading a table: one larger than SPLIT_BYTES on the server is read in up to PARTS block ranges
# at once (a connection each, sharing one snapshot); text columns NULL in SPARSE_SHARE of the
# rows or more (by the server's statistics) travel packed in one array a row.
SPLIT_BYTES = 16 << 20
PARTS = max(2, min(4, os.cpu_count() or 2))
SPARSE_SHARE = 0.9
_PACKED = "airun_packed"  # no store table has a column of that name
# A packed column's text on the server, by its type in TABLES (Arrow casts it back exactly).
_AS_TEXT = {
    "VARCHAR": "{}",
    "BIGINT": "{}::text",
    _TS: """to_char({}, 'YYYY-MM-DD"T"HH24:MI:SS.US')""",
}
_SHARED = "REPEATABLE READ"  # a snapshot is exported from and imported into such transactions

_planner: duckdb.DuckDBPyConnection | None = None
_planner_lock = threading.Lock()
# The planner reads every column a statement needs off the table scans of its plan: filters
# stay above the scans (so their columns are scanned), and empty tables are not folded away.
_PLANNER_OFF = (
    "statistics_propagation,empty_result_pullup,compressed_materialization,filter_pushdown"
)


def _scans(sql: str, params: Any = None) -> dict[str, set[str] | None]:
    """The store's tables ``sql`` reads and the columns it reads of each (None: every column),
    from DuckDB's own plan of it over empty tables of the same shape; by the tables' names in
    the text when DuckDB cannot plan it alone (a statement naming an output table, say)."""
    global _planner
    named: dict[str, set[str] | None] = {
        n: None for n, word in _TABLE_WORDS.items() if word.search(sql)
    }
    if not named:
        return {}
    try:
        with _planner_lock:
            if _planner is None:
                con = duckdb.connect(":memory:", config=dict(NO_EXTENSIONS))
                con.execute("CREATE SCHEMA outputs")
                for name, (cols, _pk) in TABLES.items():
                    body = ", ".join(f"{c} {typ}" for c, typ in cols)
                    con.execute(f"CREATE TABLE {name} ({body})")
                con.execute(f"SET disabled_optimizers = '{_PLANNER_OFF}'")
                _planner = con
            plan = _planner.execute("EXPLAIN (FORMAT json) " + sql, params).fetchall()
        found: dict[str, set[str] | None] = {}
        for node in json.loads(plan[0][1]):
            _scanned(node, found)
    except (duckdb.Error, json.JSONDecodeError, IndexError, KeyError, TypeError):
        return named
    return found or named  # no table scan in the plan (a CREATE VIEW, say): as named


def _scanned(node: Mapping[str, Any], found: dict[str, set[str] | None]) -> None:
    info = node.get("extra_info")
    if isinstance(info, Mapping) and isinstance(info.get("Table"), str):
        name = info["Table"].rsplit(".", 1)[-1]
        if name in TABLES:
            cols = info.get("Projections")
            cols = [cols] if isinstance(cols, str) else cols
            known = {c for c, _ in TABLES[name][0]}
            if not isinstance(cols, list) or info.get("Filters") or set(cols) - known - {""}:
                found[name] = None
            elif name not in found or found[name] is not None:
                got = {c for c in cols if c} or {TABLES[name][0][0][0]}  # count(*): one column
                found[name] = (found.get(name) or set()) | got
    for child in node.get("children") or ():
        _scanned(child, found)


class Snapshot:
    """A DuckDB connection in memory holding the store's tables as Arrow, loaded from the server
    the first time a statement names them (what a session of the DuckDB file yields)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._con: duckdb.DuckDBPyConnection | None = None
        # table -> the columns loaded (None: every one); absent: not loaded yet
        self._loaded: dict[str, set[str] | None] = {}
        self._run: str | None = None  # the one run whose rows are loaded (None: every run's)
        self._rows: dict[str, tuple[str, list[Any]]] = {}  # table -> the rows loaded of it

    def only_run(self, run_id: str) -> None:
        """Load only ``run_id``'s rows of the tables that have a ``run_id`` column: for a
        statement that keeps that run's rows alone of every table it reads (a history frame
        of one run); before the first statement of the session."""
        if self._loaded:
            raise StoreError("only_run() comes before the session's first statement")
        self._run = run_id

    def only_rows(self, table: str, where: str, params: Sequence[Any] = ()) -> None:
        """Load only the rows of ``table`` that match ``where`` (PostgreSQL SQL over its own
        columns, ``%s`` for each of ``params``): for a statement that keeps no other row of it;
        before the session's first statement."""
        if self._loaded:
            raise StoreError("only_rows() comes before the session's first statement")
        self._rows[table] = (where, list(params))

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duckdb.connect(":memory:", config=dict(NO_EXTENSIONS))
            self._con.execute("CREATE SCHEMA outputs")
        return self._con

    def _need(self, sql: str, params: Any = None) -> None:
        for name, cols in _scans(sql, params).items():
            loaded = name in self._loaded
            have = self._loaded.get(name)
            if loaded and (have is None or (cols is not None and cols <= have)):
                continue  # loaded with every column this statement reads
            want = None if cols is None else cols | (have or set())
            listed = [c for c, _ in TABLES[name][0] if want is None or c in want]
            self._load(name, listed, want)
        for name in packed.referenced(sql):
            key = "outputs." + name
            if key not in self._loaded:
                self._loaded[key] = None
                with contextlib.suppress(StoreError):
                    packed.load(self.con, "outputs", name, self._store.get_table(name))

    def _load(self, name: str, listed: list[str], cols: set[str] | None) -> None:
        """Load the ``listed`` columns of ``name`` (``cols``; None: every column) from the
        server: DuckDB reads the Arrow table where it lies (a view over it, no copy)."""
        keyed = any(c == "run_id" for c, _ in TABLES[name][0])
        run = self._run if keyed else None
        where, params = self._rows.get(name, (None, []))
        self.con.register(name, self._store.read_table(name, listed, run, where, params))
        self._loaded[name] = cols

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        self._need(sql, params)
        try:
            return self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        except (duckdb.BinderException, duckdb.CatalogException):
            if not self._whole(sql):
                raise
            return self.con.execute(sql, params) if params is not None else self.con.execute(sql)

    def sql(self, sql: str, *, params: Any = None) -> duckdb.DuckDBPyRelation:
        self._need(sql, params)
        try:
            return self.con.sql(sql, params=params)
        except (duckdb.BinderException, duckdb.CatalogException):
            if not self._whole(sql):
                raise
            return self.con.sql(sql, params=params)

    def _whole(self, sql: str) -> bool:
        """A statement the plan did not cover (``* EXCLUDE (...)`` names a column nothing
        reads; a view over a table): load every column of the tables it names that lack some
        or are not loaded; whether there were any."""
        partial = [n for n in TABLES if self._loaded.get(n, ()) is not None]
        partial = [n for n in partial if _TABLE_WORDS[n].search(sql)]
        for name in partial:
            self._load(name, [c for c, _ in TABLES[name][0]], None)
        return bool(partial)

    def table(self, name: str) -> duckdb.DuckDBPyRelation:
        self._need(name)
        return self.con.table(name)

    def register(self, name: str, obj: Any) -> None:
        self.con.register(name, obj)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    def interrupt(self) -> None:
        if self._con is not None:
            self._con.interrupt()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = None


def forget(url: str) -> None:
    """Close this process's handle on the store at ``url`` (its pool, its run locks)."""
    key = str(StoreURL(url))
    with _registry_lock:
        store = _registry.pop(key, None)
    if store is None:
        return
    store._closed = True
    store.release()
    for run_id in list(store._runs):
        store.let_go_run(run_id)
    if store._worker_con is not None:
        with contextlib.suppress(Exception):
            store._worker_con.close()
    while store._spare:
        with contextlib.suppress(Exception):
            store._spare.pop().close()
    if store._pool is not None:
        with contextlib.suppress(Exception):
            store._pool.close(timeout=5)
