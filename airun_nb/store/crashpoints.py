"""Crash points for tests: ``AIRUN_CRASH_AT=name`` makes the process SIGKILL itself there."""

from __future__ import annotations

import os


def crashpoint(name: str) -> None:
    """Test hook: ``AIRUN_CRASH_AT=name`` kills this process with SIGKILL at that point."""
    target = os.environ.get("AIRUN_CRASH_AT")
    if target and target == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
