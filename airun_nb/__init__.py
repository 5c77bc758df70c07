"""airun_nb: a transactional workflow runtime that lives inside Jupyter.

Importing the package registers nothing; ``%load_ext airun_nb`` adds the ``%%workflow`` magics.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airun_nb.errors import (
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
    from airun_nb.workflow import Workflow, fork, rollback

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
    "rollback": ("workflow", "rollback"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'airun_nb' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{where[0]}", __name__), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "fork",
    "history_relation",
    "last_run",
    "load_ipython_extension",
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
    from airun_nb.jupyter.magics import load

    load(ipython)


def last_run() -> RunResult | None:
    """The result of the last ``%%workflow`` cell run in this kernel."""
    from airun_nb.jupyter.magics import last_result

    return last_result()


def unload_ipython_extension(ipython: Any) -> None:
    from airun_nb.jupyter.magics import unload

    unload(ipython)
