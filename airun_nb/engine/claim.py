"""Claiming a run: check who owns it and write the claim in one hold of the exclusive lease.

Whoever resumes a run or rolls it back first claims it. :func:`claim_run` takes the lease (or
keeps the one the caller already holds in a :meth:`Store.session`), re-reads the run row after
folding the journal, checks that no live process owns it and journals a run row naming this
process as owner, all before the lease can change hands. A second process that selected the
same run then re-reads it under the lease, sees a live owner and is refused with the one-line
"run is busy" message naming the holder. The OS drops the lease of a process that dies, and its
journaled claim is folded by the next holder, so a claim is never lost and never half-made.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from airun_nb.errors import RunBusy, RunNotFound
from airun_nb.store import owner, transitions
from airun_nb.store.backend import Backend
from airun_nb.store.database import TABLES

# Statuses in which a live owner is executing the run right now.
OWNED = ("running", "rolling_back")
_TS_COLUMNS = frozenset(c for c, t in TABLES["runs"][0] if t == "TIMESTAMP")
_EPOCH = datetime(1970, 1, 1)


def busy_message(row: Mapping[str, Any]) -> str:
    return (
        f"run {row['run_id']} is executing in another process (pid {row['owner_pid']} "
        f"on {row['owner_host']}); wait for it or interrupt it there"
    )


def claim_run(
    store: Backend,
    run_id: str,
    *,
    status: str,
    owner: Mapping[str, Any],
    alive: Callable[[Mapping[str, Any]], bool],
    expect_status: Collection[str] | None = None,
    owned: Collection[str] = OWNED,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Make this process the owner of ``run_id`` and set its status to ``status``.

    ``owner`` holds the owner columns to write (``owner_pid``, ``owner_host``,
    ``owner_token``); ``alive(row)`` tells whether a row's owner is a live process. Raises
    :class:`RunNotFound`, or :class:`RunBusy` when a live process owns the run (its status is
    one of ``owned``) or the status is not one of ``expect_status``. ``extra`` sets more
    columns of the claimed row (``error``...). Returns the row as it was before the claim
    (``SELECT *`` shape), for planning.
    """
    with store.session(f"claiming run {run_id}"):
        rows = [r] if (r := store.run_row(run_id)) else []
        if not rows:
            raise RunNotFound(f"no run '{run_id}' in {store.path}")
        row = rows[0]
        if row["status"] in owned and alive(row):
            raise RunBusy(busy_message(row))
        if status in owned and not store.hold_run(run_id):  # a server store: its run lock
            raise RunBusy(busy_message(row))
        if expect_status is not None and row["status"] not in expect_status:
            raise RunBusy(
                f"run {run_id} is {row['status']} now (another process changed it); "
                "look at it with `airun show " + run_id + "`"
            )
        claim: dict[str, Any] = {"t": "run"}
        for col, _ in TABLES["runs"][0]:
            value = row.get(col)
            claim[col] = _epoch(value) if col in _TS_COLUMNS else value
        claim.update(owner)
        claim.update(extra or {})
        claim["status"] = status
        claim["updated_at"] = time.time()
        transitions.commit(store, [claim])  # same lease hold as the read above
    return row


class RunClaim:
    """A runner's claim on the run it resumes or rolls back (``dry``: plan only, claim none)."""

    def __init__(self, store: Backend) -> None:
        self.store = store
        self.dry = False
        self.taken: tuple[str, str] | None = None
        self._before: dict[str, Any] | None = None  # the run row as it was before the claim

    def take(self, row: Mapping[str, Any] | None, mode: str) -> None:
        """Claim the run ``row`` selected for ``mode``; call within the selecting session."""
        if self.dry or row is None or mode not in ("resume", "rollback"):
            return
        self._before = claim_run(
            self.store,
            str(row["run_id"]),
            status="rolling_back" if mode == "rollback" else "running",
            owner=owner.owner_fields(),
            alive=self.store.owner_alive,
            expect_status=(row["status"],),
        )
        self.taken = (str(row["run_id"]), mode)

    def fail(self, exc: BaseException) -> None:
        """Planning failed after the claim, before the run did anything: a refusal changes
        nothing, so the run row goes back to what it was (status, owner, error)."""
        taken, before = self.taken, self._before
        self.taken = self._before = None
        if taken is not None:
            self.store.let_go_run(taken[0])  # a server store's run lock: nothing runs here
        if taken is None or before is None or isinstance(exc, RunBusy):
            return
        with contextlib.suppress(Exception):  # the planning error is what the user must see
            release_claim(self.store, before)


def release_claim(store: Backend, before: Mapping[str, Any]) -> None:
    """Write the run row back as it was before this process claimed it (nothing ran since)."""
    row: dict[str, Any] = {"t": "run"}
    for col, _ in TABLES["runs"][0]:
        value = before.get(col)
        row[col] = _epoch(value) if col in _TS_COLUMNS else value
    with store.session(f"releasing run {before['run_id']}"):
        # The restore of a row that was valid a moment ago is no transition to check.
        transitions.commit(store, [row], checked=True)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value.replace(tzinfo=None) - _EPOCH).total_seconds()
    return float(value)
