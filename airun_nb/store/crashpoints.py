"""Crash points for tests: ``AIRUN_CRASH_AT=name`` makes the process SIGKILL itself there."""

from __future__ import annotations

import os


def crashpoint(name: str) -> None:
    """Test hook: ``AIRUN_CRASH_AT=name`` kills this process with SIGKILL at that point."""
    target = os.environ.get("AIRUN_CRASH_AT")
    if target and target == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def synced(path: object, gen: str, size: int) -> None:
    """Test hook: ``AIRUN_TEST_SYNC_LOG=file`` appends ``<journal>\t<generation>\t<bytes>`` each
    time a journal is fsynced, so a test can drop what a power loss would (the bytes after)."""
    log = os.environ.get("AIRUN_TEST_SYNC_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{path}\t{gen}\t{size}\n".encode())
        finally:
            os.close(fd)
