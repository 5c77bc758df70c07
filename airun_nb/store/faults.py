"""Operating-system faults in one line: what failed, where, and what to do about it.

The store touches four files (``<store>``, ``.journal``, ``.lock``, ``.waiters/``); any of them
can meet a read-only file system, a full disk, a folder where a file should be, or a path
that cannot exist (under ``/proc``). :func:`os_fault` turns the :class:`OSError` (or DuckDB's
text for the same errno) into one :class:`~airun_nb.errors.StoreError` line.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from airun_nb.errors import StoreError

MAX_PATH = 100  # longer paths are shortened in messages (head ... tail)

# Said only where the fault stopped a run: the journal keeps what the run recorded.
_RESUME = "the run resumes where it stopped"
_RUN_WORK = ("write the journal", "writing a step output", "planning a run")
_WHY: dict[int, tuple[str, str]] = {
    errno.EROFS: (
        "the file system is read-only",
        "put the store on a writable disk (--db or AIRUN_DB)",
    ),
    errno.ENOSPC: ("the disk is full", "free some space and run again"),
    errno.EDQUOT: ("the disk quota is used up", "free some space and run again"),
    errno.EFBIG: ("the file size limit was reached (ulimit -f)", "raise the limit and run again"),
    errno.EISDIR: ("it is a folder", "move that folder away: airun_nb keeps a file there"),
    errno.EACCES: ("permission denied", "make it writable or choose another store path"),
    errno.EPERM: ("operation not permitted", "choose another store path"),
    errno.ENOENT: ("no such file or folder", "create the folder or choose another store path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another store path"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter store path"),
    errno.ELOOP: ("the path loops through symbolic links", "choose another store path"),
    errno.EIO: ("the disk reported an I/O error", "check the disk, then `airun doctor`"),
}
_VIRTUAL = ("/proc", "/sys")


def short(path: str | os.PathLike[str], limit: int = MAX_PATH) -> str:
    """``path`` as text, shortened in the middle when it is longer than ``limit``."""
    text = os.fspath(path)
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


def os_fault(exc: OSError, path: str | os.PathLike[str], doing: str) -> StoreError:
    """One line for an OS error met while ``doing`` (e.g. "write the journal") on ``path``."""
    code = exc.errno or 0
    why, hint = _WHY.get(code, (exc.strerror or str(exc), "see `airun doctor`"))
    if code == errno.EISDIR:
        why = f"{short(path)} is a folder"
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        # Nothing recorded is lost either way; only a run's own writes have a run to resume.
        run = doing.startswith(_RUN_WORK)
        hint += f": {_RESUME}" if run else ": nothing recorded is lost"
    return StoreError(f"cannot {doing} {short(path)}: {why}; {hint}")


def text_fault(message: str, path: str | os.PathLike[str], doing: str) -> StoreError | None:
    """The same line for an error DuckDB reports as text, when the text names an OS errno."""
    for code in _WHY:
        if os.strerror(code) in message:
            return os_fault(OSError(code, os.strerror(code)), path, doing)
    return None


def virtual_fs(path: Path) -> str | None:
    """The virtual file system (``/proc``...) ``path`` lies in, if any."""
    resolved = os.path.realpath(path)
    for root in _VIRTUAL:
        if resolved == root or resolved.startswith(root + "/"):
            return root
    return None


def check_store_path(path: Path, *, create: bool) -> None:
    """Refuse, in one line, a store path that cannot work (before any file is touched)."""
    root = virtual_fs(path)
    if root is not None:
        raise StoreError(
            f"cannot use {short(path)} as the store: {root} is a virtual file system of "
            "the kernel; choose a path on a disk (--db or AIRUN_DB)"
        )
    if path.exists() and path.is_dir():
        raise StoreError(
            f"{short(path)} is a folder; the store is a file (e.g. {short(path)}/airun.duckdb)"
        )
    if not path.parent.exists():
        raise StoreError(
            f"cannot create the store {short(path)}: folder {short(path.parent)} does not exist"
        )
    if not create and not path.exists():
        raise StoreError(f"there is no store at {short(path)} (check --db or AIRUN_DB)")


def duckdb_fault(message: str, path: Path, doing: str) -> StoreError | None:
    """One line for a DuckDB error that is an OS fault or a damaged file (else None)."""
    fault = text_fault(message, path, f"{doing} the store")
    if fault is not None:
        return fault
    if "Corrupt database" in message or (
        "Could not read enough bytes" in message and _is_duckdb(path)
    ):
        return StoreError(
            f"the store {short(path)} is corrupt (DuckDB: {short(message.splitlines()[0])}); "
            f"see `airun doctor --db {short(path)}`, or restore a copy"
        )
    return None


def _is_duckdb(path: Path) -> bool:
    """Does the file start like a DuckDB database (magic ``DUCK`` at byte 8)?"""
    try:
        with open(path, "rb") as f:
            return f.read(12)[8:12] == b"DUCK"
    except OSError:
        return False
