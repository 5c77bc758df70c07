"""The store: one DuckDB file holding every run, step, attempt, output and event.

Writes go through the :class:`~airun_nb.journal.Journal` (one ``write`` per state change, durable
against a crash) and are folded into DuckDB in batches, in one transaction per batch that also
records how far the journal was folded. Every read folds first, so readers always see every
committed state change. Access to the file is coordinated by the :class:`~airun_nb.lease.Lease`:
a process holds the DuckDB file only while it writes or runs a burst of quick steps; a keeper
thread folds and lets go as soon as the holder pauses or another process asks for it.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import re
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from . import config
from .confine import NO_EXTENSIONS
from .errors import StoreBusy, StoreError, StoreIncompatible, StoreWarning
from .journal import Journal
from .lease import Lease

SCHEMA_VERSION = 3
# Version history: 1 runs/steps/attempts/events/specs; 2 adds approvals and audit; 3 adds tokens
# (hashed API tokens of the approval service). Each version only adds
# tables or columns, so an older store is upgraded in place when it is opened.
APP = "airun_nb"

# Column lists are the single source of truth for DDL, Arrow batches and journal records.
_TS = "TIMESTAMP"
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
            ("launched_by", "VARCHAR"),
            ("opened_at", _TS),
            ("deadline", _TS),
            ("on_timeout", "VARCHAR"),
            ("decision", "VARCHAR"),
            ("actor", "VARCHAR"),
            ("channel", "VARCHAR"),
            ("comment", "VARCHAR"),
            ("decided_at", _TS),
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
}
# Journal record type -> table.
_RECORD_TABLE = {
    "spec": "specs",
    "run": "runs",
    "step": "steps",
    "att": "attempts",
    "gate": "approvals",
    "ev": "events",
    "audit": "audit",
    "token": "tokens",
}
_ARROW = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "TIMESTAMP": pa.timestamp("us"),
    "BLOB": pa.binary(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}
FOLD_EVERY = 4096  # journal records between folds while a burst of steps runs
IDLE_RELEASE = 0.25  # seconds without store activity before the lease is let go
YIELD_WINDOW = 0.5  # after handing the lease to a waiter, give it this long to finish

_registry: dict[str, Store] = {}
_registry_lock = threading.Lock()


def _ddl() -> list[str]:
    out = ["CREATE SCHEMA IF NOT EXISTS outputs"]
    out.append("CREATE TABLE IF NOT EXISTS airun_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    for name, (cols, pk) in TABLES.items():
        body = ", ".join(f"{c} {t}" for c, t in cols)
        if pk:
            body += f", PRIMARY KEY ({', '.join(pk)})"
        out.append(f"CREATE TABLE IF NOT EXISTS {name} ({body})")
    return out


def _batch(table: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
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
            arrays.append(pa.array(values, _ARROW[typ]))
    return pa.Table.from_arrays(arrays, names=[c for c, _ in cols])


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Store:
    """A handle on one store file, shared by every thread of a process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lease = Lease(path)
        self.journal = Journal(path, sync=config.sync_mode())
        self._mutex = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._last_activity = 0.0
        self._yielded_at = 0.0
        self._keeper: threading.Thread | None = None
        self.folds = 0

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, db: str | os.PathLike[str] | None = None) -> Store:
        path = config.resolve_db(db)
        if path.exists() and path.is_dir():
            raise StoreError(f"{path} is a folder; the store is a file (e.g. {path}/airun.duckdb)")
        if not path.parent.exists():
            raise StoreError(f"cannot create the store {path}: folder {path.parent} does not exist")
        key = str(path.resolve())
        with _registry_lock:
            store = _registry.get(key)
            if store is None:
                store = cls(Path(key))
                _registry[key] = store
        try:
            with store.session("opening the store"):
                pass
        except StoreIncompatible:
            store._forget()
            raise
        return store

    def _forget(self) -> None:
        """After refusing a file: drop it from the registry and remove our side files."""
        with _registry_lock:
            _registry.pop(str(self.path), None)
        with self._mutex:
            self._release_locked()
            if self.journal.path.exists() and self.journal.path.stat().st_size < 256:
                with contextlib.suppress(OSError):
                    self.journal.path.unlink()
            with contextlib.suppress(OSError):
                self.lease.lock_path.unlink()

    # -- sessions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(
        self, purpose: str = "reading", *, fold: bool = True
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the store (lease + DuckDB connection) for the duration of the block.

        Anything still journaled is folded first (unless ``fold=False``, for writers that do
        not read), so the block sees every state change.
        """
        with self._mutex:
            self._ensure_lease(purpose)
            con = self._connection()
            if fold:
                self._fold()
            try:
                yield con
            finally:
                self._last_activity = time.monotonic()

    def record(self, rec: dict[str, Any]) -> None:
        """Append one state change to the journal: durable when this returns."""
        with self._mutex:
            self._ensure_lease("running a workflow")
            self.journal.append(rec)
            self._last_activity = time.monotonic()
            if len(self.journal.pending) >= FOLD_EVERY:
                self._connection()
                self._fold()

    def record_many(self, recs: Sequence[dict[str, Any]]) -> None:
        with self._mutex:
            self._ensure_lease("running a workflow")
            self.journal.append_many(recs)
            self._last_activity = time.monotonic()
            if len(self.journal.pending) >= FOLD_EVERY:
                self._connection()
                self._fold()

    def flush(self) -> None:
        """Fold everything journaled into DuckDB now."""
        with self._mutex:
            if self.lease.held and not self.journal.empty:
                self._connection()
                self._fold()

    def release(self) -> None:
        """Fold, close the DuckDB file and let go of the lease."""
        with self._mutex:
            self._release_locked()

    # -- queries ---------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.session() as con:
            return con.execute(sql, list(params)).fetchall()

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.session() as con:
            cur = con.execute(sql, list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def query_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        with self.session() as con:
            return con.execute(sql, list(params)).df()

    def put_table(self, name: str, table: pa.Table) -> None:
        """Store an Arrow table as ``outputs."name"`` and commit it."""
        # No fold first: writing a table reads nothing the journal holds.
        with self.session("writing a step output", fold=False) as con:
            con.register("__airun_out", table)
            try:
                con.execute("BEGIN")
                con.execute(
                    f"CREATE OR REPLACE TABLE outputs.{quote_ident(name)} AS "
                    "SELECT * FROM __airun_out"
                )
                _crashpoint("output:before_commit")
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("__airun_out")
            _crashpoint("output:after_commit")

    def get_table(self, name: str) -> pa.Table:
        with self.session() as con:
            rel = con.sql(f"SELECT * FROM outputs.{quote_ident(name)}")
            fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
            table: pa.Table = fetch()
            return table

    # -- internals -------------------------------------------------------------------------
    def _ensure_lease(self, purpose: str) -> None:
        if self.lease.held:
            if purpose != self.lease.purpose:
                self.lease.retitle(purpose)
            return
        if self._yielded_at and time.monotonic() - self._yielded_at < YIELD_WINDOW:
            # We just handed the lease over: let the waiter have its turn.
            deadline = self._yielded_at + YIELD_WINDOW
            while self.lease.waiters() and time.monotonic() < deadline:
                time.sleep(0.005)
        self.lease.acquire(config.lock_timeout(), purpose)
        try:
            self.journal.open()
            if not self.journal.empty:
                self._recover()
        except BaseException:
            self._release_locked()
            raise
        self._last_activity = time.monotonic()
        self._start_keeper()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None:
            return self._con
        deadline = time.monotonic() + config.lock_timeout()
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path), config=dict(NO_EXTENSIONS))
                break
            except duckdb.IOException as exc:
                msg = str(exc)
                if "lock" not in msg.lower():
                    raise _incompatible(self.path, msg) from None
                if time.monotonic() >= deadline:
                    m = re.search(r"PID (\d+)", msg)
                    who = f"process {m.group(1)}" if m else "another program"
                    raise StoreBusy(
                        f"the store {self.path} is locked by {who} outside airun_nb; "
                        f"gave up after {config.lock_timeout():g} s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
            except duckdb.Error as exc:
                raise _incompatible(self.path, str(exc)) from None
        try:
            self._check_schema(con)
        except BaseException:
            con.close()
            raise
        self._con = con
        return con

    def _check_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        if "airun_meta" not in tables:
            if tables:
                listed = ", ".join(sorted(tables)[:5])
                raise StoreIncompatible(
                    f"{self.path} is a DuckDB database but not an airun_nb store (it has tables "
                    f"{listed}); choose another store path"
                )
            con.execute("BEGIN")
            for stmt in _ddl():
                con.execute(stmt)
            con.execute(
                "INSERT INTO airun_meta VALUES ('app', ?), ('schema_version', ?)",
                [APP, str(SCHEMA_VERSION)],
            )
            con.execute("COMMIT")
            return
        meta = dict(con.execute("SELECT key, value FROM airun_meta").fetchall())
        if meta.get("app") != APP:
            raise StoreIncompatible(f"{self.path} is not an airun_nb store")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StoreIncompatible(
                f"{self.path} was written by a newer airun_nb (store schema {version}; this "
                f"version reads up to {SCHEMA_VERSION}); upgrade airun_nb to open it"
            )
        if version < SCHEMA_VERSION:
            con.execute("BEGIN")
            for stmt in _ddl():
                con.execute(stmt)
            con.execute(
                "INSERT OR REPLACE INTO airun_meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )
            con.execute("COMMIT")

    def _recover(self) -> None:
        """Fold what a crashed process left in the journal."""
        con = self._connection()
        meta = dict(
            con.execute(
                "SELECT key, value FROM airun_meta WHERE key IN ('journal_gen', 'journal_offset')"
            ).fetchall()
        )
        offset = int(meta["journal_offset"]) if meta.get("journal_gen") == self.journal.gen else 0
        scan = self.journal.scan(offset)
        # The damaged bytes are copied aside before anything is folded or truncated, and the
        # journal is reset after the fold: nothing is ever appended after a bad record.
        aside = self.journal.set_aside(scan.damage[0][0]) if scan.damage else None
        self.journal.pending = scan.records
        self.journal.size = scan.end
        self._fold()
        message = scan.describe(self.journal.path, aside)
        if message:
            warnings.warn_explicit(message, StoreWarning, APP, 0)
            self.journal.append(
                {
                    "t": "ev",
                    "ts": time.time(),
                    "run_id": None,
                    "step_id": None,
                    "kind": "journal_recovered",
                    "detail": json.dumps({"message": message}),
                }
            )

    def _fold(self) -> None:
        journal = self.journal
        if not journal.pending:
            if not journal.empty and self._con is not None:
                journal.reset()
            return
        con = self._connection()
        grouped: dict[str, dict[Any, dict[str, Any]]] = {}
        appended: dict[str, list[dict[str, Any]]] = {}
        for rec in journal.pending:
            t = rec.get("t")
            table = _RECORD_TABLE.get(t or "")
            if table is None:
                continue
            if table in ("events", "audit"):
                appended.setdefault(table, []).append(rec)
                continue
            pk = TABLES[table][1]
            grouped.setdefault(table, {})[tuple(rec.get(k) for k in pk)] = rec
            if t == "step" and rec.get("att"):
                att = dict(rec["att"], run_id=rec["run_id"], step_id=rec["step_id"])
                key = (att["run_id"], att["step_id"], att.get("phase"), att.get("attempt"))
                grouped.setdefault("attempts", {})[key] = att
        con.execute("BEGIN")
        try:
            for table, rows in grouped.items():
                self._insert(con, table, list(rows.values()), replace=True)
            for table, rows_ in appended.items():
                self._insert(con, table, rows_, replace=False)
            con.execute(
                "INSERT OR REPLACE INTO airun_meta VALUES ('journal_gen', ?), ('journal_offset', ?)",
                [journal.gen, str(journal.size)],
            )
            _crashpoint("fold:before_commit")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        _crashpoint("fold:after_commit")
        journal.reset()
        self.folds += 1

    @staticmethod
    def _insert(
        con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]], replace: bool
    ) -> None:
        batch = _batch(table, rows)
        con.register("__airun_batch", batch)
        try:
            verb = "INSERT OR REPLACE" if replace else "INSERT"
            con.execute(f"{verb} INTO {table} SELECT * FROM __airun_batch")
        finally:
            con.unregister("__airun_batch")

    def _release_locked(self) -> None:
        if not self.lease.held:
            return
        try:
            if not self.journal.empty:
                self._connection()
                self._fold()
        finally:
            if self._con is not None:
                with contextlib.suppress(duckdb.Error):
                    self._con.close()
                self._con = None
            self.journal.close()
            self.lease.release()

    def _start_keeper(self) -> None:
        if self._keeper is not None and self._keeper.is_alive():
            return
        ref = weakref.ref(self)
        self._keeper = threading.Thread(
            target=_keep, args=(ref,), name="airun-store-keeper", daemon=True
        )
        self._keeper.start()

    def _keeper_tick(self) -> bool:
        """One look by the keeper thread; returns False when there is nothing left to keep."""
        if not self._mutex.acquire(timeout=0.05):
            return True
        try:
            if not self.lease.held:
                return False
            idle = time.monotonic() - self._last_activity
            if self.lease.waiters():
                self._release_locked()
                self._yielded_at = time.monotonic()
                return False
            if idle >= IDLE_RELEASE:
                self._release_locked()
                return False
            if self.journal.unsynced and idle >= self.journal.group_sync_s:
                self.journal.sync_now()  # group commit: the last records of a burst
            return True
        finally:
            self._mutex.release()


def _keep(ref: weakref.ReferenceType[Store]) -> None:
    while True:
        time.sleep(0.01)
        store = ref()
        if store is None:
            return
        try:
            if not store._keeper_tick():
                return
        except Exception:  # pragma: no cover - the next user of the store reports it
            return
        finally:
            del store


def _incompatible(path: Path, msg: str) -> StoreIncompatible:
    if "sqlite" in msg.lower():
        return StoreIncompatible(f"{path} is a SQLite file, not an airun_nb store (DuckDB)")
    if "not a valid DuckDB database" in msg or "database file" in msg.lower():
        return StoreIncompatible(f"{path} is not an airun_nb store (not a DuckDB database file)")
    if "newer" in msg.lower() or "version" in msg.lower():
        return StoreIncompatible(f"{path} was written by an incompatible DuckDB version: {msg}")
    return StoreIncompatible(f"cannot open the store {path}: {msg.splitlines()[0]}")


def _crashpoint(name: str) -> None:
    """Test hook: ``AIRUN_CRASH_AT=name`` kills this process with SIGKILL at that point."""
    target = os.environ.get("AIRUN_CRASH_AT")
    if target and target == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def crashpoint(name: str) -> None:
    _crashpoint(name)


@atexit.register
def _release_all() -> None:
    for store in list(_registry.values()):
        with contextlib.suppress(Exception):
            store.release()
