"""airun_nb: a transactional workflow runtime that lives inside Jupyter.

Importing the package registers nothing; ``%load_ext airun_nb`` adds the ``%%workflow`` magics.
"""

from __future__ import annotations

from typing import Any

from .cancellation import cancel
from .capabilities import register as register_capability
from .errors import (
    AirunError,
    QueryError,
    RunBusy,
    RunInterrupted,
    RunNotFound,
    SpecError,
    StoreBusy,
    StoreError,
    StoreIncompatible,
    TemplateError,
    WorkflowFailed,
)
from .explanation import why
from .gate import AlreadyDecided, ApprovalError, approve, reject
from .history import approvals, attempts, audit, events, history_relation, query, runs, steps
from .result import RunResult
from .rundiff import diff
from .workflow import Workflow, fork, rollback

__version__ = "0.1.0"

__all__ = [
    "AirunError",
    "AlreadyDecided",
    "ApprovalError",
    "QueryError",
    "RunBusy",
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
    "history_relation",
    "fork",
    "last_run",
    "load_ipython_extension",
    "query",
    "register_capability",
    "reject",
    "rollback",
    "runs",
    "steps",
    "unload_ipython_extension",
    "why",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext airun_nb``: register the ``%%workflow`` / ``%workflow`` magics."""
    from .jupyter.magics import load

    load(ipython)


def last_run() -> RunResult | None:
    """The result of the last ``%%workflow`` cell run in this kernel."""
    from .jupyter.magics import last_result

    return last_result()


def unload_ipython_extension(ipython: Any) -> None:
    from .jupyter.magics import unload

    unload(ipython)
