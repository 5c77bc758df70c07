"""The journal slots of other processes, as the lease holder folds them.

Each process appends to a journal slot of its own without waiting for the lease (see
:mod:`~airun_nb.store.journal`). Whoever holds the lease folds, besides its own records, what the
other slots hold past the offset ``airun_meta`` remembers for them:

- a slot whose owner is alive (its ``flock`` is taken) is only read: every complete record up
  to the first one that does not check out (a write still in progress) is folded, and the slot's
  mark moves to just past it;
- a slot whose owner died (its ``flock`` is free) is recovered the way a process recovers its
  own journal: damaged bytes are copied aside, every valid record is folded, and the slot is
  emptied after the fold commits.

A slot is looked at again only when its size or modification time changed, so a holder that
reads often pays a ``stat`` per slot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airun_nb.store.fold import Mark
from airun_nb.store.journal import Journal, meta_keys, slot_path, slot_paths

Signature = tuple[int, int, int]


@dataclass
class Batch:
    """What the other slots hold: records to fold, their marks, what to say and to empty."""

    records: list[dict[str, Any] | str] = field(default_factory=list)  # str: JSON text
    marks: list[Mark] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    dead: list[Journal] = field(default_factory=list)
    seen: dict[int, Signature] = field(default_factory=dict)


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Peers:
    """The other slots of one store, from the point of view of one process."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._seen: dict[int, Signature] = {}

    def changed(self, own: int | None) -> list[int]:
        """The slots (not ``own``) that changed since they were last folded."""
        out = []
        for slot, path in slot_paths(self.db_path):
            if slot != own and _signature(path) != self._seen.get(slot):
                out.append(slot)
        return out

    def grown(self, own: int | None) -> int:
        """Bytes the other slots grew by since they were last folded (a slot not folded yet
        counts whole)."""
        total = 0
        for slot, path in slot_paths(self.db_path):
            if slot == own:
                continue
            sig, seen = _signature(path), self._seen.get(slot)
            if sig is not None and sig != seen:
                total += sig[1] - (seen[1] if seen is not None and seen[0] == sig[0] else 0)
        return total

    def collect(self, slots: list[int], meta: dict[str, str]) -> Batch:
        """Read ``slots`` past their marks in ``meta``; dead owners' slots stay locked."""
        batch = Batch()
        for slot in slots:
            got = Journal.peer(self.db_path, slot)
            if got is None:
                sig = _signature(slot_path(self.db_path, slot))
                if sig is not None:
                    batch.seen[slot] = sig
                continue
            journal, dead = got
            sig = _signature(journal.path)
            gen_key, offset_key = meta_keys(slot)
            offset = int(meta[offset_key]) if meta.get(gen_key) == journal.gen else 0
            scan = journal.scan(offset, raw=True)  # parsed by the fold, inside DuckDB
            if not scan.records and not (dead and scan.damage):
                journal.close()  # nothing new (a write may be under way: looked at next time)
                if sig is not None and not scan.damage:
                    batch.seen[slot] = sig
                continue
            if dead:
                aside = journal.set_aside(scan.damage[0][0]) if scan.damage else None
                batch.records.extend(scan.records)
                batch.marks.append((slot, journal.gen, scan.end))
                batch.dead.append(journal)
                message = scan.describe(journal.path, aside)
                if message:
                    batch.reports.append(message)
                continue
            stop = scan.damage[0][0] if scan.damage else scan.end
            batch.records.extend(scan.records[: len(scan.records) - scan.after_damage])
            batch.marks.append((slot, journal.gen, stop))
            journal.close()
            if sig is not None and not scan.damage:
                batch.seen[slot] = sig
        return batch

    def mention(
        self,
        slots: list[int],
        folded: Callable[[int], tuple[str, int] | None],
        kinds: Sequence[str],
    ) -> bool:
        """Might the records of ``slots`` past their ``folded`` marks hold one of ``kinds``?
        A search of the bytes for the kind as every journal writes it (``"t":"kind"``); a
        slot whose header or mark cannot be read counts as yes."""
        needles = [n for k in kinds for n in (f'"t":"{k}"'.encode(), f'"t": "{k}"'.encode())]
        for slot in slots:
            try:
                fd = os.open(slot_path(self.db_path, slot), os.O_RDONLY)
            except FileNotFoundError:
                continue
            except OSError:
                return True
            try:
                size = os.fstat(fd).st_size
                head = os.pread(fd, 4096, 0)
                end = head.find(b"\n")
                if end < 0:
                    if size:
                        return True
                    continue
                try:
                    gen = str(json.loads(head[:end]).get("gen"))
                except (ValueError, AttributeError):
                    return True
                mark = folded(slot)
                start = mark[1] if mark is not None and mark[0] == gen else end + 1
                data = os.pread(fd, max(0, size - start), start)
            finally:
                os.close(fd)
            if any(n in data for n in needles):
                return True
        return False

    def done(self, batch: Batch) -> None:
        """After the fold committed: empty the dead owners' slots and let go of them."""
        for journal in batch.dead:
            try:
                journal.reset()
            finally:
                journal.close()
            sig = _signature(journal.path)
            if sig is not None:
                batch.seen[journal.slot] = sig
        self._seen.update(batch.seen)

    def abandon(self, batch: Batch) -> None:
        """The fold failed: let go of the dead owners' slots untouched."""
        for journal in batch.dead:
            journal.close()


def files_signature(db: Path) -> tuple[Any, ...]:
    """Sizes and modification times of a store and its journal: a change means new records
    (a cheap look that takes no lock, for watchers)."""
    out: list[Any] = []
    for p in (db, *(path for _, path in slot_paths(db))):
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)
