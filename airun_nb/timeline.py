"""A run drawn as a timeline (Gantt chart): one bar an attempt, compensations hatched."""

from __future__ import annotations

from typing import Any

_COLORS = {
    "completed": "#2da44e",
    "failed": "#cf222e",
    "interrupted": "#bf8700",
    "running": "#0969da",
}


def draw(df: Any, *, title: str | None = None) -> Any:
    """A matplotlib Figure of every attempt of a run, from its attempts table
    (:func:`airun_nb.history.attempts`; needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib ships with the jupyter extra
        raise ImportError("the timeline needs matplotlib (pip install matplotlib)") from exc
    order = list(dict.fromkeys(df["step_id"]))
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(order), 2) + 1))
    if not df.empty:
        t0 = df["started_at"].min()
        for _, row in df.iterrows():
            start = (row["started_at"] - t0).total_seconds()
            end_ts = row["finished_at"] if not _isna(row["finished_at"]) else row["started_at"]
            width = max((end_ts - row["started_at"]).total_seconds(), 0.002)
            y = order.index(row["step_id"])
            ax.barh(
                y,
                width,
                left=start,
                height=0.6,
                color=_COLORS.get(str(row["status"]), "#8c959f"),
                hatch="//" if row["phase"] == "compensate" else None,
                edgecolor="black",
                linewidth=0.3,
            )
    ax.set_yticks(range(len(order)), labels=order)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run's first attempt")
    if title is None and not df.empty:
        title = f"run {df['run_id'].iloc[0]}"
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _isna(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
