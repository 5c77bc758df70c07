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
from typing import TYPE_CHECKING, Any

import duckdb

from . import config, schema
from .auditlog import scrub
from .confine import NO_EXTENSIONS
from .crashpoints import crashpoint
from .errors import AirunError, StoreBusy, StoreError, StoreWarning
from .faults import check_store_path, duckdb_fault, os_fault
from .fold import fold
from .journal import Journal
from .lease import Lease
from .schema import APP, SCHEMA_VERSION, TABLES, quote_ident

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["APP", "SCHEMA_VERSION", "TABLES", "Store", "crashpoint", "quote_ident"]

FOLD_EVERY = 4096  # journal records between folds while a burst of steps runs
IDLE_RELEASE = 0.25  # seconds without store activity before the lease is let go
YIELD_WINDOW = 0.5  # after handing the lease to a waiter, give it this long to finish

_registry: dict[str, Store] = {}
_registry_lock = threading.Lock()


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
    def open(cls, db: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
        """The store at ``db``; ``create=False`` (read commands) refuses to make a new one."""
        path = config.resolve_db(db)
        try:
            check_store_path(path, create=create)
            return cls._open(path)
        except OSError as exc:  # a path the OS refuses outright (too long, a loop...)
            raise os_fault(exc, path, "open the store") from None

    @classmethod
    def _open(cls, path: Path) -> Store:
        key = str(path.resolve())
        with _registry_lock:
            store = _registry.get(key)
            if store is None:
                store = cls(Path(key))
                _registry[key] = store
        side = (store.path, store.journal.path, store.lease.lock_path, _wal(store.path))
        existed = {p for p in side if os.path.lexists(p)}
        try:
            with store.session("opening the store", fold=False):
                pass
        except StoreBusy:
            raise  # someone else holds the files: touch nothing
        except StoreError:
            store._forget(created=[p for p in side if p not in existed])
            raise
        return store

    def _forget(self, created: Sequence[Path] = ()) -> None:
        """After refusing a file: drop it from the registry and remove what opening created."""
        with _registry_lock:
            _registry.pop(str(self.path), None)
        with self._mutex:
            with contextlib.suppress(AirunError, OSError, duckdb.Error):
                self._release_locked()
            for p in created:
                if p.is_file() and not p.is_symlink():
                    with contextlib.suppress(OSError):
                        p.unlink()

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
            try:
                with _faults(self, "read"):
                    con = self._connection()
                    if fold:
                        self._fold()
                    yield con
            finally:
                self._last_activity = time.monotonic()

    def record(self, rec: dict[str, Any]) -> None:
        """Append one state change to the journal: durable when this returns."""
        with self._mutex:
            self._ensure_lease("running a workflow")
            self.journal.append(scrub(rec))  # no secret is ever written
            self._last_activity = time.monotonic()
            if len(self.journal.pending) >= FOLD_EVERY:
                self._connection()
                self._fold()

    def record_many(self, recs: Sequence[dict[str, Any]]) -> None:
        with self._mutex:
            self._ensure_lease("running a workflow")
            self.journal.append_many([scrub(r) for r in recs])
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
                crashpoint("output:before_commit")
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("__airun_out")
            crashpoint("output:after_commit")

    def get_table(self, name: str) -> pa.Table:
        # No fold first: output tables are committed directly, never journaled.
        with self.session("reading a step output", fold=False) as con:
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
                    raise duckdb_fault(msg, self.path, "open") or schema.incompatible(
                        self.path, msg
                    ) from None
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
                msg = str(exc)
                raise duckdb_fault(msg, self.path, "open") or schema.incompatible(
                    self.path, msg
                ) from None
        try:
            schema.check(con, self.path)
        except BaseException:
            con.close()
            raise
        self._con = con
        return con

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
        _report(self.journal, scan.describe(self.journal.path, aside))

    def _fold(self) -> None:
        if not self.journal.pending:
            if not self.journal.empty and self._con is not None:
                self.journal.reset()
            return
        with _faults(self, "fold the journal into"):  # the journal keeps every record
            if fold(self._connection(), self.journal):
                self.folds += 1

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


@contextlib.contextmanager
def _faults(store: Store, doing: str) -> Iterator[None]:
    """A fault (OS error, damaged file) while holding the store: one line, and let go of the
    file without folding; the journal keeps its records for the next holder."""
    try:
        yield
    except (duckdb.Error, StoreError) as exc:
        fault = exc if isinstance(exc, StoreError) else duckdb_fault(str(exc), store.path, doing)
        if fault is None:
            raise
        if store._con is not None:
            with contextlib.suppress(duckdb.Error):
                store._con.close()
            store._con = None
        store.journal.close()
        store.lease.release()
        raise fault from None


def _report(journal: Journal, message: str | None) -> None:
    """Say in one line what recovery kept and set aside; keep it as an event too."""
    if not message:
        return
    warnings.warn_explicit(message, StoreWarning, APP, 0)
    event = {"t": "ev", "ts": time.time(), "run_id": None, "step_id": None}
    event.update(kind="journal_recovered", detail=json.dumps({"message": message}))
    journal.append(event)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def files_signature(db: Path) -> tuple[Any, ...]:
    """Sizes and modification times of a store and its journal: a change means new records
    (a cheap look that takes no lock, for watchers)."""
    out: list[Any] = []
    for p in (db, db.with_name(db.name + ".journal")):
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


_stopping = threading.Event()


def _keep(ref: weakref.ReferenceType[Store]) -> None:
    while not _stopping.is_set():
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


@atexit.register
def _release_all() -> None:
    # Keeper threads stop first and are waited for: a daemon thread still inside DuckDB when
    # the interpreter finalizes would abort the process as it exits.
    _stopping.set()
    for store in list(_registry.values()):
        keeper = store._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)
    for store in list(_registry.values()):
        with contextlib.suppress(Exception):
            store.release()
