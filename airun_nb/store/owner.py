"""Who owns a run: the process executing it, told apart from a dead one or a reused pid."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def process_token(pid: int) -> str:
    """Start time of a process, to tell a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


MY_TOKEN = process_token(os.getpid())
HOST = socket.gethostname()


def _after_fork() -> None:
    """A forked child is another process: its own start time, no run executing in it yet."""
    global MY_TOKEN, _ACTIVE_LOCK
    MY_TOKEN = process_token(os.getpid())
    _ACTIVE_LOCK = threading.Lock()  # another thread may have held it at the fork
    _ACTIVE.clear()


os.register_at_fork(after_in_child=_after_fork)


def claim_in_process(run_id: str) -> bool:
    """Mark a run as executing in this process; False if it already is."""
    with _ACTIVE_LOCK:
        if run_id in _ACTIVE:
            return False
        _ACTIVE.add(run_id)
        return True


def release_in_process(run_id: str) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(run_id)


def owner_alive(row: Mapping[str, Any]) -> bool:
    """Is the process recorded as executing this run still alive?"""
    pid = row.get("owner_pid")
    if not pid:
        return False
    if row.get("owner_host") not in (None, HOST):
        return True  # cannot tell for another machine: assume it is
    pid = int(pid)
    if pid == os.getpid() and row.get("owner_token") == MY_TOKEN:
        with _ACTIVE_LOCK:
            return str(row.get("run_id")) in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    token = row.get("owner_token") or ""
    return not token or process_token(pid) == token


def owner_fields() -> dict[str, Any]:
    """The owner columns a run record carries for this process."""
    return {"owner_pid": os.getpid(), "owner_host": HOST, "owner_token": MY_TOKEN}
