"""Running a piece of work with a time limit, and saying why an attempt failed."""

from __future__ import annotations

import contextlib
import os
import site
import sysconfig
import threading
import traceback
from collections.abc import Callable
from typing import Any

from airun_nb.errors import AirunError


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


# Front ends that run user code under generated file names (a notebook's cells) register a
# function that names such a file the way the user knows it ("Cell In[5]"), or returns None.
_NAMERS: list[Callable[[str], str | None]] = []
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def name_files_with(namer: Callable[[str], str | None]) -> None:
    """Register how a front end names its generated files in error lines and tracebacks."""
    if namer not in _NAMERS:
        _NAMERS.append(namer)


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(_PACKAGE)
    return tuple(os.path.abspath(r) + os.sep for r in roots)


_ROOTS = _library_roots()


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):
        return not filename.startswith("<step ")  # a python: step is the user's code
    return os.path.abspath(filename).startswith(_ROOTS)


def _file_label(filename: str) -> str:
    for namer in _NAMERS:
        with contextlib.suppress(Exception):
            label = namer(filename)
            if label:
                return label
    if filename.startswith("<step "):
        return f"step {filename[6:-1]}"
    rel = os.path.relpath(filename) if os.path.isabs(filename) else filename
    return filename if rel.startswith("..") else rel


def user_frame(exc: BaseException) -> str | None:
    """Where in the user's code ``exc`` was raised: ``Cell In[5], line 3``, ``step clean,
    line 2`` or ``etl/load.py, line 14`` (library frames skipped), or None."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not _is_library(frame.filename):
            return f"{_file_label(frame.filename)}, line {frame.lineno}"
    return None


def full_traceback(exc: BaseException) -> str:
    """The traceback of a failed attempt without the runtime's own frames, cells named."""
    te = traceback.TracebackException.from_exception(exc)
    frames = [f for f in te.stack if not os.path.abspath(f.filename).startswith(_PACKAGE + os.sep)]
    for f in frames:
        label = _file_label(f.filename)
        if label != f.filename:
            f.filename = label
    te.stack = traceback.StackSummary.from_list(frames)
    return "".join(te.format()).rstrip()


def describe(exc: BaseException) -> str:
    """One line for an attempt's error: the exception and where the user's code raised it."""
    from airun_nb.engine.stepkinds import SqlError

    if isinstance(exc, (StepTimeout, CheckFailed, SqlError)):
        return str(exc)
    if isinstance(exc, AirunError):
        return exc.message
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = user_frame(exc)
    at = f" (at {where})" if where else ""
    return f"{type(exc).__name__}: {msg}{at}" if msg else f"{type(exc).__name__}{at}"
