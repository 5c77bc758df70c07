"""A run's step table (from a live run or from the store), drawn as text and HTML.

The text form is deterministic apart from run ids and durations, so notebooks that show it can
be validated headless (nbval sanitizes those two).
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_STATUS_COLORS = {
    "completed": "#1a7f37",
    "replayed": "#57606a",
    "running": "#0969da",
    "pending": "#8c959f",
    "failed": "#cf222e",
    "interrupted": "#9a6700",
    "skipped": "#8c959f",
    "waiting": "#8250df",
    "undone": "#9a6700",
    "undoing": "#0969da",
    "undo failed": "#cf222e",
    "rolled_back": "#9a6700",
    "rollback_failed": "#cf222e",
    "rolling_back": "#0969da",
}


_UNDO_STATUS = {"done": "undone", "running": "undoing", "failed": "undo failed"}


def _undo_note(status: str, error: str | None, attempts: int) -> str:
    if status == "none":
        return "nothing to undo"
    if status == "done":
        return f"compensated (attempt {attempts})" if attempts > 1 else "compensated"
    if status == "failed":
        return f"compensation failed after {attempts} attempts: {error}"
    return f"compensating (attempt {attempts})"


@dataclass
class RunView:
    """What the step table shows, taken from a live run or from the store."""

    run_id: str
    workflow: str
    status: str
    error: str | None
    rows: list[dict[str, Any]]


def view_of_run(run: Any) -> RunView:
    """The table of a run that is executing (or just finished) in this process: anything
    with ``spec``, ``states``, ``run_id``, ``status`` and ``error`` (the runner)."""
    now = time.time()
    rows = []
    for s in run.spec.steps:
        st = run.states[s.id]
        shown = "replayed" if st.replayed and st.status == "completed" else st.status
        shown = _UNDO_STATUS.get(st.comp_status or "", shown)
        dur = None
        if st.started_at is not None and not st.replayed:
            dur = (st.finished_at or now) - st.started_at
        note = st.error or st.reason or ("unchanged" if st.replayed else "")
        if st.comp_status:
            note = _undo_note(st.comp_status, st.comp_error, st.comp_attempts)
        rows.append(
            {
                "step": s.id,
                "kind": s.kind,
                "status": shown,
                "attempts": st.attempts,
                "duration": dur,
                "note": note,
            }
        )
    return RunView(run.run_id, run.spec.name, run.status, run.error, rows)


def view_of_rows(run: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> RunView:
    rows = []
    for r in steps:
        status = str(r["status"])
        dur = None
        if r.get("started_at") is not None and r.get("finished_at") is not None:
            dur = (r["finished_at"] - r["started_at"]).total_seconds()
        note = r.get("error") or r.get("reason") or ""
        if r.get("replayed_from") and status == "completed":
            status, dur = "replayed", None
            note = note or f"reused from {r['replayed_from']}"
        if r.get("comp_status"):
            note = _undo_note(
                r["comp_status"], r.get("comp_error"), int(r.get("comp_attempts") or 0)
            )
            status = _UNDO_STATUS.get(r["comp_status"], status)
        rows.append(
            {
                "step": r["step_id"],
                "kind": r["kind"],
                "status": status,
                "attempts": int(r.get("attempts") or 0),
                "duration": dur,
                "note": note,
            }
        )
    return RunView(run["run_id"], run["workflow"], run["status"], run.get("error"), rows)


def render_text(view: RunView, *, limit: int = 60) -> str:
    rows = view.rows
    ran = sum(1 for r in rows if r["status"] not in ("replayed", "pending", "skipped"))
    replayed = sum(1 for r in rows if r["status"] == "replayed")
    head = (
        f"run {view.run_id} · {view.workflow} · {view.status} · "
        f"{len(rows)} steps ({ran} ran, {replayed} replayed)"
    )
    shown = rows if len(rows) <= limit else rows[: limit // 2] + rows[-limit // 2 :]
    w_step = max([4, *(len(r["step"]) for r in shown)])
    w_kind = max([4, *(len(r["kind"]) for r in shown)])
    w_status = max([6, *(len(r["status"]) for r in shown)])
    lines = [
        head,
        f"  {'step':<{w_step}}  {'kind':<{w_kind}}  {'status':<{w_status}}  attempts  duration  note",
    ]
    for i, r in enumerate(shown):
        if len(rows) > limit and i == limit // 2:
            lines.append(f"  ... {len(rows) - limit} more steps ...")
        dur = "" if r["duration"] is None else f"{r['duration']:.2f}s"
        note = r["note"] if len(r["note"]) <= 90 else r["note"][:87] + "..."
        lines.append(
            f"  {r['step']:<{w_step}}  {r['kind']:<{w_kind}}  {r['status']:<{w_status}}  "
            f"{r['attempts']:>8}  {dur:>8}  {note}".rstrip()
        )
    if view.error and view.status != "completed":
        lines.append(f"  error: {view.error}")
    return "\n".join(lines)


def render_html(view: RunView, *, limit: int = 200) -> str:
    rows = view.rows
    shown = rows if len(rows) <= limit else rows[:limit]
    color = _STATUS_COLORS.get(view.status, "#57606a")
    out = [
        '<div class="airun-run">',
        f"<div><b>run {html.escape(view.run_id)}</b> · {html.escape(view.workflow)} · "
        f'<span style="color:{color};font-weight:bold">{html.escape(view.status)}</span></div>',
        '<table style="border-collapse:collapse"><thead><tr>'
        "<th>step</th><th>kind</th><th>status</th><th>attempts</th><th>duration</th><th>note</th>"
        "</tr></thead><tbody>",
    ]
    for r in shown:
        c = _STATUS_COLORS.get(r["status"], "#57606a")
        dur = "" if r["duration"] is None else f"{r['duration']:.2f}s"
        out.append(
            f"<tr><td><code>{html.escape(r['step'])}</code></td><td>{r['kind']}</td>"
            f'<td style="color:{c};font-weight:bold">{r["status"]}</td>'
            f"<td>{r['attempts']}</td><td>{dur}</td><td>{html.escape(r['note'])}</td></tr>"
        )
    if len(rows) > limit:
        out.append(f"<tr><td colspan=6>... {len(rows) - limit} more steps</td></tr>")
    out.append("</tbody></table>")
    if view.error and view.status != "completed":
        out.append(f'<div style="color:#cf222e">error: {html.escape(view.error)}</div>')
    out.append("</div>")
    return "".join(out)


class StoredRun:
    """A run as the store has it (for ``show``), with the same text and HTML forms."""

    def __init__(self, view: RunView) -> None:
        self.view = view

    def __repr__(self) -> str:
        return render_text(self.view)

    def _repr_html_(self) -> str:
        return render_html(self.view)
