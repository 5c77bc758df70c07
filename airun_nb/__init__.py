"""airun_nb: a transactional workflow runtime that lives inside Jupyter.

Importing the package registers nothing; ``%load_ext airun_nb`` adds the ``%%workflow`` magics.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from airun_nb.errors import (
    AirunError,
    QueryError,
    RunBusy,
    RunEnded,
    RunInterrupted,
    RunNotFound,
    SpecError,
    StoreBusy,
    StoreError,
    StoreIncompatible,
    TemplateError,
    WorkflowFailed,
)

if TYPE_CHECKING:
    from airun_nb.capabilities import register as register_capability
    from airun_nb.capabilities.legacy_specs import register_spec as register_capability_spec
    from airun_nb.engine.cancel import cancel
    from airun_nb.gates.gate import AlreadyDecided, ApprovalError, approve, reject
    from airun_nb.history.diff import diff
    from airun_nb.history.frames import approvals, attempts, audit, events, runs, steps
    from airun_nb.history.relation import history_relation, query
    from airun_nb.history.why import why
    from airun_nb.result import RunResult
    from airun_nb.workflow import Workflow, fork, load_run, rollback

# Everything else is imported on first use, so that `import airun_nb` (and the `airun` command)
# does not pay for pandas, pyarrow and the engine before it needs them.
_LAZY: dict[str, tuple[str, str]] = {
    "cancel": ("engine.cancel", "cancel"),
    "register_capability": ("capabilities", "register"),
    "register_capability_spec": ("capabilities.legacy_specs", "register_spec"),
    "why": ("history.why", "why"),
    "AlreadyDecided": ("gates.gate", "AlreadyDecided"),
    "ApprovalError": ("gates.gate", "ApprovalError"),
    "approve": ("gates.gate", "approve"),
    "reject": ("gates.gate", "reject"),
    **{
        n: ("history.frames", n)
        for n in (
            *("approvals", "attempts", "audit", "events"),
            *("runs", "steps"),
        )
    },
    "history_relation": ("history.relation", "history_relation"),
    "query": ("history.relation", "query"),
    "RunResult": ("result", "RunResult"),
    "diff": ("history.diff", "diff"),
    "Workflow": ("workflow", "Workflow"),
    "fork": ("workflow", "fork"),
    "load_run": ("workflow", "load_run"),
    "rollback": ("workflow", "rollback"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'airun_nb' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{where[0]}", __name__), where[1])
    if name in ("Workflow", "fork"):
        _notebook_front()
    globals()[name] = value
    return value


def _notebook_front() -> None:
    """In a notebook, runs started from Python show their live table: load that front end."""
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        with contextlib.suppress(ImportError):  # a kernel without the jupyter extra
            importlib.import_module(".jupyter.pyrun", __name__)


def __dir__() -> list[str]:
    """The public API only (what tab completion of ``airun_nb.`` offers)."""
    return sorted({*__all__, "__version__"})


__version__ = "0.1.0"

__all__ = [
    "AirunError",
    "AlreadyDecided",
    "ApprovalError",
    "QueryError",
    "RunBusy",
    "RunEnded",
    "RunInterrupted",
    "RunNotFound",
    "RunResult",
    "SpecError",
    "StoreBusy",
    "StoreError",
    "StoreIncompatible",
    "TemplateError",
    "Workflow",
    "WorkflowFailed",
    "approvals",
    "approve",
    "attempts",
    "audit",
    "cancel",
    "diff",
    "events",
    "fork",
    "history_relation",
    "last_run",
    "load_ipython_extension",
    "load_run",
    "query",
    "register_capability",
    "register_capability_spec",
    "reject",
    "rollback",
    "runs",
    "steps",
    "unload_ipython_extension",
    "why",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext airun_nb``: register the ``%%workflow`` / ``%workflow`` magics."""
    import importlib.util

    # The magics import the widgets on first use: say now, in one line, what is missing.
    for name in ("ipywidgets",):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules
            found = False
        if not found:
            raise AirunError(
                f"%load_ext airun_nb needs the 'jupyter' extra ({name} is missing): "
                "pip install 'airun_nb[jupyter]' (from a clone: pip install -e '.[jupyter]')"
            )
    try:
        from airun_nb.jupyter.magics import load
    except ImportError as exc:
        raise AirunError(
            f"%load_ext airun_nb needs the 'jupyter' extra ({exc.name} is missing): "
            "pip install 'airun_nb[jupyter]' (from a clone: pip install -e '.[jupyter]')"
        ) from None
    load(ipython)


def last_run(db: str | os.PathLike[str] | None = None) -> RunResult | None:
    """The result of the last run this kernel made (a ``%%workflow`` cell, ``%workflow run``,
    ``Workflow.run()`` or a gate continuation); after a kernel restart, the latest run of this
    notebook in the store (``db``: that store instead of the default one)."""
    from airun_nb.jupyter.lastrun import last_result

    return last_result(db)


def unload_ipython_extension(ipython: Any) -> None:
    from airun_nb.jupyter.magics import unload

    unload(ipython)
