"""Every exception ends in a recorded state.

When something unexpected is raised while a run executes (a template that fails at run time,
an error preparing a capability's undo, a bug), :func:`failed` writes the run as ``failed``
(``rollback_failed`` during a rollback) with the error text, and its running steps as
``interrupted``, so the run is never left ``running`` and a resume continues it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from airun_nb.engine.state import FAILED, ROLLBACK_FAILED, ROLLING_BACK, S_INTERRUPTED, S_RUNNING
from airun_nb.engine.timeouts import describe
from airun_nb.errors import WorkflowFailed

if TYPE_CHECKING:
    from airun_nb.engine.runner import Runner


def failed(runner: Runner, exc: Exception) -> Exception:
    """Record the failure; the exception to raise: a one-line :class:`WorkflowFailed`, or
    ``exc`` itself when even the failure cannot be written (a full disk: the journal still
    holds everything before it, and the run resumes later)."""
    ledger = runner.ledger
    error = describe(exc)
    rolling_back = ledger.status == ROLLING_BACK or (
        runner.plan is not None and runner.plan.mode == "rollback"
    )
    recs = []
    for st in runner.states.values():
        if st.status == S_RUNNING:
            st.status = S_INTERRUPTED
            recs.append(ledger.step_record(st))
    ledger.error = ledger.error or error
    ledger.status = ROLLBACK_FAILED if rolling_back else FAILED
    ledger.finished_at = time.time()
    recs.append(ledger.run_record())
    recs.append(ledger.event(f"run_{ledger.status}", error=error))
    try:
        ledger.write(recs)
    except Exception:
        return exc
    out = WorkflowFailed(
        f"run {ledger.run_id} failed: {error}", run_id=ledger.run_id, status=ledger.status
    )
    out.__suppress_context__ = True
    return out
