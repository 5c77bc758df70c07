"""The states of a run and of a step, and which transitions between them are allowed.

:class:`StepState` is a step's state while a run executes. Only the ledger moves a run or a step
from one status to another (:func:`check_run`, :func:`check_step`); a transition that is not in
the tables below raises :class:`TransitionError`, so a bug that would record an impossible
history fails loudly instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.spec.parser import StepSpec

# Run statuses.
PENDING, RUNNING, WAITING, COMPLETED, FAILED, INTERRUPTED = (
    "pending",
    "running",
    "waiting",
    "completed",
    "failed",
    "interrupted",
)
ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED = "rolling_back", "rolled_back", "rollback_failed"
RESUMABLE = {PENDING, RUNNING, WAITING, FAILED, INTERRUPTED}
TERMINAL = {COMPLETED, ROLLED_BACK, ROLLBACK_FAILED}
# Step statuses.
S_PENDING, S_RUNNING, S_COMPLETED, S_FAILED, S_SKIPPED = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
)
S_INTERRUPTED, S_WAITING = "interrupted", "waiting"
DONE_STEP = {S_COMPLETED, S_SKIPPED}

# Which run status may follow which. A run (re)starts as running from any unfinished status, and
# a rollback may start from any status but rolled_back.
RUN_TRANSITIONS: dict[str, set[str]] = {
    PENDING: {RUNNING, ROLLING_BACK},
    RUNNING: {RUNNING, WAITING, COMPLETED, FAILED, INTERRUPTED, ROLLING_BACK},
    WAITING: {RUNNING, WAITING, COMPLETED, FAILED, INTERRUPTED, ROLLING_BACK},
    FAILED: {RUNNING, ROLLING_BACK},
    INTERRUPTED: {RUNNING, ROLLING_BACK},
    COMPLETED: {RUNNING, ROLLING_BACK},
    # (completed: the last N steps of a completed run were undone, `rollback --steps N`)
    ROLLING_BACK: {ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED, INTERRUPTED, COMPLETED},
    ROLLBACK_FAILED: {ROLLING_BACK},
    ROLLED_BACK: set(),
}
# Which step status may follow which (a step that runs again is first reset to pending).
STEP_TRANSITIONS: dict[str, set[str]] = {
    S_PENDING: {S_PENDING, S_RUNNING, S_SKIPPED, S_FAILED, S_WAITING, S_COMPLETED},
    S_RUNNING: {S_RUNNING, S_COMPLETED, S_FAILED, S_INTERRUPTED, S_PENDING},
    S_WAITING: {S_WAITING, S_RUNNING, S_COMPLETED, S_FAILED, S_INTERRUPTED, S_PENDING},
    S_FAILED: {S_PENDING, S_FAILED},
    S_INTERRUPTED: {S_PENDING, S_INTERRUPTED},
    S_COMPLETED: {S_PENDING},
    S_SKIPPED: {S_PENDING},
}
# A compensation: none yet -> running -> done | failed (failed may run again).
COMP_TRANSITIONS: dict[str | None, set[str]] = {
    None: {"running", "none", "failed"},
    "running": {"running", "done", "failed"},
    "failed": {"running", "failed"},
    "none": set(),
    "done": set(),
}

MISSING: Any = object()


class TransitionError(AirunError):
    """A run or a step was asked to move to a status that cannot follow its current one."""


def check_run(old: str, new: str, run_id: str) -> None:
    if new not in RUN_TRANSITIONS.get(old, set()):
        raise TransitionError(f"run {run_id}: cannot go from {old} to {new}")


def check_step(old: str, new: str, step_id: str) -> None:
    if new not in STEP_TRANSITIONS.get(old, set()):
        raise TransitionError(f"step '{step_id}': cannot go from {old} to {new}")


def check_compensation(old: str | None, new: str, step_id: str) -> None:
    if new not in COMP_TRANSITIONS.get(old, set()):
        raise TransitionError(f"step '{step_id}': its compensation cannot go from {old} to {new}")


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
