"""A run's step table (from a live run or from the store), drawn as text and HTML.

The text form is deterministic apart from run ids and durations, so notebooks that show it can
be validated headless (nbval sanitizes those two).
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timezone
from typing import Any

# Each status is drawn in one of JupyterLab's theme colours (light and dark themes define them),
# with the light colour as the fallback where no theme is loaded (nbconvert, other front ends).
_ERROR = "var(--jp-error-color1, #cf222e)"
_SUCCESS = "var(--jp-success-color1, #1a7f37)"
_WARN = "var(--jp-warn-color0, #9a6700)"
_BUSY = "var(--jp-brand-color1, #0969da)"
_MUTED = "var(--jp-ui-font-color2, #57606a)"
_IDLE = "var(--jp-ui-font-color2, #8c959f)"
_HUMAN = "var(--airun-human-color, #8250df)"  # no theme colour is purple: set below per theme
_STATUS_COLORS = {
    "completed": _SUCCESS,
    "replayed": _MUTED,
    "running": _BUSY,
    "pending": _IDLE,
    "failed": _ERROR,
    "interrupted": _WARN,
    "skipped": _IDLE,
    "waiting": _HUMAN,
    "rejected": _HUMAN,
    "undone": _WARN,
    "undoing": _BUSY,
    "undo failed": _ERROR,
    "rolled_back": _WARN,
    "rollback_failed": _ERROR,
    "rolling_back": _BUSY,
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
    # A view of only the rows a table draws (a live table's redraw of a long run) keeps the
    # run's counts here; rows then holds the first and the last rows, the middle left out.
    total: int | None = None
    ran: int | None = None
    replayed: int | None = None

    def counts(self) -> tuple[int, int, int]:
        """(steps, steps that ran, steps replayed) of the whole run."""
        if self.total is not None and self.ran is not None and self.replayed is not None:
            return self.total, self.ran, self.replayed
        ran = sum(1 for r in self.rows if r["status"] not in _NOT_RAN)
        replayed = sum(1 for r in self.rows if r["status"] == "replayed")
        return len(self.rows), ran, replayed


_NOT_RAN = ("replayed", "pending", "skipped")
TEXT_LIMIT = 60  # rows the text form shows: the first and the last half of them
HTML_LIMIT = 200  # rows the HTML form shows: the first ones


class _Part:
    """A run seen through some of its steps (for :func:`view_of_run`)."""

    def __init__(self, run: Any, steps: list[Any]) -> None:
        self.run_id, self.status, self.error = run.run_id, run.status, run.error
        self.states = run.states
        self.spec = _Steps(run.spec.name, steps)


@dataclass
class _Steps:
    name: str
    steps: list[Any]


_ROLLBACK = ("rolling_back", "rolled_back", "rollback_failed")


REJECTED = "Rejected by "  # how a step refused by a person's decision states its error


def shown_status(
    status: str,
    replayed: bool,
    comp_status: str | None,
    run_status: str | None = None,
    error: str | None = None,
) -> str:
    """The status a step is shown with (the same in every view and in ``steps()``):
    ``replayed`` for a completed step reused from earlier, ``undone`` / ``undoing`` /
    ``undo failed`` once its compensation ran, ``rejected`` (not ``failed``) for a gate a
    person rejected."""
    if status == "failed" and (error or "").startswith(REJECTED):
        return "rejected"
    if comp_status in _UNDO_STATUS:
        return _UNDO_STATUS[comp_status]
    if replayed and status == "completed" and run_status not in _ROLLBACK:
        return "replayed"
    return status


def shown_status_sql(
    status: str, replayed_from: str, comp_status: str, run_status: str, error: str | None = None
) -> str:
    """:func:`shown_status` as a SQL expression over the named columns."""
    undo = " ".join(f"WHEN {comp_status} = '{k}' THEN '{v}'" for k, v in _UNDO_STATUS.items())
    rollback = ", ".join(f"'{s}'" for s in _ROLLBACK)
    rejected = (
        f"WHEN {status} = 'failed' AND starts_with(coalesce({error}, ''), '{REJECTED}') "
        "THEN 'rejected' "
        if error
        else ""
    )
    return (
        f"CASE {rejected}{undo} WHEN coalesce({replayed_from}, '') <> '' AND {status} = 'completed' "
        f"AND ({run_status} IS NULL OR {run_status} NOT IN ({rollback})) THEN 'replayed' "
        f"ELSE {status} END"
    )


def _attempt_of(st: Any) -> str:
    retry = getattr(st.spec, "retry", None)
    most = getattr(retry, "attempts", 1) or 1
    if st.attempts > most:  # a resumed step: its earlier attempts ran before the resume
        return f"attempt {st.attempts} (resumed)"
    return f"attempt {st.attempts} of {most}"


def _live_note(st: Any, now: float) -> str:
    if st.comp_status:
        return _undo_note(st.comp_status, st.comp_error, st.comp_attempts)
    if st.status == "running" and st.retry_at is not None:
        wait = max(st.retry_at - now, 0.0)
        return f"{_attempt_of(st)} failed: {st.error}; retrying in {wait:.0f}s"
    if st.status == "running":
        return _attempt_of(st)
    if st.status == "waiting":
        return "waiting for approval"
    if st.replayed:
        return st.reason or (f"reused from {st.replayed_from}" if st.replayed_from else "reused")
    return st.error or st.reason or ""


def view_of_run(run: Any, *, head: int | None = None, tail: int = 0) -> RunView:
    """The table of a run that is executing (or just finished) in this process: anything
    with ``spec``, ``states``, ``run_id``, ``status`` and ``error`` (the runner).

    With ``head``, a run of more than ``head + tail`` steps gets rows for its first ``head``
    and last ``tail`` steps only, and its counts: what a redraw shows of a 10,000-step run
    costs what its few hundred drawn rows cost, not a row per step."""
    now = time.time()
    steps = run.spec.steps
    if head is not None and len(steps) > head + tail:
        ran = replayed = 0
        for st in run.states.values():
            shown = shown_status(st.status, st.replayed, st.comp_status, run.status, st.error)
            ran += shown not in _NOT_RAN
            replayed += shown == "replayed"
        part = view_of_run(_Part(run, [*steps[:head], *steps[len(steps) - tail :]]))
        part.total, part.ran, part.replayed = len(steps), ran, replayed
        return part
    rows = []
    for s in steps:
        st = run.states[s.id]
        shown = shown_status(st.status, st.replayed, st.comp_status, run.status, st.error)
        dur = None
        if st.started_at is not None and not st.replayed:
            dur = (st.finished_at or now) - st.started_at
        if st.comp_status == "running" and st.finished_at is not None:
            dur = None
        rows.append(
            {
                "step": s.id,
                "kind": s.kind,
                "status": shown,
                "attempts": st.attempts,
                "duration": dur,
                "note": _live_note(st, now),
                "traceback": st.traceback if st.status == "failed" else None,
            }
        )
    return RunView(run.run_id, run.spec.name, run.status, run.error, rows)


def view_of_rows(
    run: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    tracebacks: Mapping[str, str] | None = None,
) -> RunView:
    now = time.time()
    rows = []
    for r in steps:
        raw = str(r["status"])
        status = shown_status(
            raw, bool(r.get("replayed_from")), r.get("comp_status"), run["status"], r.get("error")
        )
        dur = None
        if r.get("started_at") is not None:
            end = r.get("finished_at")
            if end is not None:
                dur = (end - r["started_at"]).total_seconds()
            elif raw in ("running", "waiting"):
                dur = now - float(r["started_at"].replace(tzinfo=timezone.utc).timestamp())
        note = r.get("error") or r.get("reason") or ""
        if status == "replayed":
            dur = None
            note = note or f"reused from {r['replayed_from']}"
        if raw == "waiting":
            note = "waiting for approval"
        if r.get("comp_status"):
            note = _undo_note(
                r["comp_status"], r.get("comp_error"), int(r.get("comp_attempts") or 0)
            )
        rows.append(
            {
                "step": r["step_id"],
                "kind": r["kind"],
                "status": status,
                "attempts": int(r.get("attempts") or 0),
                "duration": dur,
                "note": note,
                "traceback": (tracebacks or {}).get(r["step_id"]) if raw == "failed" else None,
            }
        )
    return RunView(run["run_id"], run["workflow"], run["status"], run.get("error"), rows)


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _error_line(view: RunView, shown: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the table ends with the run's error: not when a shown step's note says it
    already (a failed step's reason is said once, in its row)."""
    if not view.error or view.status == "completed":
        return False
    return all(r["note"] != view.error for r in shown)


