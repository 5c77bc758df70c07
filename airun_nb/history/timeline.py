"""A run drawn as a timeline (Gantt chart): a bar for every attempt, retries side by side,
gate waits and compensations in their own colours, with a legend.

:func:`draw` returns a :class:`Timeline`, which displays itself in any front end (PNG and SVG
for headless tools and nbconvert, HTML with the picture inline for notebooks) without
``%matplotlib``: it draws on an Agg canvas and never touches pyplot's global state.

The picture has no background of its own and its text, axes and grid are a mid-tone grey, so it
reads the same on a light and a dark theme (JupyterLab's dark theme shows no white slab).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

_COLORS = {
    "completed": "#2da44e",
    "failed": "#cf222e",
    "interrupted": "#bf8700",
    "crashed": "#bf8700",
    "running": "#0969da",
}
_GATE = "#8250df"
_UNDO = "#fb8f44"
_RETRIED = "#ff8182"
_INK = "#7d8590"  # text, axes and grid: contrast >= 3.5 on white and on JupyterLab's dark #111
_EDGE = "#57606a"


def _isna(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


class Timeline:
    """A run's timeline; ``.figure`` is the matplotlib Figure."""

    def __init__(self, figure: Any, title: str) -> None:
        self.figure = figure
        self.title = title

    def _image(self, fmt: str) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format=fmt, dpi=100, bbox_inches="tight", transparent=True)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self._image("png")

    def _repr_svg_(self) -> str:
        return self._image("svg").decode()

    def _repr_html_(self) -> str:
        data = base64.b64encode(self._repr_png_()).decode()
        return (
            f'<div class="airun-timeline"><img alt="timeline of {html.escape(self.title)}" '
            f'src="data:image/png;base64,{data}" style="max-width:100%"></div>'
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {
            "image/png": self._repr_png_(),
            "text/html": self._repr_html_(),
            "text/plain": repr(self),
        }

    def save(self, path: str) -> None:
        self.figure.savefig(path, dpi=100, bbox_inches="tight", transparent=True)

    def __repr__(self) -> str:
        return f"<timeline of {self.title}>"


def _plain(text: str) -> str:
    """``text`` as matplotlib should print it: no mathtext (a ``$`` in a name is a dollar)."""
    return str(text).replace("$", r"\$")


def draw(df: Any, *, gates: Any = None, title: str | None = None) -> Timeline:
    """The timeline of every attempt of a run, from its attempts table
    (:func:`airun_nb.history.frames.attempts`) and, for gate waits, its approvals table
    (:func:`airun_nb.history.frames.approvals`); needs matplotlib."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:  # pragma: no cover - matplotlib ships with the jupyter extra
        raise ImportError("the timeline needs matplotlib (pip install matplotlib)") from exc
    if title is None:
        title = f"run {df['run_id'].iloc[0]}" if not df.empty else "run"
    waits = [] if gates is None or gates.empty else list(gates.to_dict("records"))
    first: dict[str, Any] = {}
    for sid, start in [*zip(df["step_id"], df["started_at"], strict=True)] + [
        (str(g["gate_id"]), g["opened_at"]) for g in waits
    ]:
        if sid not in first or start < first[sid]:
            first[sid] = start
    order = sorted(first, key=lambda k: first[k])  # rows in the order the steps started
    n = max(len(order), 1)
    row_h = 0.32 if n <= 40 else 0.2
    fig = Figure(figsize=(10, row_h * n + 1.6))
    ax = fig.add_subplot()
    starts = [t for t in df["started_at"]] + [g["opened_at"] for g in waits]
    t0 = min(starts) if starts else None
    ends = [t for t in df["finished_at"] if not _isna(t)] + [
        g["decided_at"] for g in waits if not _isna(g.get("decided_at"))
    ]
    span = ((max(ends + starts) - t0).total_seconds() if t0 is not None else 0.0) or 1.0
    least = span / 300  # a bar is never thinner than this, so a 1 ms undo stays visible
    used: set[str] = set()

    def bar(y: int, start: Any, end: Any, color: str, label: str, hatch: str | None) -> None:
        left = (start - t0).total_seconds()
        width = max(((end if not _isna(end) else start) - start).total_seconds(), least)
        ax.barh(
            y, width, left=left, height=0.62, color=color, hatch=hatch,
            edgecolor=_EDGE, linewidth=0.3, label=None if label in used else label,
        )  # fmt: skip
        used.add(label)

    records = list(df.to_dict("records"))
    last: dict[str, int] = {}
    for row in records:
        if row["phase"] != "compensate":
            last[row["step_id"]] = max(last.get(row["step_id"], 0), int(row["attempt"]))
    for row in records:
        y = order.index(row["step_id"])
        if row["phase"] == "compensate":
            bar(y, row["started_at"], row["finished_at"], _UNDO, "compensation", "//")
            continue
        status = str(row["status"])
        retried = status == "failed" and int(row["attempt"]) < last[row["step_id"]]
        label = "failed, retried" if retried else status
        color = _RETRIED if retried else _COLORS.get(status, "#8c959f")
        bar(y, row["started_at"], row["finished_at"], color, label, None)
    for g in waits:
        y = order.index(str(g["gate_id"]))
        end = g.get("decided_at")
        bar(y, g["opened_at"], end, _GATE, "gate wait", "..")
    ax.set_yticks(
        range(len(order)), labels=[_plain(o) for o in order], fontsize=9 if n <= 40 else 6
    )
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("seconds since the run's first attempt", color=_INK)
    ax.grid(axis="x", color=_INK, linewidth=0.5, alpha=0.45)
    ax.set_axisbelow(True)
    ax.set_title(_plain(title), fontsize=11, color=_INK)
    ax.tick_params(colors=_INK)
    for spine in ax.spines.values():
        spine.set_color(_INK)
    colors = {**_COLORS, "failed, retried": _RETRIED}
    handles = [
        Patch(
            facecolor=_GATE if lab == "gate wait" else _UNDO if lab == "compensation" else colors.get(lab, "#8c959f"),
            hatch=".." if lab == "gate wait" else "//" if lab == "compensation" else None,
            edgecolor=_EDGE, label=lab,
        )
        for lab in sorted(used)
    ]  # fmt: skip
    if handles:
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
            frameon=True, facecolor="none", edgecolor=_INK, labelcolor=_INK,
        )  # fmt: skip
    fig.tight_layout()
    return Timeline(fig, title)
