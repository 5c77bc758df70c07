"""Workers' queue claims on the team store take row locks, not the store's writer lock: a claim
goes through while another client holds the writer lock, a row another transaction holds is
skipped (FOR UPDATE SKIP LOCKED) rather than waited for or taken twice, and a worker ends only
a claim that is still its own. A real server; the other client is a real second connection."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from airun_nb.store import transitions
from airun_nb.store.opening import open_store
from airun_nb.store.postgres.backend import run_lock_key, worker_lock_key
from airun_nb.store.postgres.schema import WRITER_LOCK
from airun_nb.store.transitions import TransitionError


def _queued(store: Any, *run_ids: str) -> None:
    for run_id in run_ids:  # one at a time: each is younger than the one before
        store.enqueue(run_id, "default")


def _states(store: Any) -> dict[str, tuple[str, int, str | None]]:
    rows = store.query("SELECT run_id, state, claims, worker FROM queue")
    return {r: (state, claims, worker) for r, state, claims, worker in rows}


@pytest.fixture
def short_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim that waited for the writer lock would fail with a lock timeout, not hang."""
    monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "3")


def test_a_claim_goes_through_while_another_client_holds_the_writer_lock(
    pg_url: str, short_locks: None
) -> None:
    """Another client holds the writer lock (as a long gate decision or cancel would): a worker
    still claims the oldest queued run and ends its claim; the rows say so."""
    store: Any = open_store(pg_url)
    _queued(store, "r-1", "r-2")
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [WRITER_LOCK])
        assert store.claim_queued(["default"], "w1", 1) == ["r-1"]
        store.end_claim("r-1", "done")
        held = other.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (1,)  # the other client held the writer lock all along
    states = _states(store)
    assert states["r-1"] == ("done", 1, "w1")
    assert states["r-2"] == ("queued", 0, None)


def test_a_row_another_worker_is_claiming_is_skipped_not_taken_twice(pg_url: str) -> None:
    """A second client holds the oldest queued row locked (a claim in flight): the claim takes
    the next one without waiting; once that client lets go having changed nothing, the oldest
    is claimed by the next claim, once."""
    store: Any = open_store(pg_url)
    _queued(store, "r-1", "r-2", "r-3")
    with psycopg.connect(pg_url) as other:
        other.execute("SELECT run_id FROM queue WHERE run_id = 'r-1' FOR UPDATE")
        assert store.claim_queued(["default"], "w1", 1) == ["r-2"]
        other.rollback()
    assert store.claim_queued(["default"], "w2", 2) == ["r-1", "r-3"]
    assert store.claim_queued(["default"], "w3", 1) == []
    states = _states(store)
    assert states == {
        "r-1": ("claimed", 1, "w2"),
        "r-2": ("claimed", 1, "w1"),
        "r-3": ("claimed", 1, "w2"),
    }


def test_a_worker_ends_only_its_own_claim_and_only_by_a_checked_transition(pg_url: str) -> None:
    """A claim another worker holds (here: a row naming another process) is left as it is when
    this process ends "its" claim; a state the queue's transitions do not allow after claimed
    is refused before anything is written."""
    store: Any = open_store(pg_url)
    _queued(store, "r-1", "r-2")
    assert store.claim_queued(["default"], "w1", 2) == ["r-1", "r-2"]
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("UPDATE queue SET worker = 'w9', worker_pid = 1 WHERE run_id = 'r-2'")
    store.end_claim("r-2", "done")  # not ours any more: nothing changes
    with pytest.raises(TransitionError, match="cannot go from claimed to queued-twice"):
        transitions.end_claim(store, "r-1", {"state": "queued-twice"}, {})
    states = _states(store)
    assert states["r-1"] == ("claimed", 1, "w1")
    assert states["r-2"] == ("claimed", 1, "w9")


def test_a_dead_workers_claim_on_another_host_is_taken_over_and_a_live_ones_is_not(
    pg_url: str,
) -> None:
    """Two runs executing under claims of workers of other hosts (their pids mean nothing
    here): the one whose worker lock and run lock nobody holds (the server dropped them with the
    dead process) is taken over by the next claim; the one whose locks a live connection holds
    is left alone."""
    store: Any = open_store(pg_url)
    _queued(store, "r-1", "r-2")
    assert store.claim_queued(["default"], "w1", 2) == ["r-1", "r-2"]
    for run_id, host, token in (("r-1", "host-b", "tok-dead"), ("r-2", "host-c", "tok-live")):
        run = {"t": "run", "run_id": run_id, "workflow": "w", "status": "running"}
        run |= {"owner_pid": 4242, "owner_host": host, "owner_token": token}
        transitions.commit(store, [run])
    with psycopg.connect(pg_url, autocommit=True) as live:
        live.execute("SELECT pg_advisory_lock(%s)", [worker_lock_key("tok-live")])
        live.execute("SELECT pg_advisory_lock(%s)", [run_lock_key("r-2")])
        for run_id, host, token in (("r-1", "host-b", "tok-dead"), ("r-2", "host-c", "tok-live")):
            live.execute(
                "UPDATE queue SET worker = %s, worker_host = %s, worker_pid = 4242, "
                "worker_token = %s WHERE run_id = %s",
                [f"{host}:4242", host, token, run_id],
            )
        assert store.claim_queued(["default"], "w2", 2) == ["r-1"]
        states = _states(store)
    assert states["r-1"] == ("claimed", 2, "w2")
    assert states["r-2"] == ("claimed", 1, "host-c:4242")
