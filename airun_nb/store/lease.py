"""The write lease on a store: an ``flock`` on ``<store>.lock`` shared by every process.

DuckDB lets one process at a time open a file for writing. airun_nb keeps every process polite
about that: whoever wants the DuckDB file (a kernel running a workflow, the CLI, a history query
in a second kernel) first takes the lease. The holder writes who it is into the lock file, so a
process that has to give up can say exactly who is in the way. A process that waits drops a
marker in ``<store>.waiters/`` so the holder knows to hand the lease over at its next pause.
The OS releases an ``flock`` when its process dies, so a crashed holder never blocks anyone.

The lock file also says how far each journal slot has been folded into DuckDB (``folded``, set
after every fold commits and kept from holder to holder): a process appending records can tell
without the lease how many of its own are still unfolded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from airun_nb.errors import StoreBusy
from airun_nb.store import owner
from airun_nb.store.faults import os_fault


def try_lock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without waiting (False: a live process has it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class Lease:
    def __init__(self, db_path: Path) -> None:
        self.lock_path = db_path.with_name(db_path.name + ".lock")
        self.waiters_dir = db_path.with_name(db_path.name + ".waiters")
        self._fd: int | None = None
        self._held_since = 0.0
        self.grants = 0  # how many times this process took the lease (caches check it)
        self.purpose = "airun_nb"
        self._since = 0.0
        self._tlock = threading.Lock()
        self._folded: dict[str, list[Any]] = {}  # slot -> [generation, offset] folded up to

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def held_for(self) -> float:
        return time.monotonic() - self._held_since if self._fd is not None else 0.0

    def acquire(self, timeout: float, purpose: str) -> None:
        """Take the lease, waiting up to ``timeout`` seconds; raise :class:`StoreBusy` after."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise os_fault(exc, self.lock_path, "open the lock file") from None
        try:
            if not self._try(fd):
                self._wait(fd, timeout)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.grants += 1
        self._held_since = time.monotonic()
        self._since = time.time()
        self._folded = _read_folded(fd)
        self.retitle(purpose)

    def try_acquire(self, purpose: str) -> bool:
        """Take the lease if it is free right now (no waiting, no marker); True if taken."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        if not self._try(fd):
            os.close(fd)
            return False
        self._fd = fd
        self.grants += 1
        self._held_since = time.monotonic()
        self._since = time.time()
        self._folded = _read_folded(fd)
        self.retitle(purpose)
        return True

    def retitle(self, purpose: str) -> None:
        """Say what the holder is doing now (what a waiting process will be told)."""
        fd = self._fd
        if fd is None:
            return
        self.purpose = purpose
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "user": _user(),
            "purpose": purpose,
            "since": self._since,
            "folded": self._folded,
        }
        with contextlib.suppress(OSError):  # a full disk: waiters learn less, nothing breaks
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)

    def release(self, closed: Any = None) -> None:
        """Let go; ``closed`` (JSON) tells the next holder how the store was left."""
        fd = self._fd
        if fd is None:
            return
        self._fd = None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            said = {"closed": closed, "folded": self._folded}  # closed None: nothing known
            os.pwrite(fd, json.dumps(said).encode(), 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def clock(self) -> float:
        """The store's clock, read while the lease is held: the time the file system holding
        the store stamps the lock file with (a network file system's server sets it), the same
        for every process whatever its own clock says."""
        fd = self._fd
        if fd is not None:
            with contextlib.suppress(OSError):
                os.utime(fd)
                return os.fstat(fd).st_mtime
        return time.time()

    def busy(self) -> bool:
        """Does another process hold the lease right now?"""
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except OSError:
            return False
        try:
            if self._try(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            return True
        finally:
            os.close(fd)

    def note_folded(self, marks: Any) -> None:
        """After a fold committed (lease held): the slots' new marks ``(slot, gen, offset)``."""
        for slot, gen, offset in marks:
            self._folded[str(slot)] = [gen, offset]
        self.retitle(self.purpose)

    def folded(self, slot: int) -> tuple[str, int] | None:
        """How far ``slot`` is folded, as the lock file says (no lock taken; None: unknown)."""
        if self._fd is not None:
            mark = self._folded.get(str(slot))
        else:
            try:
                fd = os.open(self.lock_path, os.O_RDONLY)
            except OSError:
                return None
            try:
                mark = _read_folded(fd).get(str(slot))
            finally:
                os.close(fd)
        if isinstance(mark, list) and len(mark) == 2 and isinstance(mark[1], int):
            return str(mark[0]), mark[1]
        return None

    def closed_as(self) -> Any:
        """What the last holder said of the store as it let go (None: nothing known)."""
        try:
            data = self.lock_path.read_bytes()
            return json.loads(data).get("closed") if data.startswith(b'{"closed"') else None
        except (OSError, ValueError, AttributeError):
            return None

    def waiters(self) -> bool:
        """True when another process is waiting for the lease (a dead one's marker is removed
        on sight: it would make every holder hand the lease over for nobody)."""
        try:
            with os.scandir(self.waiters_dir) as it:
                for entry in it:
                    if entry.name.startswith(f"{os.getpid()}-"):
                        continue
                    if _marker_alive(entry.path, entry.name):
                        return True
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        except FileNotFoundError:
            return False
        return False

    def dead_waiters(self, *, remove: bool) -> list[str]:
        """The markers of waiters whose process is gone (removed when ``remove``)."""
        removed = []
        try:
            with os.scandir(self.waiters_dir) as it:
                entries = list(it)
        except OSError:
            return []
        for entry in entries:
            if not _marker_alive(entry.path, entry.name):
                removed.append(entry.name)
                if remove:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        return removed

    def holder(self) -> dict[str, Any]:
        try:
            data = self.lock_path.read_text()
            info = json.loads(data) if data.strip() else {}
            return info if isinstance(info, dict) and "pid" in info else {}
        except (OSError, ValueError):
            return {}

    def describe_holder(self) -> str:
        info = self.holder()
        if not info:
            return "another process"
        age = time.time() - float(info.get("since", time.time()))
        where = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
        return (
            f"pid {info.get('pid')}{where} (user {info.get('user')}, {info.get('purpose')}) "
            f"for {age:.1f} s"
        )

    # -- internals -------------------------------------------------------------------------
    _try = staticmethod(try_lock)

    def _wait(self, fd: int, timeout: float) -> None:
        marker = self.waiters_dir / f"{os.getpid()}-{threading.get_ident()}"
        with contextlib.suppress(OSError):
            self.waiters_dir.mkdir(exist_ok=True)
            # who waits: a marker left by a dead process is recognised and removed
            marker.write_text(json.dumps({"host": owner.HOST, "token": owner.MY_TOKEN}))
        try:
            if not _blocking_lock(fd, timeout):
                raise StoreBusy(
                    f"the store {self.lock_path.name[:-5]} is busy: held by "
                    f"{self.describe_holder()}; gave up after {timeout:g} s "
                    "(set AIRUN_LOCK_TIMEOUT to wait longer)"
                )
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()


def _read_folded(fd: int) -> dict[str, list[Any]]:
    """The ``folded`` marks the lock file holds (empty when unreadable or cut short)."""
    try:
        info = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    folded = info.get("folded") if isinstance(info, dict) else None
    return dict(folded) if isinstance(folded, dict) else {}


def _marker_alive(path: str, name: str) -> bool:
    """Is the process that left this waiter marker (``<pid>-<thread>``) still alive?"""
    try:
        pid = int(name.split("-", 1)[0])
    except ValueError:
        return False  # not a marker of ours
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    if info.get("host") not in (None, owner.HOST):
        return True  # another machine's process: cannot tell, assume it waits
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    token = info.get("token") or ""
    return not token or owner.process_token(pid) in ("", token)


def _blocking_lock(fd: int, timeout: float) -> bool:
    """Wait for the ``flock`` on ``fd`` itself: the kernel wakes the waiter the moment the
    holder lets go (no polling). The wait runs in a helper thread on a duplicate of ``fd`` (the
    same open file, so the same lock) so that it can be given up after ``timeout``: a lock the
    helper gets after that is let go again at once."""
    if try_lock(fd):
        return True
    dup = os.dup(fd)
    got = threading.Event()
    gate = threading.Lock()
    gave_up = False

    def wait() -> None:
        try:
            fcntl.flock(dup, fcntl.LOCK_EX)
            with gate:
                if gave_up:  # too late: the waiter has gone, pass the lock on
                    fcntl.flock(dup, fcntl.LOCK_UN)
                else:
                    got.set()
        except OSError:
            pass
        finally:
            os.close(dup)

    threading.Thread(target=wait, name="airun-lease-wait", daemon=True).start()
    if got.wait(timeout):
        return True
    with gate:
        if got.is_set():
            return True
        gave_up = True
    return False


def _user() -> str:
    """The holder's OS login: a lease belongs to a process, whoever it acts for."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
