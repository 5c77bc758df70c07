"""Running a piece of work with a time limit, and saying why an attempt failed."""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from typing import Any

from .errors import AirunError


class StepTimeout(Exception):
    pass


class CheckFailed(Exception):
    pass


def with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()``, or :class:`StepTimeout` after ``timeout`` seconds (the thread cannot be killed:
    it finishes in the background and its result is ignored)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="airun-step-timeout", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise StepTimeout(f"timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def describe(exc: BaseException) -> str:
    """One line for an attempt's error: the exception and where it was raised."""
    from .kinds import SqlError

    if isinstance(exc, (StepTimeout, CheckFailed, SqlError)):
        return str(exc)
    if isinstance(exc, AirunError):
        return exc.message
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        where = f" (at {os.path.basename(last.filename)}:{last.lineno})"
    return f"{type(exc).__name__}: {msg}{where}" if msg else f"{type(exc).__name__}{where}"
