"""A run's deadline (``deadline:``, the seed dialect's ``max_execution_time_seconds``).

The clock starts when the run's first step attempt starts in this process; time spent waiting
for a gate's decision between processes does not count (a resumed run gets the whole budget
again). Each attempt may use at most what is left; once nothing is left the step fails, and with
it the run, which rolls back like any other failure.
"""

from __future__ import annotations

import threading
import time

from airun_nb.engine.timeouts import StepTimeout

_started: dict[str, float] = {}
_lock = threading.Lock()


class DeadlinePassed(StepTimeout):
    """The run used up its deadline."""


def step_limit(run_id: str, step_timeout: float | None, deadline: float | None) -> float | None:
    """The time limit of the next attempt: the step's timeout, capped by what the run has left."""
    if deadline is None:
        return step_timeout
    with _lock:
        start = _started.setdefault(run_id, time.monotonic())
    left = deadline - (time.monotonic() - start)
    if left <= 0:
        raise DeadlinePassed(f"the run passed its deadline of {deadline:g} s")
    return left if step_timeout is None else min(step_timeout, left)
