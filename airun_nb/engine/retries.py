"""The retry loop: one attempt after another until one succeeds or the retry policy says stop.

Every step and every compensation goes through :func:`retrying`; what an attempt records (its
start, its failure, a retry) is the caller's, passed in as functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from airun_nb.spec.model import RetryPolicy

T = TypeVar("T")


class Exhausted(Exception):
    """Every attempt the policy allows failed (the last failure is ``__cause__``)."""


def retrying(
    policy: RetryPolicy,
    attempt: Callable[[int], T],
    *,
    failed: Callable[[Exception, int, float | None], None],
    interrupted: Callable[[], None],
    wait: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``attempt(tries)`` (``tries`` counts from 1 in this loop) until it returns.

    After a failure, ``failed(exc, tries, delay)`` records it: ``delay`` is the wait before the
    next attempt, or ``None`` when there is none (the policy's attempts are used up, or it does
    not retry that exception), and then :class:`Exhausted` is raised from the failure. A
    ``KeyboardInterrupt`` calls ``interrupted()`` and propagates.
    """
    tries = 0
    while True:
        tries += 1
        try:
            return attempt(tries)
        except KeyboardInterrupt:
            interrupted()
            raise
        except Exception as exc:
            again = tries < policy.attempts and policy.retries(exc)
            delay = policy.delay(tries) if again else None
            failed(exc, tries, delay)
            if delay is None:
                raise Exhausted(str(exc)) from exc
            wait(delay)
