"""Continuing the runs ``airun mcp`` launched once a person has decided their gates.

A run launched through MCP waits at a gate like a notebook's. The person decides wherever they
like (the CLI, the approval page, the dashboard, a widget); this server then continues the run in
its own process, as a live kernel does for the gates it shows. One daemon thread watches: while
nothing changes it only looks at the store's and the journals' sizes and times (a decision is
always a journal append), and reads the watched runs once the files have been still for a look,
so it never makes a writer that is finishing hand the store over. Runs launched by an earlier
server of the same principal are picked up when the server starts.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.settings.environment import StoreURL
from airun_nb.store import launches
from airun_nb.store.database import files_signature
from airun_nb.store.opening import open_store

POLL = 0.5  # seconds between looks at the files


class Continuer:
    def __init__(
        self, db: Path | StoreURL, principal: str, source: str, resume: Callable[[str], None]
    ) -> None:
        self.db = db
        self.principal = principal
        self.source = source
        self.resume = resume
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Any = None  # the files at the previous look
        self._seen: Any = None  # the files when the watched runs were last read

    def start(self) -> None:
        """Watch this principal's waiting runs from earlier servers too, then start looking."""
        with contextlib.suppress(AirunError):
            found = launches.waiting(
                open_store(self.db, create=False), source=self.source, launched_by=self.principal
            )
            with self._lock:
                self._runs.update(found)
        self._thread = threading.Thread(target=self._loop, name="airun-mcp-continue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop looking; a look under way finishes first (so the process never exits in the
        middle of a read of the store)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def watch(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)
            self._seen = None  # read at the next still look

    def watching(self) -> list[str]:
        with self._lock:
            return sorted(self._runs)

    def _loop(self) -> None:
        while not self._stop.wait(POLL):
            try:
                self.look()
            except Exception as exc:  # a bad look must not end the watch
                print(f"airun mcp: could not look at the waiting runs: {exc}", file=sys.stderr)

    def look(self) -> None:
        """Continue every watched run that no longer waits for anyone."""
        runs = self.watching()
        if not runs:
            return
        if isinstance(self.db, Path):
            sig: Any = files_signature(self.db)
        else:  # a team store: its NOTIFY after each commit, and a look every 5 s anyway
            sig = (open_store(self.db).change_token(), int(time.monotonic() // 5))
        if sig != self._last:  # changing right now: look again once it is still
            self._last = sig
            return
        if sig == self._seen:
            return
        self._seen = sig
        ready, gone = launches.continuable(open_store(self.db, create=False), runs)
        with self._lock:
            self._runs.difference_update(ready, gone)
        for run_id in ready:
            try:
                self.resume(run_id)
            except AirunError as exc:  # continued elsewhere meanwhile, say
                print(f"airun mcp: run {run_id} not continued: {exc.message}", file=sys.stderr)
