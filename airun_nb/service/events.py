"""The event stream: every row of the store's ``events`` table, as Server-Sent Events.

Each client looks at the store file's and its journal's size and modification time ten times a
second (every state change is a journal append), and only when they changed (or every few
seconds anyway) reads the events newer than the last one it sent, in a worker thread. So an idle
stream never takes the store's lease, and a transition recorded by any process (a kernel, the
CLI, this service) reaches every open stream in the order it was recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import anyio
from fastapi import Request
from sse_starlette.sse import EventSourceResponse

from airun_nb.history.readmodels import iso, parse_since
from airun_nb.store.database import Store, files_signature

POLL = 0.1  # seconds between looks at the files
READ_ANYWAY = 5.0  # seconds after which the events are read even if the files look unchanged
BATCH = 500


def _fetch(store: Store, after: datetime, run: str | None) -> list[dict[str, Any]]:
    return store.events_since(after, run, BATCH)


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["ts"], row["run_id"], row["step_id"], row["kind"], row["detail"])


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    try:
        detail = json.loads(row["detail"]) if row.get("detail") else None
    except ValueError:
        detail = row["detail"]
    return {
        "ts": iso(row["ts"]),
        "run_id": row["run_id"],
        "step_id": row["step_id"],
        "kind": row["kind"],
        "detail": detail,
    }


async def _events(
    request: Request, store: Store, run: str | None, start: datetime
) -> AsyncIterator[dict[str, str]]:
    cursor = start
    sent_at_cursor: set[tuple[Any, ...]] = set()
    seen: tuple[Any, ...] | None = None
    last_read = 0.0
    while not await request.is_disconnected():
        now = time.monotonic()
        signature = files_signature(store.path)
        if signature == seen and now - last_read < READ_ANYWAY:
            await anyio.sleep(POLL)
            continue
        seen, last_read = signature, now
        rows = await anyio.to_thread.run_sync(_fetch, store, cursor, run)
        for row in rows:
            key = _key(row)
            if key in sent_at_cursor:
                continue
            if row["ts"] != cursor:
                cursor = row["ts"]
                sent_at_cursor = set()
            sent_at_cursor.add(key)
            yield {"event": "transition", "data": json.dumps(_payload(row), default=str)}
        if len(rows) >= BATCH:
            seen = None  # more to read: do not wait for the files to change
        await anyio.sleep(POLL)


def response(request: Request, store: Store, *, run: str | None, since: str | None) -> Any:
    start = parse_since(since) or datetime.now(timezone.utc).replace(tzinfo=None)
    return EventSourceResponse(_events(request, store, run, start), ping=15)
