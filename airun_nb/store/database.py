"""The store: one DuckDB file holding every run, step, attempt, output and event.

Writes go through a :class:`~airun_nb.store.journal.Journal` slot of this process's own (one
``write`` per state change, durable against a crash, no lock to wait for) and are folded into
DuckDB in batches, in one transaction per batch that also records how far each slot was folded.
Every read folds first, this process's records and every other process's (see
:mod:`~airun_nb.store.slots`), so readers always see every committed state change. Access to the
DuckDB file is coordinated by the :class:`~airun_nb.store.lease.Lease`: a process holds it only while
it reads, folds or writes an output table; a keeper thread folds and lets go as soon as the
holder pauses or another process asks for it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from airun_nb.errors import AirunError, ClockWarning, StoreBusy, StoreError, StoreWarning
from airun_nb.settings import clock as processclock
from airun_nb.settings import environment as config
from airun_nb.store import idle as keeper
from airun_nb.store import overlay, owner, packed, schema
from airun_nb.store.crashpoints import crashpoint
from airun_nb.store.faults import check_store_path, duckdb_fault, os_fault
from airun_nb.store.fold import fold
from airun_nb.store.heads import Heads
from airun_nb.store.journal import Journal, meta_keys, slot_paths
from airun_nb.store.lease import Lease
from airun_nb.store.queries import Queries
from airun_nb.store.queue import QueueStore
from airun_nb.store.redaction import scrub
from airun_nb.store.schema import APP, SCHEMA_VERSION, STORE_CONFIG, TABLES, quote_ident
from airun_nb.store.slots import Batch, Peers, files_signature
from airun_nb.store.writeback import Writeback

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["APP", "SCHEMA_VERSION", "TABLES", "Store", "crashpoint", "files_signature"]
__all__ += ["quote_ident"]

FOLD_EVERY = 4096  # journal records between folds while a burst of steps runs
FOLD_AT_LATEST = 8 * FOLD_EVERY  # pending records past which appending waits for the lease
CLOCK_SKEW = 5.0  # seconds a process's clock may differ from the store's before it is said
_clock_said: dict[str, float] = {}  # store path -> the skew said (once per process)
FOLD_BEHIND_BYTES = 64 * 1024  # unfolded bytes of other processes worth a fold between reads
FOLD_BEHIND_RECORDS = 256  # this process's unfolded records worth a fold between reads
YIELD_WINDOW = 0.5  # after handing the lease to a waiter, give it this long to finish

_OPEN_J = "open the journal"
_registry: dict[str, Store] = {}
_registry_lock = threading.Lock()


class Store(Queries, QueueStore):
    """A handle on one store file, shared by every thread of a process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lease = Lease(path)
        self.journal = Journal(path, sync=config.sync_mode())
        self.heads = Heads(path, sync=self.journal.sync == "always")
        self._mutex = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._last_activity = 0.0
        self._yielded_at = 0.0
        self.keeper = keeper.Keeper(self)
        self.peers = Peers(path)
        self.writeback = Writeback(path)  # large output tables reach the disk as written
        self._known: tuple[int, int, int] | None = None  # the file as this process left it
        self._checked = False  # the file passed the schema check in this process
        self._trimmed = -1  # the lease grant at which this slot's folded part was forgotten
        self.folds = 0
        self._depth = 0  # sessions open in this process (nested ones included)
        self.as_found = False  # the open file was as airun_nb left it, or has been read since
        self._laid = 0  # sessions with records laid over the tables (see overlay), open now

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, db: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
        """The store at ``db``; ``create=False`` (read commands) refuses to make a new one."""
        path = config.resolve_db_path(db)
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
        if store._checked and (
            _file_signature(store.path) in (store._known, store._closed_as())
            or store.lease.busy()  # another airun_nb process has it open right now
        ):
            return store  # checked before, and unchanged since, or in use by airun_nb
        side = (store.path, store.journal.path, store.lease.lock_path, _wal(store.path))
        existed = {p for p in side if os.path.lexists(p)}
        try:
            with store.session("opening the store", fold=False, peers=False):  # a check
                for _, slot in slot_paths(path):
                    if slot.is_dir():  # a journal slot that can never be written
                        raise os_fault(IsADirectoryError(errno.EISDIR, "folder"), slot, _OPEN_J)
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
        self,
        purpose: str = "reading",
        *,
        fold: bool = True,
        peers: bool = True,
        kinds: Sequence[str] = (),
        reads: str | None = None,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the store (lease + DuckDB connection) for the duration of the block.

        Every other process's journal slot is folded first (unless ``peers=False``), and this
        process's own too unless ``fold=False`` (its pending records are laid over what it
        reads, see ``recent``). ``kinds`` (record kinds, such as ``"token"``): the block reads
        only what records of those kinds hold, so nothing is folded unless an unfolded record
        is of one of them (checking an API token beside busy writers does not fold their
        runs). ``reads`` (the one SELECT the block runs): the records not folded yet are laid
        over the tables it reads instead of folded in (see :mod:`~airun_nb.store.overlay`), so a
        reader beside busy writers does not do their folding."""
        with self._mutex:
            self._ensure_lease(purpose)
            self._depth += 1
            laid: list[str] | None = None  # the tables laid over (see overlay)
            try:
                with _faults(self, "read"):
                    con = self._connection()
                    if peers and (not kinds or self._unfolded_has(kinds)):
                        over = self._lay_over(con, reads) if reads and not self._laid else None
                        if over is None:
                            self._fold(own=fold)
                        else:
                            laid = over
                            self._laid += 1
                    yield con
            finally:
                if laid is not None:
                    self._laid -= 1
                if laid and self._con is not None:
                    try:
                        overlay.lift(self._con, laid)
                    except duckdb.Error:  # closing the connection drops its temporary views
                        with contextlib.suppress(duckdb.Error):
                            self._con.close()
                        self._con = None
                self._depth -= 1
                self._last_activity = time.monotonic()
                if not self._depth and self.lease.held and self.lease.waiters():
                    # Someone waits: hand the store over now, not at the keeper's next look.
                    # It folds this process's slot as it reads; appending goes on meanwhile.
                    with contextlib.suppress(AirunError, OSError, duckdb.Error):
                        self._release_locked(fold=False)
                    self._yielded_at = time.monotonic()

    def record(self, rec: dict[str, Any]) -> None:
        """Append one state change to this process's journal: durable when this returns."""
        self.record_many((rec,))

    def record_many(self, recs: Sequence[dict[str, Any]]) -> None:
        with self._mutex:
            journal = self._journal()
            clean = [scrub(r) for r in recs]  # no secret is ever written
            self.heads.before(clean)  # the latest run of a workflow, readable without the lease
            journal.append_many(clean)
            self.heads.after(clean)
            self._last_activity = time.monotonic()
            if len(journal.pending) >= FOLD_EVERY:
                self._forget_folded()  # what another holder folded of it needs no lease
            if len(journal.pending) >= FOLD_EVERY:
                self._fold_soon(len(journal.pending) >= FOLD_AT_LATEST)
            self.keeper.start()

    def sync(self) -> None:
        """Make what this process journaled survive a power loss (``fsync``): a run's end does
        this in every ``AIRUN_SYNC`` mode, so a run reported finished is never lost."""
        with self._mutex:
            if self.journal.is_open:
                self.journal.sync_now()

    def flush(self) -> None:
        """Fold everything this process journaled into DuckDB now."""
        with self._mutex:
            if self.journal.is_open and not self.journal.empty:
                self._ensure_lease("saving the journal")
                self._connection()
                self._fold()

    def let_go(self) -> None:
        """Sync this process's journal and let go of the store without folding it: the next
        process that holds the store folds the slot (a dead process's slot, recovered as
        after a crash). For a one-shot command, such as a decision from a terminal, that
        exits next: its records are durable when this returns, and nothing waits for a fold."""
        with self._mutex:
            if self.journal.is_open:
                self.journal.sync_now()
            self._release_locked(fold=False)
            self.journal.close()

    def release(self) -> None:
        """Fold, close the DuckDB file, let go of the lease and of the journal slot."""
        with self._mutex:
            if not self.lease.held and self.journal.is_open and not self.journal.empty:
                self._ensure_lease("saving the journal")
            self._release_locked()
            self.journal.close()

    def _exit(self) -> None:
        """At exit: fold if the lease is free, else the next holder folds the slot."""
        with self._mutex:
            writes = self.journal.is_open and not self.journal.empty
            if writes and not self.lease.held:
                self.lease.try_acquire("saving the journal")
            self._release_locked(fold=writes)  # a process that only read leaves the folds
            self.journal.close()

    # -- queries ---------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.session(reads=sql) as con:
            return con.execute(sql, list(params)).fetchall()

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.session(reads=sql) as con:
            cur = con.execute(sql, list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def query_df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        with self.session(reads=sql) as con:
            return con.execute(sql, list(params)).df()

    def put_table(self, name: str, table: pa.Table) -> None:
        """Store an Arrow table as output table ``name`` (see :mod:`~airun_nb.store.packed`:
        small ones as Parquet bytes in ``airun_outputs``) and commit it."""
        # No fold first: writing a table reads nothing the journal holds.
        with self.session("writing a step output", fold=False) as con:
            try:
                con.execute("BEGIN")
                with self.writeback.during(table.nbytes):
                    packed.write(con, name, table)
                crashpoint("output:before_commit")
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            crashpoint("output:after_commit")

    def get_table(self, name: str, *, large: bool = False) -> pa.Table:
        # No fold first: output tables are committed directly, never journaled.
        with self.session("reading a step output", fold=False) as con:
            return packed.read(con, name, self.path, large=large)

    def export_run(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every row and output table of one run, to copy it to another store (see
        :mod:`~airun_nb.store.transfer`)."""
        from airun_nb.store import transfer

        return transfer.export_run(self, run_id)

    def import_run(self, bundle: dict[str, list[dict[str, Any]]]) -> None:
        """Load a run copied from another store, in one transaction (see
        :mod:`~airun_nb.store.transfer`); refuses a run id this store already has."""
        from airun_nb.store import transfer

        transfer.import_run(self, bundle)

    def _clock_read(self) -> tuple[float, float, float]:
        """(this process's clock, the store's clock, this process's clock again)."""
        before = processclock.now()
        now = self.lease.clock()
        return before, now, processclock.now()

    def clock(self) -> float:
        """The store's clock (epoch seconds): what gates' deadlines are set and checked by, so
        that no process's own clock decides. The first time a process reads it, a process
        clock more than :data:`CLOCK_SKEW` seconds off is said in one line and recorded."""
        with self._mutex:
            if self.lease.held:  # inside a session: it keeps saying what it is doing
                before, now, after = self._clock_read()
            else:
                with self.session("reading the store's clock", fold=False, peers=False):
                    before, now, after = self._clock_read()
        # The process's clock was read just before and after the store's: a skew is only what
        # lies outside that window (a busy machine may pause between the reads; that is no skew).
        skew = (
            0.0 if before - CLOCK_SKEW <= now <= after + CLOCK_SKEW else (before + after) / 2 - now
        )
        if skew and str(self.path) not in _clock_said:
            _clock_said[str(self.path)] = skew
            side = "ahead of" if skew > 0 else "behind"
            message = (
                f"this process's clock is {abs(skew):.0f} s {side} the store's (pid "
                f"{os.getpid()} on {socket.gethostname()}); gate deadlines use the store's clock"
            )
            warnings.warn_explicit(message, ClockWarning, APP, 0)
            detail = {"pid": os.getpid(), "host": socket.gethostname(), "skew_seconds": skew}
            self.record(
                {"t": "ev", "ts": now, "run_id": None, "step_id": None, "kind": "clock_skew"}
                | {"detail": json.dumps(detail)}
            )
        return now

    # -- owners, the spec cache, waiting -----------------------------------------------------
    def hold_run(self, run_id: str) -> bool:
        """A run executing here is known by its owner columns and this process's own set
        (:mod:`~airun_nb.store.owner`): nothing to hold on a file."""
        return True

    def let_go_run(self, run_id: str) -> None:
        """Nothing held (see :meth:`hold_run`)."""

    def owner_alive(self, row: Mapping[str, Any]) -> bool:
        """Is the process recorded as executing this run alive (this host: its pid)?"""
        return owner.owner_alive(row)

    def cached_spec(self, key: str) -> bytes | None:
        with self.session("reading the spec cache", fold=False) as con:
            rows = con.execute("SELECT data FROM spec_cache WHERE cache_key = ?", [key]).fetchall()
        return bytes(rows[0][0]) if rows else None

    def cache_spec(self, key: str, data: bytes) -> None:
        with self.session("caching a parsed workflow", fold=False) as con:
            con.execute(
                "INSERT OR REPLACE INTO spec_cache VALUES (?, make_timestamp(?), ?)",
                [key, int(time.time() * 1_000_000), data],
            )

    def change_token(self) -> int:
        """A number that changes when the store's files do (a decision is a journal append)."""
        return hash(files_signature(self.path))

    def wait_for_change(self, timeout: float, stop: Callable[[], bool] | None = None) -> bool:
        """A file tells nobody of a change: wait ``timeout`` seconds (False: not notified)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop and stop()):
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return False

    # -- internals -------------------------------------------------------------------------
    def _ensure_lease(self, purpose: str) -> None:
        if self.lease.held:
            if purpose != self.lease.purpose:
                self.lease.retitle(purpose)
            return
        if self._yielded_at and time.monotonic() - self._yielded_at < YIELD_WINDOW:
            # We just handed the lease over: let the waiter, woken by the kernel as we let go,
            # take it before we queue behind it (waiting on the lock wakes us when it is free).
            deadline = self._yielded_at + YIELD_WINDOW
            while time.monotonic() < deadline and self.lease.waiters() and not self.lease.busy():
                time.sleep(0.0005)
            self._yielded_at = 0.0
        self.lease.acquire(config.lock_timeout(), purpose)
        self._last_activity = time.monotonic()
        self.keeper.start()

    def as_left(self) -> bool:
        """Is the DuckDB file as an airun_nb process left it, or in use by one now? (False: it
        changed behind the store's back, copied over or cut short, or its last holder died:
        read it before trusting anything kept beside it, such as the heads folder.)"""
        if self._con is not None:
            return self.as_found
        if not self.lease.lock_path.is_file():  # a lease that cannot be taken: say so first
            return False
        sig = _file_signature(self.path)
        if sig is not None and sig in (self._known, self._closed_as()):
            return True
        return not self.lease.held and self.lease.busy()

    def _closed_as(self) -> tuple[int, int, int] | None:  # as the last holder left the file
        sig = self.lease.closed_as()
        return (sig[0], sig[1], sig[2]) if isinstance(sig, list) and len(sig) == 3 else None

    def _journal(self) -> Journal:
        """This process's journal slot, opened (and its leftovers recovered) on first use."""
        journal = self.journal
        if not journal.is_open:
            journal.open()
            if journal.leftover:  # its last owner died with records in it
                try:
                    self._ensure_lease("recovering the journal")
                    self._recover()
                except BaseException:
                    self._release_locked()
                    journal.close()
                    raise
        return journal

    def _fold_soon(self, must: bool) -> None:
        """Many records are pending: fold them if the lease is free (or ``must``: wait)."""
        if not self.lease.held:
            if must:
                self._ensure_lease("running a workflow")
            elif not self.lease.try_acquire("running a workflow"):
                return  # the holder folds this slot too; try again a little later
            self.keeper.start()
        self._connection()
        self._fold()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self.as_found = self.as_left()  # before opening it: as an airun_nb process left it?
            self._con = _connect(self.path)
            self._checked = True
        return self._con

    def _recover(self) -> None:
        """Fold what a process that died left in this process's slot."""
        con = self._connection()
        journal = self.journal
        gen_key, offset_key = meta_keys(journal.slot)
        meta = _meta(con)
        offset = int(meta[offset_key]) if meta.get(gen_key) == journal.gen else 0
        scan = journal.scan(offset, raw=True)
        # The damaged bytes are copied aside before anything is folded or truncated, and the
        # journal is reset after the fold: nothing is ever appended after a bad record.
        aside = journal.set_aside(scan.damage[0][0]) if scan.damage else None
        with _faults(self, "fold the journal into"):
            skipped = fold(con, scan.records, [(journal.slot, journal.gen, scan.end)])
        journal.reset()
        self.folds += 1
        self._trimmed = self.lease.grants
        _report(self, scan.describe(journal.path, aside))
        _report(self, _skipped(skipped))

    def _fold(self, own: bool = True) -> None:
        """Fold the other slots' new records and (``own``) this process's (lease held)."""
        journal = self.journal
        mine = journal.slot if journal.is_open else None
        changed = self.peers.changed(mine)
        stale = mine is not None and bool(journal.pending) and self._trimmed != self.lease.grants
        if not changed and not stale and not (own and journal.pending):
            if own and journal.is_open and not journal.empty and self._con is not None:
                journal.reset()
            return
        con = self._connection()
        meta = _meta(con)
        if stale:
            self._trim_stale(meta)
        batch = self.peers.collect(changed, meta) if changed else Batch()
        records, marks = batch.records, batch.marks
        if own and journal.pending:
            records = [*records, *journal.pending]
            marks = [*marks, (journal.slot, journal.gen, journal.size)]
        if marks:
            try:
                with _faults(self, "fold the journal into"):  # every journal keeps its records
                    skipped = fold(con, records, marks)
            except BaseException:
                self.peers.abandon(batch)
                raise
            self.folds += 1
            self.lease.note_folded(marks)  # appending processes learn how far they are folded
            batch.reports.append(_skipped(skipped) or "")
        self.peers.done(batch)
        if own and journal.is_open and not journal.empty:
            journal.reset()
        for message in batch.reports:
            _report(self, message)

    def _lay_over(self, con: duckdb.DuckDBPyConnection, sql: str | None) -> list[str] | None:
        """Lay what is not folded yet over the tables ``sql`` reads (lease held); None: fold
        instead (not a plain read, damaged bytes in a slot, events or audit rows it names, or
        so many records that folding them pays off). A dead process's slot is read like a
        live one's: the next fold recovers it."""
        journal = self.journal
        if not overlay.can_read(sql):
            return None
        mine = journal.slot if journal.is_open else None
        changed = self.peers.changed(mine)
        if not changed and not journal.pending:
            return []
        if changed and journal.pending:
            # Which of two processes' records of one row is newer is known only once they are
            # folded in turn (each process folds before it writes a row it read): fold.
            return None
        meta = _meta(con)
        self._trim_stale(meta)
        batch = self.peers.collect(changed, meta) if changed else Batch()
        self.peers.abandon(batch)  # nothing is folded: the marks stay where they are
        if batch.reports:  # damaged bytes in a slot: the fold sets them aside and says so
            return None
        if len(batch.records) + len(journal.pending) > overlay.AT_MOST:
            return None
        records = [*batch.records, *journal.pending]
        if not records:
            return []
        return overlay.lay(con, self._catalog(con), records, str(sql))

    def _fold_behind(self) -> None:
        """Fold what this process and the others appended, if it is enough to be worth a fold
        (lease held, between two reads; see :mod:`~airun_nb.store.idle`)."""
        journal = self.journal
        mine = journal.slot if journal.is_open else None
        if (
            len(journal.pending) >= FOLD_BEHIND_RECORDS
            or self.peers.grown(mine) >= FOLD_BEHIND_BYTES
        ):
            with _faults(self, "fold the journal into"):
                self._fold()

    def _catalog(self, con: duckdb.DuckDBPyConnection) -> str:
        """The name DuckDB gives the store file's catalog on ``con``."""
        rows = con.execute("SELECT current_database()").fetchall()  # fetched to the end
        return str(rows[0][0]) if rows else self.path.stem

    def _trim_stale(self, meta: Mapping[str, str]) -> None:
        """Another holder may have folded part of this slot while this process had no lease:
        forget what it folded (lease held)."""
        journal = self.journal
        if journal.is_open and journal.pending and self._trimmed != self.lease.grants:
            gen_key, offset_key = meta_keys(journal.slot)
            journal.trim(meta.get(gen_key), int(meta.get(offset_key, "0")))
            self._trimmed = self.lease.grants

    def _unfolded_has(self, kinds: Sequence[str]) -> bool:
        """Might a record not yet folded be of one of ``kinds``? (Lease held: nobody else
        folds meanwhile.) Looks at this process's pending records and at the other slots'
        bytes past how far the lock file says they are folded; True when unsure."""
        journal = self.journal
        if any(r.get("t") in kinds for r in journal.pending):
            return True
        changed = self.peers.changed(journal.slot if journal.is_open else None)
        return bool(changed) and self.peers.mention(changed, self.lease.folded, kinds)

    def token_row(self, token_id: str) -> dict[str, Any] | None:
        with self.session("checking a token", kinds=("token",)) as con:
            cur = con.execute("SELECT * FROM tokens WHERE token_id = ?", [token_id])
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def _forget_folded(self) -> None:
        """Forget this process's pending records that the lease holder has folded (as the lock
        file says): what is pending is what DuckDB does not hold yet."""
        journal = self.journal
        mark = self.lease.folded(journal.slot) if journal.is_open and journal.pending else None
        if mark is not None:
            before = len(journal.pending)
            journal.trim(*mark)
            if len(journal.pending) != before:
                self.folds += 1  # caches of what is pending start over

    def _release_locked(self, fold: bool = True) -> None:
        """Fold, close DuckDB and let go of the lease; the slot too once it is empty.
        ``fold=False`` hands the store to a waiting process at once: it folds this slot."""
        if not self.lease.held:
            return
        try:
            if fold:  # this slot and any other that changed
                self._fold()
        finally:
            if self._con is not None:
                try:
                    self._con.close()
                    self.writeback.close()  # DuckDB has let go of the file (and of its lock)
                    self._known = _file_signature(self.path)
                except duckdb.Error:
                    self._known = None
                self._con = None
            if self.journal.is_open and self.journal.empty:
                self.journal.close()
            self.lease.release(closed=list(self._known) if self._known else None)


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file (waiting out a short lock by another program) and check it."""
    deadline = time.monotonic() + config.lock_timeout()
    delay = 0.01
    while True:
        try:
            con = duckdb.connect(str(path), config=dict(STORE_CONFIG))
            break
        except duckdb.IOException as exc:
            msg = str(exc)
            if "lock" not in msg.lower():
                raise duckdb_fault(msg, path, "open") or schema.incompatible(path, msg) from None
            if time.monotonic() >= deadline:
                m = re.search(r"PID (\d+)", msg)
                who = f"process {m.group(1)}" if m else "another program"
                raise StoreBusy(
                    f"the store {path} is locked by {who} outside airun_nb; "
                    f"gave up after {config.lock_timeout():g} s"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        except duckdb.Error as exc:
            msg = str(exc)
            raise duckdb_fault(msg, path, "open") or schema.incompatible(path, msg) from None
    try:
        schema.check(con, path)
    except BaseException:
        con.close()
        raise
    return con


def _meta(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The journal slots' marks in ``airun_meta``."""
    rows = con.execute("SELECT key, value FROM airun_meta WHERE key LIKE 'journal_%'").fetchall()
    return {str(k): str(v) for k, v in rows}


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
        store._known = None
        if store._con is not None:
            with contextlib.suppress(duckdb.Error):
                store._con.close()
                store.writeback.close()  # DuckDB has let go of the file (and of its lock)
            store._con = None
        store.journal.close()  # its records stay in the file, for the next holder
        store.lease.release()
        raise fault from None


def _report(store: Store, message: str | None) -> None:
    """Say in one line what recovery kept and set aside; keep it as an event too."""
    if not message:
        return
    warnings.warn_explicit(message, StoreWarning, APP, 0)
    event = {"t": "ev", "ts": time.time(), "run_id": None, "step_id": None}
    event.update(kind="journal_recovered", detail=json.dumps({"message": message}))
    store._journal().append(event)


def _skipped(n: int) -> str | None:
    return f"skipped {n} journal record(s) that are not JSON objects" if n else None


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


@atexit.register
def _release_all() -> None:
    # Keeper threads stop first and are waited for: a daemon thread still inside DuckDB when
    # the interpreter finalizes would abort the process as it exits.
    keeper.stopping.set()
    for store in list(_registry.values()):
        store.keeper.join(timeout=5)
    for store in list(_registry.values()):
        with contextlib.suppress(Exception):
            store._exit()
