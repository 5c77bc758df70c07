"""The event stream: every row of the store's ``events`` table, as Server-Sent Events.

Events are sent in the store's one order: ``events.seq``, the number the store gives each event
when it is folded (see :mod:`airun_nb.store.fold`), never a writer's timestamp, so an event
recorded by a process whose clock is wrong, or folded after a later-stamped one was sent, is
neither lost nor sent twice. Each SSE message carries its number as its ``id``; a client that
reconnects with ``Last-Event-ID`` (or ``?after=N``) gets every event after it. A slow client
is never dropped behind: the stream reads the next batch only once the previous one was sent,
so its cursor is simply where it is.

Each client looks at the store file's and its journal's size and modification time ten times a
second (every state change is a journal append), and only when they changed (or every few
seconds anyway) reads the events after its cursor, in a worker thread. So an idle stream never
takes the store's lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from sse_starlette.sse import EventSourceResponse

from airun_nb.history.readmodels import FilterError, iso, parse_since
from airun_nb.settings.environment import StoreURL
from airun_nb.store.backend import Backend
from airun_nb.store.database import files_signature

POLL = 0.1  # seconds between looks at the files
READ_ANYWAY = 5.0  # seconds after which the events are read even if the files look unchanged
BATCH = 500


def _fetch(store: Backend, after: int, run: str | None) -> list[dict[str, Any]]:
    return store.events_after(after, run, BATCH)


def _start(store: Backend, since: datetime | None) -> int:
    """The cursor a new stream starts after: the last event now, or the one before the first
    event stamped ``since`` or later."""
    return store.event_cursor(since)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    try:
        detail = json.loads(row["detail"]) if row.get("detail") else None
    except ValueError:
        detail = row["detail"]
    return {
        "seq": row["seq"],
        "ts": iso(row["ts"]),
        "run_id": row["run_id"],
        "step_id": row["step_id"],
        "kind": row["kind"],
        "detail": detail,
    }


async def _events(
    request: Request, store: Backend, run: str | None, start: int | None, since: datetime | None
) -> AsyncIterator[dict[str, str]]:
    cursor = start if start is not None else await anyio.to_thread.run_sync(_start, store, since)
    seen: tuple[Any, ...] | None = None
    last_read = 0.0
    server = isinstance(store.path, StoreURL)
    while not await request.is_disconnected():
        now = time.monotonic()
        if server:  # a team store: woken by its NOTIFY after a commit (or READ_ANYWAY)
            if seen is not None:
                await anyio.to_thread.run_sync(store.wait_for_change, READ_ANYWAY)
            seen = ()
            rows = await anyio.to_thread.run_sync(_fetch, store, cursor, run)
            for row in rows:
                cursor = int(row["seq"])
                payload = json.dumps(_payload(row), default=str)
                yield {"event": "transition", "id": str(cursor), "data": payload}
            if len(rows) >= BATCH:
                seen = None
            continue
        assert isinstance(store.path, Path)
        signature = files_signature(store.path)
        if signature == seen and now - last_read < READ_ANYWAY:
            await anyio.sleep(POLL)
            continue
        seen, last_read = signature, now
        rows = await anyio.to_thread.run_sync(_fetch, store, cursor, run)
        for row in rows:
            cursor = int(row["seq"])
            payload = json.dumps(_payload(row), default=str)
            yield {"event": "transition", "id": str(cursor), "data": payload}
        if len(rows) >= BATCH:
            seen = None  # more to read: do not wait for the files to change
            continue
        await anyio.sleep(POLL)


def response(
    request: Request,
    store: Backend,
    *,
    run: str | None,
    since: str | None,
    after: int | None = None,
) -> Any:
    """The stream from ``after`` (or the ``Last-Event-ID`` header), else from ``since``, else
    from now."""
    last = request.headers.get("last-event-id", "").strip()
    if after is None and last:
        try:
            after = int(last)
        except ValueError:
            raise FilterError(f"Last-Event-ID {last!r} is not an event number") from None
    when = parse_since(since) if after is None else None
    return EventSourceResponse(_events(request, store, run, after, when), ping=15)
