"""A large output table reaches the disk while it is written (store/writeback.py), and the
descriptor used for that never lets go of DuckDB's lock on the store file.

Real DuckDB files; the sizes that switch the writeback on are lowered instead of writing 8 MB.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from airun_nb.store import packed, writeback
from airun_nb.store.database import Store

# Another program opening the store file with DuckDB: "opened" or "refused".
OPEN_RAW = (
    "import sys, duckdb\n"
    "try:\n"
    "    duckdb.connect(sys.argv[1]).close()\n"
    "    print('opened')\n"
    "except duckdb.IOException as exc:\n"
    "    print('refused' if 'lock' in str(exc).lower() else str(exc))\n"
)


def _other_program(db: Path) -> str:
    # The timeout only guards against a hung child; nothing here asserts on time.
    res = subprocess.run(
        [sys.executable, "-c", OPEN_RAW, str(db)], capture_output=True, text=True, timeout=120
    )
    return res.stdout.strip() or res.stderr.strip()


def _table(rows: int) -> pa.Table:
    return pa.table(
        {"a": np.arange(rows, dtype="float64"), "s": [f"r{i:07d}" for i in range(rows)]}
    )


def test_a_large_output_is_written_back_while_it_is_written(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writeback, "BIG_BYTES", 0)
    monkeypatch.setattr(writeback, "EVERY", 0.001)
    synced = threading.Event()
    real_sync = writeback._sync

    def sync(fd: int) -> None:
        real_sync(fd)
        synced.set()

    monkeypatch.setattr(writeback, "_sync", sync)
    real_write = packed.write

    def write(*args: Any, **kwargs: Any) -> None:
        real_write(*args, **kwargs)
        assert synced.wait(60), "the store file was not written back during the write"

    monkeypatch.setattr(packed, "write", write)
    table = _table(50_000)
    store = Store.open(db)
    try:
        store.put_table("big", table)
        assert store.writeback.syncs >= 1
        assert store.get_table("big").equals(table)
    finally:
        store.release()


def test_a_small_output_opens_nothing_beside_duckdb(db: Path) -> None:
    store = Store.open(db)
    try:
        with store.session():
            store.put_table("small", _table(100))
            assert store.writeback._fd is None
        assert store.writeback.syncs == 0
    finally:
        store.release()


def test_the_store_file_stays_locked_against_other_programs(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSIX drops every fcntl lock a process has on a file when any of its descriptors for that
    file is closed: the writeback's descriptor stays open until DuckDB has closed the file."""
    monkeypatch.setattr(writeback, "BIG_BYTES", 0)
    store = Store.open(db)
    try:
        with store.session():
            store.put_table("big", _table(50_000))
            assert store.writeback._fd is not None
            assert _other_program(db) == "refused"
            store.put_table("again", _table(50_000))  # the same descriptor, still locked
            assert _other_program(db) == "refused"
    finally:
        store.release()
    assert store.writeback._fd is None
    assert _other_program(db) == "opened"
