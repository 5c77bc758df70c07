"""The result of the last run this kernel executed or continued (``airun_nb.last_run()``).

After a kernel restart the kernel has run nothing yet: the latest run this notebook made is
then read back from the store (:func:`airun_nb.load_run`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airun_nb.result import RunResult

_last: dict[str, RunResult] = {}


def remember(runner: Any) -> RunResult:
    from airun_nb.result import RunResult  # pandas: imported by a run, not by %load_ext

    result = RunResult(runner)
    _last["result"] = result
    return result


def notebook_path(ns: Any) -> str | None:
    """The notebook this kernel runs, when the front end says (Jupyter Server does)."""
    path = (ns or {}).get("__session__") or os.environ.get("JPY_SESSION_NAME")
    return str(path) if path else None


def last_result(db: str | os.PathLike[str] | None = None) -> RunResult | None:
    """The result of the last ``%%workflow`` cell (or gate continuation) in this kernel; after a
    restart, the latest run of this notebook in the store (None when there is none)."""
    if db is None and "result" in _last:
        return _last["result"]
    return _stored_latest(db)


def _stored_latest(db: str | os.PathLike[str] | None) -> RunResult | None:
    from airun_nb.settings.environment import resolve_db
    from airun_nb.store.opening import open_store
    from airun_nb.workflow import load_run

    where = resolve_db(db)
    if isinstance(where, Path) and not where.exists():
        return None
    source = notebook_path(_user_ns())
    store = open_store(db, create=False)
    found = store.latest_run_of_source(source)
    return load_run(found, db=store.path) if found else None


def _user_ns() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}
