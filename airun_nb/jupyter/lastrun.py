"""The result of the last run this kernel executed or continued (``airun_nb.last_run()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airun_nb.result import RunResult

_last: dict[str, RunResult] = {}


def remember(runner: Any) -> RunResult:
    from airun_nb.result import RunResult  # pandas: imported by a run, not by %load_ext

    result = RunResult(runner)
    _last["result"] = result
    return result


def last_result() -> RunResult | None:
    """The result of the last ``%%workflow`` cell (or gate continuation) in this kernel."""
    return _last.get("result")
