"""A step's state while a run executes (:class:`StepState`), with the statuses and transition
tables of :mod:`airun_nb.store.transitions` that the ledger checks it against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airun_nb.spec.parser import StepSpec
from airun_nb.store.transitions import (  # the tables live with the one writer that checks them
    CANCELLED,
    COMP_TRANSITIONS,
    COMPLETED,
    DONE_STEP,
    FAILED,
    INTERRUPTED,
    PENDING,
    RESUMABLE,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    ROLLING_BACK,
    RUN_STATUSES,
    RUN_TRANSITIONS,
    RUNNING,
    S_CANCELLED,
    S_COMPLETED,
    S_FAILED,
    S_INTERRUPTED,
    S_PENDING,
    S_RUNNING,
    S_SKIPPED,
    S_WAITING,
    STEP_TRANSITIONS,
    TERMINAL,
    WAITING,
    TransitionError,
    check_compensation,
    check_run,
    check_step,
)

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "COMP_TRANSITIONS",
    "DONE_STEP",
    "FAILED",
    "INTERRUPTED",
    "MISSING",
    "PENDING",
    "RESUMABLE",
    "ROLLBACK_FAILED",
    "ROLLED_BACK",
    "ROLLING_BACK",
    "RUNNING",
    "RUN_STATUSES",
    "RUN_TRANSITIONS",
    "STEP_TRANSITIONS",
    "S_CANCELLED",
    "S_COMPLETED",
    "S_FAILED",
    "S_INTERRUPTED",
    "S_PENDING",
    "S_RUNNING",
    "S_SKIPPED",
    "S_WAITING",
    "TERMINAL",
    "WAITING",
    "StepState",
    "TransitionError",
    "check_compensation",
    "check_run",
    "check_step",
]

MISSING: Any = object()


@dataclass(slots=True)
class StepState:
    spec: StepSpec
    status: str = S_PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    finish_seq: int | None = None
    out: dict[str, Any] = field(default_factory=dict)
    value: Any = MISSING
    code_hash: str = ""
    eff_hash: str = ""
    replayed_from: str | None = None
    replayed: bool = False
    reason: str | None = None
    error: str | None = None
    fn: Callable[..., Any] | None = None
    cap_args: Any = None
    compensation: dict[str, Any] | None = None
    comp_status: str | None = None
    comp_attempts: int = 0
    comp_error: str | None = None
    comp_finished_at: float | None = None
    fingerprint: dict[str, Any] | None = None  # components of the code fingerprint, changes
    retry_at: float | None = None  # while waiting between attempts: when the next one starts
    traceback: str | None = None  # of the last failed attempt

    @property
    def id(self) -> str:
        return self.spec.id
