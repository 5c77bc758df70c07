"""Exceptions raised by airun_nb.

Every error a user can cause is an :class:`AirunError`: one short message that says what
went wrong and where. ``_render_traceback_`` makes IPython (and so nbclient and nbval) show
that message instead of a library traceback, while still marking the cell as failed.
"""

from __future__ import annotations


class AirunError(Exception):
    """Base class of every error airun_nb raises on purpose."""

    #: The line a notebook cell shows instead of the message, when the cell already shows part
    #: of it (a failed run's reason is in its step's row): set by the notebook front end.
    shown: str | None = None
    #: What kind of failure this is for ``airun exec``'s exit code (``security``, ``timeout``,
    #: ``not_found``...), set by the code that raises it, never read from the message.
    exit_kind: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self.shown or self.message}"]


class SpecError(AirunError):
    """The workflow YAML is malformed or inconsistent (bad key, cycle, unknown step...)."""

    def __init__(self, message: str, *, line: int | None = None, path: str | None = None) -> None:
        where = []
        if line is not None:
            where.append(f"line {line}")
        if path:
            where.append(path)
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full)
        self.line = line
        self.path = path
        self.reason = message


class TemplateError(AirunError):
    """A ``{{ template }}`` could not be evaluated (undefined name, bad expression...)."""


class StoreError(AirunError):
    """The store file cannot be used."""


class StoreBusy(StoreError):
    """Another process holds the store for longer than we were willing to wait."""


class StoreIncompatible(StoreError):
    """The file is not an airun_nb store, or was written by a newer schema."""


class QueryError(AirunError):
    """A history query is not valid SQL, or is not a single read-only SELECT."""


class StoreWarning(UserWarning):
    """Something in the store needed repair (a damaged journal tail was set aside...)."""


class ClockWarning(UserWarning):
    """This process's clock differs from the store's by more than a few seconds."""


class ResumeWarning(UserWarning):
    """A resumed run continues with the stored outputs of steps whose code changed."""


class RunNotFound(AirunError):
    """No run with that id."""


class RunBusy(AirunError):
    """The run is executing in another process."""


class RunEnded(AirunError):
    """The run reached an end state that cannot resume (rolled back, cancelled): start a new
    run or fork it."""


class WorkflowFailed(AirunError):
    """A run ended in a failed state; the message names the run and the failing step."""

    def __init__(self, message: str, *, run_id: str, status: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class RunInterrupted(AirunError):
    """The run was interrupted (e.g. a kernel interrupt); it can be resumed."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id
