"""What a run gives back: :class:`RunResult` (status, step table, outputs, timeline)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from airun_nb.history.steptable import render_html, render_text, view_of_run

if TYPE_CHECKING:
    from airun_nb.engine.planner import Plan
    from airun_nb.engine.runner import Runner


class Outputs(Mapping[str, Any]):
    """Step outputs by step id, loaded from the store on first access."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def __getitem__(self, step_id: str) -> Any:
        st = self._runner.states.get(step_id)
        if st is None or st.status not in ("completed", "skipped"):
            raise KeyError(step_id)
        return self._runner.output_of(step_id)

    def __iter__(self) -> Iterator[str]:
        return (s for s, st in self._runner.states.items() if st.status in ("completed", "skipped"))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<outputs of {', '.join(self)}>"


class RunResult:
    """The outcome of a run: ``.status``, ``.steps`` (a DataFrame) and ``.outputs``."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self.run_id = runner.run_id
        self.workflow = runner.spec.name
        self.status = runner.status
        self.error = runner.error
        self.failed_step = runner.failed_step
        self.plan: Plan | None = runner.plan
        self.outputs = Outputs(runner)

    @property
    def steps(self) -> pd.DataFrame:
        """One row a step; ``duration`` is a ``timedelta64`` column, shown as ``0.19s``."""
        from airun_nb.history.relation import HistoryFrame  # pyarrow: only when asked for

        rows = view_of_run(self._runner).rows
        df = pd.DataFrame(rows, columns=["step", "kind", "status", "attempts", "duration", "note"])
        df["duration"] = pd.to_timedelta(df["duration"], unit="s")
        df["attempts"] = df["attempts"].astype("int64")
        return HistoryFrame(df)

    @property
    def replayed(self) -> list[str]:
        return [s for s, st in self._runner.states.items() if st.replayed]

    @property
    def executed(self) -> list[str]:
        return list(self._runner.executed)

    def __getitem__(self, step_id: str) -> Any:
        return self.outputs[step_id]

    def timeline(self) -> Any:
        """The run as a timeline picture (:class:`~airun_nb.history.timeline.Timeline`): it displays
        itself in any front end; ``.figure`` is the matplotlib Figure."""
        from airun_nb.history import frames as history
        from airun_nb.history import timeline

        self._runner.store.flush()
        db = self._runner.store.path
        return timeline.draw(
            history.attempts(self.run_id, db),
            gates=history.approvals(self.run_id, db),
            title=f"run {self.run_id} · {self.workflow}",
        )

    def __repr__(self) -> str:
        return render_text(view_of_run(self._runner))

    def _repr_html_(self) -> str:
        return render_html(view_of_run(self._runner))
