"""The latest run of each workflow, readable without the lease: one small file per workflow.

Re-running a cell asks the store one question first: is there a run of this workflow to
continue, or did the latest one finish with exactly these steps? Asked of DuckDB, that needs the
lease, and with several processes the lease changes hands for every run (closing and opening the
DuckDB file each time). ``<store>.heads/`` answers it without the lease: one JSON file per
workflow holding its latest run (by ``created_at``) as that run's latest record says, and, for a
completed run this process started, each step's ``eff_hash`` and fingerprint.

The file is written beside the journal, never instead of it, and in an order that keeps it from
claiming more than the journal holds: a record that leaves a run unfinished updates the file
*before* it is journaled, a completion *after*. So a process killed in between leaves a file
that says "running" (a dead owner: the reader asks DuckDB) rather than "completed". Updates take
a short ``flock`` on the file (read, compare ``created_at``, write in place); readers take it
shared.

A file is trusted only once it is ``complete``: a process that read the latest run from DuckDB
under the lease (the whole truth) settles it. Until then, and for anything but "the latest run
finished with these steps" or "the latest run is executing in another live process", the
planner asks DuckDB as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

MAX_STEPS = 512  # a completed run's steps are kept in its file up to this many
_EPOCH = datetime(1970, 1, 1)
_OWNER = ("owner_pid", "owner_host", "owner_token")


def epoch(value: Any) -> float:
    """``created_at`` as epoch seconds (journal records hold floats, DuckDB datetimes)."""
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return (value.replace(tzinfo=None) - _EPOCH).total_seconds()
    return float(value)


class Heads:
    """The heads folder of one store, and what this process knows of the runs it started."""

    def __init__(self, db_path: Path, *, sync: bool = False) -> None:
        self.dir = db_path.with_name(db_path.name + ".heads")
        self.sync = sync
        self._lock = threading.Lock()
        # run id -> step id -> [eff_hash, fingerprint], for runs started in this process (every
        # step of a run started here is journaled when it begins); None: too many to keep.
        self._steps: dict[str, dict[str, list[Any]] | None] = {}
        self._tracked: dict[str, str] = {}  # workflow -> the run whose steps are kept
        self._written: dict[str, dict[str, Any]] = {}  # run id -> its entry as last written
        self._fresh: set[str] = set()  # runs started (not resumed) in this process

    def _entry(self, rec: Mapping[str, Any], steps: dict[str, list[Any]] | None) -> dict[str, Any]:
        return _entry(rec, steps, str(rec.get("run_id")) in self._fresh)

    # -- reading ---------------------------------------------------------------------------
    def read(self, workflow: str) -> dict[str, Any] | None:
        """The latest run of ``workflow`` when its file is complete (None: ask DuckDB)."""
        entry = self._load(workflow)
        if entry is None or not entry.get("complete"):
            return None
        return entry

    # -- writing ---------------------------------------------------------------------------
    def raw(self, workflow: str) -> dict[str, Any] | None:
        """The file's entry for ``workflow``, complete or not (None: none, or unreadable)."""
        return self._load(workflow)

    def before(self, recs: Sequence[Mapping[str, Any]]) -> None:
        """Before ``recs`` are journaled: runs they leave unfinished, steps they change."""
        for rec in recs:
            kind = rec.get("t")
            if kind == "ev" and rec.get("kind") == "run_started":
                self._fresh.add(str(rec.get("run_id")))
        for rec in recs:
            kind = rec.get("t")
            if kind == "run" and rec.get("status") != "completed":
                self._put(self._entry(rec, None))
            elif kind == "step":
                done = self._written.get(str(rec.get("run_id")))
                if done is not None and done.get("steps") is not None:
                    self._put({**done, "steps": None})  # changing after it completed

    def after(self, recs: Sequence[Mapping[str, Any]]) -> None:
        """After ``recs`` are journaled: steps of runs started here, completions."""
        started = {
            r.get("run_id") for r in recs if r.get("t") == "ev" and r.get("kind") == "run_started"
        }
        for rec in recs:
            kind = rec.get("t")
            run_id = str(rec.get("run_id"))
            if kind == "run":
                if rec.get("run_id") in started:
                    self._track(str(rec.get("workflow")), run_id)
                if rec.get("status") == "completed":
                    self._put(self._entry(rec, self._steps.get(run_id)))
            elif kind == "step" and run_id in self._steps:
                steps = self._steps[run_id]
                if steps is not None:
                    steps[str(rec["step_id"])] = [rec.get("eff_hash"), rec.get("fingerprint")]
                    if len(steps) > MAX_STEPS:
                        self._steps[run_id] = None
                done = self._written.get(run_id)
                if done is not None and done.get("status") == "completed":
                    self._put({**done, "steps": self._steps.get(run_id)})

    def settle(self, workflow: str, row: Mapping[str, Any] | None) -> None:
        """Under the lease: ``row`` is the latest run of ``workflow`` in the whole store."""
        entry = (
            _entry(row, None, False) if row is not None else {"workflow": workflow, "run_id": None}
        )
        self._put(entry, settle=True)

    def forget(self, workflow: str) -> None:
        """Drop ``workflow``'s file: runs were added behind the journal's back (a run copied in
        from another store), so the next reader asks DuckDB and settles it again."""
        with contextlib.suppress(OSError), self._locked(workflow) as fd:
            os.ftruncate(fd, 0)  # an empty file reads as "not known"

    # -- internals -------------------------------------------------------------------------
    def _track(self, workflow: str, run_id: str) -> None:
        old = self._tracked.get(workflow)
        if old is not None and old != run_id:
            self._steps.pop(old, None)
            self._written.pop(old, None)
            self._fresh.discard(old)
        self._tracked[workflow] = run_id
        self._steps.setdefault(run_id, {})

    def _file(self, workflow: str) -> Path:
        return self.dir / (hashlib.sha256(workflow.encode()).hexdigest()[:32] + ".json")

    def _load(self, workflow: str) -> dict[str, Any] | None:
        try:
            fd = os.open(self._file(workflow), os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # a writer holds it for one write
            return _parse(_read_all(fd), workflow)
        except OSError:
            return None
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, workflow: str) -> Iterator[int]:
        with self._lock:
            self.dir.mkdir(exist_ok=True)
            fd = os.open(self._file(workflow), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held for one read and one write
                yield fd
            finally:
                os.close(fd)

    def _put(self, entry: dict[str, Any], settle: bool = False) -> None:
        workflow = str(entry["workflow"])
        try:
            with self._locked(workflow) as fd:
                current = _parse(_read_all(fd), workflow)
                same = current is not None and current.get("run_id") == entry.get("run_id")
                if current is not None and (_newer(current, entry) or (settle and same)):
                    # A newer run is the latest; or settling the run the file already holds,
                    # whose content its writers keep in step with the journal: keep it.
                    if settle and not current.get("complete"):
                        self._write(fd, {**current, "complete": True})
                    return
                entry["complete"] = settle or bool(current and current.get("complete"))
                self._write(fd, entry)
        except OSError:
            # Unwritable: the file can no longer be trusted, and nothing else breaks.
            with contextlib.suppress(OSError):
                self._file(workflow).unlink()
            return
        if entry.get("run_id") is not None:
            self._written[str(entry["run_id"])] = entry

    def _write(self, fd: int, entry: dict[str, Any]) -> None:
        """In place (a rename per write would cost a flush on some file systems); a write cut
        short by a crash leaves a file that does not parse, which reads as "not known"."""
        data = json.dumps(entry, default=str).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        if self.sync:
            os.fsync(fd)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _parse(data: bytes, workflow: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(data) if data else None
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("workflow") != workflow:
        return None
    return entry


def _entry(
    rec: Mapping[str, Any], steps: dict[str, list[Any]] | None, fresh: bool
) -> dict[str, Any]:
    """``fresh``: written by the process that started the run (not one that resumed it)."""
    entry = {
        "workflow": rec.get("workflow"),
        "run_id": rec.get("run_id"),
        "status": rec.get("status"),
        "created_at": epoch(rec.get("created_at")),
        "steps": dict(steps) if steps is not None else None,
        "fresh": fresh,
    }
    entry.update({k: rec.get(k) for k in _OWNER})
    return entry


def _newer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Was run ``a`` created after run ``b`` (the latest run is the newest by created_at)?"""
    if a.get("run_id") is None:
        return False
    if b.get("run_id") is None:
        return True
    return (epoch(a.get("created_at")), str(a["run_id"])) > (
        epoch(b.get("created_at")),
        str(b["run_id"]),
    )
