"""A kernel's watch over the gates it shows: a decision taken anywhere else (the CLI, the API,
another kernel, a policy) or a passed deadline reaches the gate's widget within a second.

One daemon thread per kernel. While nothing changes it only looks at the store file's and the
journal's size and modification time (a decision is always a journal append, folded into the
file later), so it never takes the store's lease while idle; when they change, or a watched
gate's deadline passes, it reads the watched gates' rows once. On a team store it reads them
when the server notifies a commit (``LISTEN/NOTIFY``), and every few seconds anyway.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from airun_nb.gates import followup
from airun_nb.settings.environment import is_url
from airun_nb.store.database import files_signature
from airun_nb.store.opening import open_store

POLL = 0.3  # seconds between looks at the files
SAFETY = 5.0  # a team store is read at least this often, notified or not


class Watched(Protocol):
    db: Path
    run_id: str
    gate_id: str
    row: dict[str, Any]

    def decided_elsewhere(self, row: dict[str, Any]) -> None: ...

    def deadline_reached(self) -> None: ...


def _past(deadline: Any) -> bool:
    if not isinstance(deadline, datetime):
        return False
    return deadline.replace(tzinfo=timezone.utc) <= datetime.now(timezone.utc)


class GateWatcher:
    def __init__(self) -> None:
        self._gates: dict[tuple[str, str, str], Watched] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._settling: dict[str, tuple[Any, ...]] = {}
        self.reads = 0  # how many times the store was read (the idle cost)

    def watch(self, widget: Watched) -> None:
        key = (str(widget.db), widget.run_id, widget.gate_id)
        if followup.has_follow_ups(widget.row):
            followup.watch(widget.db)  # its reminders and escalation fire from this kernel too
        with self._lock:
            self._gates[key] = widget
            self._seen.pop(str(widget.db), None)  # look once the file is still
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="airun-gate-watcher", daemon=True
                )
                self._thread.start()

    def forget(self, widget: Watched) -> None:
        with self._lock:
            key = (str(widget.db), widget.run_id, widget.gate_id)
            if self._gates.get(key) is widget:
                del self._gates[key]

    def clear(self) -> None:
        """Stop watching every gate (the widgets stay as they are)."""
        with self._lock:
            self._gates.clear()

    def watching(self) -> list[Watched]:
        with self._lock:
            return list(self._gates.values())

    def _loop(self) -> None:
        while True:
            time.sleep(POLL)
            with self._lock:
                if not self._gates:
                    self._thread = None
                    return
                by_db: dict[str, list[Watched]] = {}
                for (db, _r, _g), w in self._gates.items():
                    by_db.setdefault(db, []).append(w)
            for db, widgets in by_db.items():
                with contextlib.suppress(Exception):  # a bad look must not end the watch
                    self._look(db, widgets)

    def _look(self, db: str, widgets: Iterable[Watched]) -> None:
        widgets = list(widgets)
        due = [w for w in widgets if _past(w.row.get("deadline"))]
        server = is_url(db)
        if server:  # a team store: its NOTIFY after each commit, and a look every SAFETY s
            sig: Any = (open_store(db).change_token(), int(time.monotonic() // SAFETY))
        else:
            sig = files_signature(Path(db))
        if sig == self._seen.get(str(db)) and not due:
            return
        if not server and sig != self._settling.get(str(db)) and not due:
            # Changing right now: the writer (a CLI, say) still holds the file. Read once it
            # has been still for a poll, so the watcher never makes a finishing writer hand
            # the lease over on its way out.
            self._settling[str(db)] = sig
            return
        self.reads += 1
        keys = [(w.run_id, w.gate_id) for w in widgets]
        rows = open_store(db).decided_gates(keys)
        # Seen only once read: a look that failed (the store busy a while on a loaded machine)
        # is made again at the next poll, or a decision recorded meanwhile would be missed.
        self._seen[str(db)] = sig
        decided = {(r["run_id"], r["gate_id"]): r for r in rows}
        for w in widgets:
            row = decided.get((w.run_id, w.gate_id))
            if row is not None:
                self.forget(w)
                w.decided_elsewhere(row)
            elif w in due:
                self.forget(w)
                w.deadline_reached()


WATCHER = GateWatcher()
