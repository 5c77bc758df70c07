"""The journal: a small append-only file in front of the DuckDB store.

A DuckDB transaction costs about a millisecond, too much to pay for every state change of a
quick step. So each state change is first appended to ``<store>.journal`` with a single
``write``. Once ``write`` returns, the record is in the operating system and survives the
process being killed (``AIRUN_SYNC=group`` adds an ``fsync`` at most every few milliseconds,
``AIRUN_SYNC=1`` one per write, for power loss). The records are folded into DuckDB in batches
by :class:`~airun_nb.store.database.Store`, which remembers in the same DuckDB transaction how far it
folded, so folding twice after a crash is harmless.

Every process appends to a journal of its own, a *slot*: ``<store>.journal`` for the first,
``<store>.journal.2``, ``.3``... for the others. A process holds an exclusive ``flock`` on its
slot while it has records there, so appending never waits for another process; whoever holds
the store's lease folds every slot (see :mod:`~airun_nb.store.slots`), and a slot whose ``flock`` is
free belongs to nobody: its leftover records are recovered by the next holder.

The file starts with a header line carrying the format version and a generation id; a fold that
reaches the end truncates the file and starts a new generation. Each record is one line framed
so that it can be checked::

    <seq> <length> <crc32> <json>\\n        (seq, length, crc32: 8 lowercase hex digits)

``seq`` counts records within a generation, ``length`` is the byte length of the JSON text and
the CRC32 covers ``"<seq> <length> "`` and the JSON text. :meth:`Journal.scan` reads every
record that checks out, notes where the damage is (a torn write, NUL padding, garbage) and
resynchronises on the next valid frame, so records after a hole are not lost; a record whose
``seq`` was already seen is a duplicate and is skipped. Journals written before records were
framed (header version 1: bare JSON lines) are still read once; the next generation is framed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airun_nb.store.crashpoints import synced
from airun_nb.store.faults import os_fault
from airun_nb.store.lease import try_lock

_HEADER_KEY = "airun_journal"
VERSION = 2
_FRAME = re.compile(rb"([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) ")
_PREFIX = 27  # len("%08x %08x %08x ")
GROUP_SYNC_MS = 50.0  # AIRUN_SYNC=group: at most this long between fsyncs while records arrive
MAX_SLOTS = 256  # journals per store: processes appending at the same time


def slot_path(db_path: Path, slot: int) -> Path:
    """The journal file of ``slot`` (0: ``<store>.journal``, n: ``<store>.journal.<n+1>``)."""
    name = db_path.name + ".journal"
    return db_path.with_name(name if slot == 0 else f"{name}.{slot + 1}")


def slot_paths(db_path: Path) -> list[tuple[int, Path]]:
    """The journal slots that exist for a store (slots are never removed, so they are
    numbered without gaps)."""
    out = []
    for slot in range(MAX_SLOTS):
        p = slot_path(db_path, slot)
        if not os.path.lexists(p):
            if slot:  # slot 0 may be missing while a later one exists (removed by hand)
                break
            continue
        out.append((slot, p))
    return out


def meta_keys(slot: int) -> tuple[str, str]:
    """The ``airun_meta`` keys holding a slot's folded generation and byte offset."""
    if slot == 0:
        return ("journal_gen", "journal_offset")
    return (f"journal_gen.{slot + 1}", f"journal_offset.{slot + 1}")


def encode(seq: int, record: dict[str, Any]) -> bytes:
    """One framed record line."""
    payload = json.dumps(record, separators=(",", ":"), default=str).encode()
    head = b"%08x %08x " % (seq & 0xFFFFFFFF, len(payload))
    return head + b"%08x " % zlib.crc32(payload, zlib.crc32(head)) + payload + b"\n"