def render_text(view: RunView, *, limit: int = TEXT_LIMIT) -> str:
    rows = view.rows
    total, ran, replayed = view.counts()
    head = (
        f"run {view.run_id} · {view.workflow} · {view.status} · "
        f"{total} steps ({ran} ran, {replayed} replayed)"
    )
    shown = rows if total <= limit else rows[: limit // 2] + rows[-limit // 2 :]
    w_step = max([4, *(len(r["step"]) for r in shown)])
    w_kind = max([4, *(len(r["kind"]) for r in shown)])
    w_status = max([6, *(len(r["status"]) for r in shown)])
    lines = [
        head,
        f"  {'step':<{w_step}}  {'kind':<{w_kind}}  {'status':<{w_status}}  attempts  duration  note",
    ]
    for i, r in enumerate(shown):
        if total > limit and i == limit // 2:
            lines.append(f"  ... {total - limit} more steps ...")
        long = len(r["note"]) > 90 and r["note"] != view.error  # the reason is shown whole
        note = r["note"][:87] + "..." if long else r["note"]
        lines.append(
            f"  {r['step']:<{w_step}}  {r['kind']:<{w_kind}}  {r['status']:<{w_status}}  "
            f"{r['attempts']:>8}  {_dur(r['duration']):>8}  {note}".rstrip()
        )
    if _error_line(view, shown):
        lines.append(f"  error: {view.error}")
    return "\n".join(lines)


def _rules(*tables: str) -> str:
    """CSS for the step table (and a gate's preview table) wherever it is drawn: the cell's
    output, where JupyterLab and Notebook 7 right-align and centre tables
    (``:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td``, specificity 0,2,1), and an
    ipywidgets HTML, where nothing styles tables but lines are 28 px tall. Every selector
    here is at least 0,2,2, so the table looks the same in both."""

    def each(part: str) -> str:
        return ",".join(f".airun-run table.{t}{part}" for t in tables)

    return (
        f"{each('')}{{border-collapse:collapse;border:none;margin:4px 0 0 0;"
        "table-layout:auto;width:auto;font-size:13px;color:inherit}"
        f"{each(' th')},{each(' td')}{{text-align:left;vertical-align:top;line-height:1.45;"
        "padding:3px 16px 3px 0;border:none;"
        "border-bottom:1px solid var(--jp-border-color2, #eaeef2);max-width:none;"
        "white-space:nowrap;background:none}"
        f"{each(' th')}{{font-weight:600;border-bottom:2px solid var(--jp-border-color1, #d0d7de)}}"
        f"{each(' td.num')}{{text-align:right;font-variant-numeric:tabular-nums}}"
        f"{each(' td.note')}{{white-space:normal;min-width:12em}}"
        f"{each(' tbody tr:nth-child(n)')}{{background:none}}"
    )


TABLE_CLASS = "airun-table"
CSS = (
    "<style>.airun-run{font-family:var(--jp-ui-font-family,system-ui,sans-serif);"
    "font-size:13px;line-height:1.45;margin:4px 0;white-space:normal;text-align:left;"
    "color:var(--jp-content-font-color1, inherit)}"
    'body[data-jp-theme-light="false"] .airun-run{--airun-human-color:#b083f0}'
    + _rules(TABLE_CLASS, "dataframe")
    + f".airun-run details summary{{cursor:pointer;color:{_ERROR}}}"
    ".airun-run pre{margin:4px 0;font-size:12px;line-height:1.35;white-space:pre-wrap}"
    f".airun-error{{color:{_ERROR};margin-top:4px}}</style>"
)


def _tb_html(tb: str | None) -> str:
    if not tb:
        return ""
    return f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>"


def render_html(view: RunView, *, limit: int = HTML_LIMIT) -> str:
    rows = view.rows
    total = view.counts()[0] if view.total is not None else len(rows)
    shown = rows if total <= limit else rows[:limit]
    color = _STATUS_COLORS.get(view.status, _MUTED)
    out = [
        CSS,
        '<div class="airun-run">',
        f"<div><b>run {html.escape(view.run_id)}</b> · {html.escape(view.workflow)} · "
        f'<span style="color:{color};font-weight:bold">{html.escape(view.status)}</span></div>',
        f'<table class="{TABLE_CLASS}"><thead><tr>'
        "<th>step</th><th>kind</th><th>status</th><th>attempts</th><th>duration</th><th>note</th>"
        "</tr></thead><tbody>",
    ]
    for r in shown:
        c = _STATUS_COLORS.get(r["status"], _MUTED)
        out.append(
            f"<tr><td><code>{html.escape(r['step'])}</code></td><td>{html.escape(str(r['kind']))}</td>"
            f'<td style="color:{c};font-weight:bold">{html.escape(str(r["status"]))}</td>'
            f'<td class="num">{html.escape(str(r["attempts"]))}</td>'
            f'<td class="num">{html.escape(_dur(r["duration"]))}</td>'
            f'<td class="note">{html.escape(r["note"])}{_tb_html(r.get("traceback"))}</td></tr>'
        )
    if total > limit:
        out.append(f"<tr><td colspan=6>... {total - limit} more steps</td></tr>")
    out.append("</tbody></table>")
    if _error_line(view, shown):
        out.append(f'<div class="airun-error">error: {html.escape(str(view.error))}</div>')
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
