"""What a step, a gate and a compensation may use of the run they belong to.

The runner implements this; :mod:`~airun_nb.execution`, :mod:`~airun_nb.gatekeeper` and
:mod:`~airun_nb.compensation` are written against it, so none of them imports the runner or
reaches into its private members.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from . import capabilities, kinds
    from .ledger import Ledger
    from .policy import Policy
    from .scope import Scope
    from .spec import WorkflowSpec
    from .state import StepState
    from .store import Store
    from .workspace import Workspace


class RunContext(Protocol):
    spec: WorkflowSpec
    store: Store
    ledger: Ledger
    scope: Scope
    states: dict[str, StepState]
    namespace: Mapping[str, Any]
    params: dict[str, Any]
    user: str
    policy: Policy
    workspace: Workspace
    sql: kinds.SqlEngine
    executed: list[str]
    open_gates: list[dict[str, Any]]
    rejected: bool
    bind_output: bool

    @property
    def run_id(self) -> str: ...

    def capability_context(self, step_id: str) -> capabilities.Context: ...
