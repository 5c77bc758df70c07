"""Writing a large output table's blocks to disk while DuckDB is still producing them.

DuckDB writes a large output table's blocks into the store file as it compresses them, and its
commit then makes the file durable with one ``fdatasync``: for a 100 MB DataFrame (about 40 MB
of blocks) that call waited about 0.1 s for the disk, after all the compression was done. While
such a table is written, a side thread calls ``fdatasync`` on the store file every
:data:`EVERY` seconds, so the disk writes the blocks while the next ones are being compressed
and the commit's own ``fdatasync`` finds only the last few left (about 0.01 s). What is durable
once the commit returns is unchanged: the commit still syncs everything itself.

The descriptor is opened on the first large write and kept until DuckDB has closed the file:
DuckDB locks the file with ``fcntl``, and POSIX drops a process's ``fcntl`` locks on a file when
*any* of its descriptors for that file is closed, so closing ours while DuckDB has the file open
would let another program open the store beside it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

EVERY = 0.05  # seconds between two writebacks while a large table is written
BIG_BYTES = 8 * 1024 * 1024  # Arrow bytes from which a table's write is written back as it goes

_sync = getattr(os, "fdatasync", os.fsync)


class Writeback:
    """The store file's descriptor for writebacks, for one store handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.syncs = 0  # writebacks made (for tests)

    @contextlib.contextmanager
    def during(self, nbytes: int) -> Iterator[None]:
        """Write the store file back every :data:`EVERY` seconds while the block runs, when
        ``nbytes`` (the table's Arrow size) reaches :data:`BIG_BYTES`. Call it only while the
        store's DuckDB connection is open, and :meth:`close` once that is closed."""
        fd = self._open() if nbytes >= BIG_BYTES else None
        if fd is None:
            yield
            return
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(EVERY):
                try:
                    _sync(fd)
                except OSError:  # the commit's own sync reports what is wrong with the disk
                    return
                self.syncs += 1

        thread = threading.Thread(target=run, name="airun-store-writeback", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _open(self) -> int | None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return None
        return self._fd

    def close(self) -> None:
        """Close the descriptor: only after DuckDB has closed the file (see the module)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
