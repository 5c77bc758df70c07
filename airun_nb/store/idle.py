"""The keeper: a thread per store handle that folds and lets go of the store when it pauses.

A process holds the store's lease only while it reads, folds or writes an output table. The
keeper looks every 10 ms: when another process waits for the lease it lets go at once (the
waiter folds this process's slot as it reads); when nothing happened for ``IDLE_RELEASE``
seconds it folds the slot and lets go; between two reads it folds what other processes
appended (a read lays those records over the tables instead of folding them, so the fold is
done here, off the read's path); when records wait in
the slot with nobody folding them, it folds them if the lease is free. It also makes the group
commit's last ``fsync`` of a burst (``AIRUN_SYNC=group``). It ends when there is nothing left to
keep, and is started again by the next use of the store.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Any, Protocol

from airun_nb.store.journal import Journal
from airun_nb.store.lease import Lease

IDLE_RELEASE = 0.25  # seconds without store activity before the lease is let go
FOLD_BEHIND = 0.02  # seconds without store activity before what others wrote is folded

stopping = threading.Event()  # set at interpreter exit: every keeper ends


class Kept(Protocol):
    """What the keeper uses of a store handle."""

    _mutex: Any
    journal: Journal
    lease: Lease
    _last_activity: float
    _yielded_at: float

    def _release_locked(self, fold: bool = True) -> None: ...

    def _forget_folded(self) -> None: ...

    def _fold_behind(self) -> None: ...


class Keeper:
    """The keeper thread of one store handle (holding it weakly)."""

    def __init__(self, store: Kept) -> None:
        self._ref = weakref.ref(store)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.thread = threading.Thread(target=self._run, name="airun-store-keeper", daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> None:
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)

    def _run(self) -> None:
        while not stopping.is_set():
            time.sleep(0.01)
            store = self._ref()
            if store is None:
                return
            try:
                if not tick(store):
                    return
            except Exception:  # pragma: no cover - the next user of the store reports it
                _let_go(store)  # a keeper that stops never leaves the store held
                return
            finally:
                del store


def _let_go(store: Kept) -> None:
    """After a fault in the keeper: let go of the lease (the journals keep every record)."""
    with contextlib.suppress(Exception), store._mutex:
        store._release_locked(fold=False)


def tick(store: Kept) -> bool:
    """One look at the store; False when there is nothing left to keep."""
    if not store._mutex.acquire(timeout=0.05):
        return True
    try:
        journal, lease = store.journal, store.lease
        idle = time.monotonic() - store._last_activity
        if journal.unsynced and journal.sync == "group" and idle >= journal.group_sync_s:
            journal.sync_now()  # group commit: the last records of a burst
        if lease.held:
            if lease.waiters():
                # The waiter folds this process's slot as it reads: appending goes on at once.
                store._release_locked(fold=False)
                store._yielded_at = time.monotonic()
            elif idle >= IDLE_RELEASE:
                store._release_locked()
            elif idle >= FOLD_BEHIND:
                # Between two reads: fold what the writers appended, so that the next read
                # lays few records over the tables (it reads without folding).
                store._fold_behind()
                return True
            else:
                return True
        elif journal.is_open and journal.pending and idle >= IDLE_RELEASE:
            store._forget_folded()  # what the holder folded of this slot meanwhile
            if journal.pending and lease.try_acquire("saving the journal"):
                # Records waited in this slot with nobody folding them; when the lease is
                # busy, its holder folds them (and this looks again shortly).
                store._release_locked()
        return lease.held or (journal.is_open and bool(journal.pending))
    finally:
        store._mutex.release()
