"""This process's wall clock: ``time.time()``, shifted by ``AIRUN_CLOCK_OFFSET`` seconds.

The offset exists so that tests can run a process whose clock is wrong (a laptop minutes slow,
a clock stepped back), as real processes sometimes are. Nothing that decides (an event's place
in the stream, a gate's deadline) trusts this clock: those use the order and the clock of the
store (see :mod:`airun_nb.store.fold` and :mod:`airun_nb.gates.gate`).
"""

from __future__ import annotations

import os
import time


def offset() -> float:
    """Seconds this process's clock is shifted by (0 unless ``AIRUN_CLOCK_OFFSET`` is set)."""
    try:
        return float(os.environ.get("AIRUN_CLOCK_OFFSET", "0") or 0)
    except ValueError:
        return 0.0


def now() -> float:
    """The process's wall-clock time, in seconds since the epoch."""
    return time.time() + offset()
