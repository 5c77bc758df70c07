"""The journal: a small append-only file in front of the DuckDB store.

A DuckDB transaction costs about a millisecond, too much to pay for every state change of a
quick step. So each state change is first appended to ``<store>.journal`` with a single
``write`` (one JSON line). Once ``write`` returns, the record is in the operating system and
survives the process being killed (``AIRUN_SYNC=1`` adds an ``fsync`` for power loss). The
records are folded into DuckDB in batches by :class:`~airun_nb.store.Store`, which remembers in
the same DuckDB transaction how far it folded, so folding twice after a crash is harmless.

The file starts with a header line carrying a generation id; a fold that reaches the end
truncates the file and starts a new generation.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_HEADER_KEY = "airun_journal"


class Journal:
    def __init__(self, db_path: Path, *, sync: bool = False) -> None:
        self.path = db_path.with_name(db_path.name + ".journal")
        self.sync = sync
        self._fd: int | None = None
        self.gen = ""
        self.size = 0
        self.pending: list[dict[str, Any]] = []

    # The journal is only touched by the lease holder.
    def open(self) -> None:
        if self._fd is not None:
            return
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size
        if self.size == 0:
            self._start_generation()
        else:
            self.gen = self._read_header()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def append(self, record: dict[str, Any]) -> None:
        assert self._fd is not None, "journal used without the lease"
        line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        _write_all(self._fd, line)
        if self.sync:
            os.fsync(self._fd)
        self.size += len(line)
        self.pending.append(record)

    def append_many(self, records: Sequence[dict[str, Any]]) -> None:
        """Append several records with one ``write``: they survive a crash together or not."""
        assert self._fd is not None, "journal used without the lease"
        data = b"".join(
            json.dumps(r, separators=(",", ":"), default=str).encode() + b"\n" for r in records
        )
        _write_all(self._fd, data)
        if self.sync:
            os.fsync(self._fd)
        self.size += len(data)
        self.pending.extend(records)

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Records after byte ``offset`` (0 = after the header) and the offset of their end.

        A torn last line (a write cut short) is ignored.
        """
        assert self._fd is not None
        data = os.pread(self._fd, max(self.size, os.fstat(self._fd).st_size), 0)
        header_end = data.find(b"\n") + 1
        start = max(offset, header_end)
        records: list[dict[str, Any]] = []
        pos = start
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break
            try:
                records.append(json.loads(data[pos:end]))
            except ValueError:
                break
            pos = end + 1
        return records, pos

    def reset(self) -> None:
        """Everything is folded: empty the file and start a new generation."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        self._start_generation()
        self.pending.clear()

    @property
    def empty(self) -> bool:
        return self.size <= len(self._header_bytes())

    def _header_bytes(self) -> bytes:
        return json.dumps({_HEADER_KEY: 1, "gen": self.gen}).encode() + b"\n"

    def _start_generation(self) -> None:
        assert self._fd is not None
        self.gen = uuid.uuid4().hex
        header = self._header_bytes()
        _write_all(self._fd, header)
        self.size = len(header)

    def _read_header(self) -> str:
        assert self._fd is not None
        head = os.pread(self._fd, 256, 0)
        line = head.split(b"\n", 1)[0]
        try:
            return str(json.loads(line)["gen"])
        except (ValueError, KeyError, TypeError):
            # Unreadable header: treat the file as a fresh, unknown generation.
            return "unknown"


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write must not tear a record)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
