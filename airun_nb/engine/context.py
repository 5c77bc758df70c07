"""What a step, a gate and a compensation may use of the run they belong to.

The runner implements this; :mod:`~airun_nb.engine.execution`, :mod:`~airun_nb.engine.gatekeeper` and
:mod:`~airun_nb.engine.compensation` are written against it, so none of them imports the runner or
reaches into its private members.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airun_nb import capabilities
    from airun_nb.capabilities.workspace import Workspace
    from airun_nb.engine import stepkinds as kinds
    from airun_nb.engine.ledger import Ledger
    from airun_nb.engine.scope import Scope
    from airun_nb.engine.state import StepState
    from airun_nb.governance.policy import Policy
    from airun_nb.spec.parser import WorkflowSpec
    from airun_nb.store.backend import Backend


class RunContext(Protocol):
    spec: WorkflowSpec
    store: Backend
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
    rejected_by_person: bool  # a person's rejection: the run rolls back without a failure
    bind_output: bool

    @property
    def run_id(self) -> str: ...

    def capability_context(self, step_id: str) -> capabilities.Context: ...