def frame(data: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """The record framed at ``pos`` as (seq, JSON text, end) if its frame and checksum check
    out (the JSON itself is not parsed), else None."""
    m = _FRAME.match(data, pos)
    if m is None:
        return None
    length = int(m.group(2), 16)
    start = pos + _PREFIX
    end = start + length
    if end >= len(data) or data[end] != 0x0A:
        return None
    payload = data[start:end]
    if zlib.crc32(payload, zlib.crc32(data[pos : pos + 18])) != int(m.group(3), 16):
        return None
    return int(m.group(1), 16), payload, end + 1


def decode(data: bytes, pos: int) -> tuple[int, dict[str, Any], int] | None:
    """The record framed at ``pos`` as (seq, record, end), or None if it does not check out."""
    got = frame(data, pos)
    if got is None:
        return None
    seq, payload, end = got
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return seq, record, end


@dataclass
class Scan:
    """What :meth:`Journal.scan` found past the folded offset."""

    records: list[dict[str, Any] | str] = field(default_factory=list)  # str: JSON text (raw)
    damage: list[tuple[int, int]] = field(default_factory=list)  # [start, end) byte ranges
    after_damage: int = 0  # valid records found after the first damaged range
    duplicates: int = 0
    end: int = 0  # file size scanned up to
    version: int = VERSION

    @property
    def damaged_bytes(self) -> int:
        return sum(b - a for a, b in self.damage)

    @property
    def first_damage(self) -> int | None:
        return self.damage[0][0] if self.damage else None

    def describe(self, journal: Path, aside: Path | None) -> str | None:
        """One line saying what recovery kept and what it set aside (None: nothing to say)."""
        parts = []
        if self.damage:
            start = self.damage[0][0]
            kept = f"kept in {aside}" if aside else "left in place"
            if self.after_damage == 0 and len(self.damage) == 1:
                parts.append(
                    f"the last record of {journal} was torn: discarded {self.damaged_bytes} "
                    f"bytes at offset {start} ({kept}); folded the {len(self.records)} "
                    "records before it"
                )
            else:
                parts.append(
                    f"{journal} has {self.damaged_bytes} damaged bytes in {len(self.damage)} "
                    f"place(s) from offset {start}: folded {len(self.records)} valid records "
                    f"({self.after_damage} of them after the damage); bytes from offset "
                    f"{start} {kept}"
                )
        if self.duplicates:
            what = "; skipped" if parts else f"{journal}: skipped"
            parts.append(f"{what} {self.duplicates} duplicated record(s)")
        return "".join(parts) or None


class Journal:
    def __init__(self, db_path: Path, *, sync: bool | str = False) -> None:
        self.db_path = db_path
        self.slot = 0
        self.path = slot_path(db_path, 0)
        self.sync = (
            {True: "always", False: "off"}.get(sync, sync) if isinstance(sync, bool) else sync
        )
        self.group_sync_s = GROUP_SYNC_MS / 1000.0
        self._fd: int | None = None
        self.gen = ""
        self.version = VERSION
        self.size = 0
        self.seq = 0
        self.pending: list[dict[str, Any]] = []
        self.ends: list[int] = []  # byte offset just past each pending record
        self.leftover = False  # the slot held records of a process that died
        self._synced_at = 0.0
        self.unsynced = False

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Take the first free slot (its ``flock``) and open it for appending."""
        if self._fd is not None:
            return
        try:
            for slot in range(MAX_SLOTS):
                self.slot, self.path = slot, slot_path(self.db_path, slot)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
                if try_lock(self._fd):
                    break
                os.close(self._fd)
                self._fd = None
            else:
                raise OSError(0, f"all {MAX_SLOTS} journal slots are in use")
            self.size = os.fstat(self._fd).st_size
            self.seq = 0
            self.pending, self.ends = [], []
            if self.size == 0:
                self._start_generation()
                self.leftover = False
            else:
                self.gen, self.version = self._read_header()
                self.leftover = self.size > len(self._header_bytes()) or self.gen == "unknown"
        except OSError as exc:
            if self._fd is not None and self.size == 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)  # no half-written header left behind
            self.close()
            raise os_fault(exc, self.path, "open the journal") from None

    def close(self) -> None:
        """Close the slot and let go of it (closing drops the ``flock``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.pending, self.ends = [], []

    @classmethod
    def peer(cls, db_path: Path, slot: int) -> tuple[Journal, bool] | None:
        """Another process's slot, opened to be folded: (journal, owner_dead) or None when
        the file is gone or empty. With ``owner_dead`` this process holds the slot's
        ``flock`` until :meth:`close`; a live owner's slot is only read."""
        j = cls(db_path)
        j.slot, j.path = slot, slot_path(db_path, slot)
        try:
            fd = os.open(j.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_fault(exc, j.path, "open the journal") from None
        j._fd = fd
        dead = try_lock(fd)
        j.size = os.fstat(fd).st_size
        if j.size == 0:
            j.close()
            return None
        j.gen, j.version = j._read_header()
        return j, dead

    def trim(self, gen: str | None, offset: int) -> None:
        """Another process folded this slot up to ``offset``: forget what it folded."""
        if gen != self.gen or not self.ends or offset < self.ends[0]:
            return
        k = 0
        while k < len(self.ends) and self.ends[k] <= offset:
            k += 1
        del self.pending[:k], self.ends[:k]

    def append(self, record: dict[str, Any]) -> None:
        self.append_many((record,))

    def append_many(self, records: Sequence[dict[str, Any]]) -> None:
        """Append several records with one ``write``: they survive a crash together or not."""
        assert self._fd is not None, "journal used before it was opened"
        seq = self.seq
        parts = []
        ends = []
        end = self.size
        for r in records:
            seq += 1
            line = encode(seq, r)
            parts.append(line)
            end += len(line)
            ends.append(end)
        data = b"".join(parts)
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            # Never leave half a record behind: later records would follow a torn one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
            raise os_fault(exc, self.path, "write the journal") from None
        self.seq = seq
        self.size += len(data)
        self.pending.extend(records)
        self.ends.extend(ends)
        self.unsynced = True  # in every mode: a run's end syncs (see Store.sync)
        due = time.monotonic() - self._synced_at >= self.group_sync_s
        if self.sync == "always" or (self.sync == "group" and due):
            self.sync_now()

    def sync_now(self) -> None:
        """``fsync`` what was written since the last one (group commit, a run's end)."""
        if self._fd is not None and self.unsynced:
            os.fsync(self._fd)
            self.unsynced = False
            self._synced_at = time.monotonic()
            synced(self.path, self.gen, self.size)

    def scan(self, offset: int, *, raw: bool = False) -> Scan:
        """Every record after byte ``offset`` (0 = after the header) that checks out.

        Damage (a torn write, NUL padding, garbage) is noted, not fatal: reading resumes at the
        next valid record, so records after a hole are kept. ``end`` is the file size. With
        ``raw`` the records are their JSON text, checked by frame and checksum but not parsed:
        the fold parses them inside DuckDB (see :func:`~airun_nb.store.fold.fold`).
        """
        assert self._fd is not None
        total = max(self.size, os.fstat(self._fd).st_size)
        nl = os.pread(self._fd, 4096, 0).find(b"\n") if self.gen != "unknown" else -1
        start = min(max(offset, nl + 1 if nl >= 0 else 0), total)
        # Only the bytes past the folded offset are read: a slot another process keeps
        # appending to is not read again from its start at every fold.
        data = os.pread(self._fd, total - start, start) if total > start else b""
        scan = Scan(end=start + len(data), version=self.version)
        if self.version < VERSION:
            _scan_lines(data, 0, scan)
            scan.damage = [(a + start, b + start) for a, b in scan.damage]
            return scan
        pos = 0
        last_seq = -1
        while pos < len(data):
            got = _raw(data, pos) if raw else decode(data, pos)
            if got is None:
                nxt = _resync(data, pos + 1)
                scan.damage.append((pos, nxt))
                pos = nxt
                continue
            seq, record, pos = got
            if seq <= last_seq:
                scan.duplicates += 1
                continue
            last_seq = seq
            scan.records.append(record)
            if scan.damage:
                scan.after_damage += 1
        scan.damage = [(a + start, b + start) for a, b in scan.damage]
        return scan

    def set_aside(self, start: int) -> Path:
        """Copy the bytes from ``start`` to the end into ``<journal>.damaged-<time>`` (fsynced)."""
        assert self._fd is not None
        data = os.pread(self._fd, os.fstat(self._fd).st_size - start, start)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                target.unlink()
            # Nothing was folded or truncated yet: the damaged journal stays as it is.
            raise os_fault(exc, target, "set the damaged journal bytes aside in") from None
        return target

    def reset(self) -> None:
        """Everything is folded: empty the file and start a new generation."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, 0)
            self._start_generation()
        except OSError as exc:
            raise os_fault(exc, self.path, "reset the journal") from None
        self.pending.clear()
        self.ends.clear()
        self.leftover = False
        self.unsynced = False

    @property
    def empty(self) -> bool:
        return self.size <= len(self._header_bytes())

    def _header_bytes(self) -> bytes:
        return json.dumps({_HEADER_KEY: self.version, "gen": self.gen}).encode() + b"\n"

    def _start_generation(self) -> None:
        assert self._fd is not None
        self.gen = uuid.uuid4().hex
        self.version = VERSION
        self.seq = 0
        header = self._header_bytes()
        _write_all(self._fd, header)
        self.size = len(header)

    def _read_header(self) -> tuple[str, int]:
        assert self._fd is not None
        head = os.pread(self._fd, 256, 0)
        line = head.split(b"\n", 1)[0]
        try:
            info = json.loads(line)
            return str(info["gen"]), int(info[_HEADER_KEY])
        except (ValueError, KeyError, TypeError):
            # Unreadable header: an unknown generation, read from the first byte.
            return "unknown", VERSION


def _raw(data: bytes, pos: int) -> tuple[int, str, int] | None:
    """The record framed at ``pos`` as (seq, JSON text, end): records are written as ASCII
    (``json.dumps`` escapes the rest), so text that is not is damage."""
    got = frame(data, pos)
    if got is None:
        return None
    seq, payload, end = got
    if not payload.startswith(b"{") or not payload.isascii():
        return None
    return seq, payload.decode("ascii"), end


def _resync(data: bytes, pos: int) -> int:
    """The offset of the next record at or after ``pos`` that checks out (or the end)."""
    for m in _FRAME.finditer(data, pos):
        if decode(data, m.start()) is not None:
            return m.start()
    return len(data)


def _scan_lines(data: bytes, pos: int, scan: Scan) -> None:
    """Version 1 journals: one bare JSON object per line."""
    while pos < len(data):
        end = data.find(b"\n", pos)
        stop = len(data) if end < 0 else end + 1
        try:
            record = json.loads(data[pos:stop])
            ok = isinstance(record, dict) and end >= 0
        except ValueError:
            ok = False
        if ok:
            scan.records.append(record)
            if scan.damage:
                scan.after_damage += 1
        elif scan.damage and scan.damage[-1][1] == pos:
            scan.damage[-1] = (scan.damage[-1][0], stop)
        else:
            scan.damage.append((pos, stop))
        pos = stop


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write must not tear a record)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
