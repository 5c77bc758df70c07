"""The keeper: a thread per store handle that folds and lets go of the store when it pauses.

A process holds the store's lease only while it reads, folds or writes an output table. The
keeper looks every 10 ms: when another process waits for the lease it lets go at once (the
waiter folds this process's slot as it reads); when nothing happened for ``IDLE_RELEASE``
seconds it folds the slot and lets go; a process that only reads lets go as soon as another
process journals records. Folding is the writers' work, done in small batches as
they go, so that a reader finds only a short unfolded tail whatever the writers' speed: while
this process holds the lease, the keeper folds every slot that changed (its own and the other
processes') every ``FOLD_INTERVAL``; while records wait in this process's slot and the lease is
free, it takes the lease and folds them. It also makes the group commit's last ``fsync`` of a
burst (``AIRUN_SYNC=group``). It ends when there is nothing left to keep, and is started again
by the next use of the store.
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
FOLD_INTERVAL = 0.025  # seconds between two folds of the keeper while records keep coming

stopping = threading.Event()  # set at interpreter exit: every keeper ends


class Kept(Protocol):
    """What the keeper uses of a store handle."""

    _mutex: Any
    journal: Journal
    lease: Lease
    _last_activity: float
    _yielded_at: float
    _folded_at: float
    _appended_at: float

    def _release_locked(self, fold: bool = True) -> None: ...

    def _keep_folded(self) -> None: ...

    def _forget_folded(self) -> None: ...

    def others_appending(self) -> bool: ...


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
        now = time.monotonic()
        due = now - store._folded_at >= FOLD_INTERVAL
        if lease.held:
            if lease.waiters():
                # The waiter folds this process's slot as it reads: appending goes on at once.
                store._release_locked(fold=False)
                store._yielded_at = time.monotonic()
            elif idle >= IDLE_RELEASE:
                store._release_locked()
            elif (
                now - store._appended_at >= IDLE_RELEASE
                and not journal.pending
                and store.others_appending()
            ):
                # Only reading here while others write: fold what came meanwhile and let go
                # now, so that the writers fold their own records as they go (and are held
                # back by it) rather than this reader folding for all of them between reads.
                store._release_locked()
            else:
                if due:  # keep the unfolded tail short for the next reader
                    store._keep_folded()
                return True
        elif journal.is_open and journal.pending and (idle >= IDLE_RELEASE or due):
            store._forget_folded()  # what the holder folded of this slot meanwhile
            if journal.pending and lease.try_acquire("saving the journal"):
                # Records wait in this slot and the lease is free: fold them now (and the
                # other slots too). When the lease is busy, its holder folds them as it goes.
                if idle >= IDLE_RELEASE:
                    store._release_locked()
                else:
                    store._keep_folded()
        return lease.held or (journal.is_open and bool(journal.pending))
    finally:
        store._mutex.release()
