"""``airun dashboard``: runs, one run's steps and attempts, and open gates, in a terminal.

Keyboard only (it runs over SSH): arrows move, Enter opens the run under the cursor, Tab moves
between tables, ``f`` / ``F`` change the status filter, ``a`` / ``r`` approve or reject the gate
under the cursor (with a comment), ``c`` cancels the selected run and ``b`` rolls it back, each
after a confirmation, ``q`` quits. The lists refresh every second. Decisions and cancels are
recorded as the dashboard's user (this process's identity) through the ``dashboard`` channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Header, Label

from airun_nb.dashboard.screens import ConfirmScreen, DecisionScreen
from airun_nb.engine import cancel as cancellation
from airun_nb.errors import AirunError
from airun_nb.gates import gate
from airun_nb.governance import identity
from airun_nb.history import readmodels as overview
from airun_nb.store.backend import Backend
from airun_nb.workflow import rollback

FILTERS = ("all", *overview.RUN_STATUSES)
MAX_COMMENT = 4000
CSS = """
#filter, #detail-title, #gates-title, #message { height: 1; padding: 0 1; }
#message { color: $warning; }
#runs { height: 1fr; min-height: 3; }
#steps, #attempts { height: 1fr; min-height: 3; }
#gates { height: auto; max-height: 6; }
#gate-detail { height: auto; max-height: 5; padding: 0 1; color: $text-muted; }
"""
# Status colours (Rich styles), the same meaning as on the page and in the notebook.
COLOURS = {
    "completed": "green",
    "approved": "green",
    "approved, waiting to resume": "green",
    "failed": "red",
    "rollback failed": "red",
    "rejected": "magenta",
    "waiting": "yellow",
    "waiting for approval": "yellow",
    "open": "yellow",
    "running": "cyan",
    "rolling back": "cyan",
    "rolled back": "dim",
    "cancelled": "dim",
    "skipped": "dim",
}


class Dashboard(App[None]):
    """The terminal dashboard over one store."""

    TITLE = "airun dashboard"
    CSS = CSS
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("f", "filter(1)", "Filter"),
        Binding("F", "filter(-1)", "Filter back", show=False),
        Binding("enter", "open_run", "Open run", show=False),
        Binding("a", "decide('approve')", "Approve"),
        Binding("r", "decide('reject')", "Reject"),
        Binding("c", "cancel_run", "Cancel run"),
        Binding("b", "rollback_run", "Roll back run"),
        Binding("g", "focus_gates", "Gates"),
        Binding("s", "focus_runs", "Runs"),
    ]

    def __init__(self, store: Backend, *, refresh_every: float = 1.0) -> None:
        super().__init__()
        self.store = store
        self.refresh_every = refresh_every
        self.user = identity.current()
        self.filter_index = 0
        self.selected: str | None = None
        self.runs: list[dict[str, Any]] = []
        self.gates: list[dict[str, Any]] = []

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("", id="filter")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Label("", id="message")
        with Vertical():
            yield Label("Open gates (a approve, r reject)", id="gates-title")
            yield DataTable(id="gates", cursor_type="row")
            yield Label("", id="gate-detail")
            yield Label("No run open: Enter on a run shows its steps", id="detail-title")
            yield DataTable(id="steps", cursor_type="row")
            yield DataTable(id="attempts", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).add_columns(
            "run", "workflow", "status", "launched by", "created", "steps", "gates"
        )
        self.query_one("#gates", DataTable).add_columns(
            "run", "gate", "message", "votes", "may decide", "deadline", "you"
        )
        self.query_one("#steps", DataTable).add_columns(
            "step", "kind", "status", "attempts", "started", "finished", "note"
        )
        self.query_one("#attempts", DataTable).add_columns(
            "step", "phase", "attempt", "status", "started", "finished", "error"
        )
        self.refresh_data()
        self.set_interval(self.refresh_every, self.refresh_data)
        self.query_one("#runs", DataTable).focus()

    # -- data -----------------------------------------------------------------------------
    @property
    def status_filter(self) -> str | None:
        value = FILTERS[self.filter_index]
        return None if value == "all" else value

    def _tables_shown(self) -> bool:
        """Whether the screen with the tables is the one shown: not when a dialog is up (its
        screen has none of them), nor while the app is closing."""
        stack = self.screen_stack
        return bool(stack) and self.screen is stack[0]

    def refresh_data(self) -> None:
        if not self._tables_shown():
            return
        try:
            self._refresh_tables()
        except NoMatches:  # the timer fired while the app was tearing its screen down
            return

    def _refresh_tables(self) -> None:
        try:
            self.runs = overview.runs(self.store, status=self.status_filter, limit=200)
            self.gates = overview.open_gates(self.store, self.user)
        except AirunError as exc:
            self.say(exc.message)
            return
        self.query_one("#filter", Label).update(
            f"status: [b]{escape(FILTERS[self.filter_index])}[/b]  (f / F to change)   "
            f"you are [b]{escape(self.user)}[/b]   {len(self.runs)} runs, "
            f"{len(self.gates)} open gates"
        )
        _fill(
            self.query_one("#runs", DataTable),
            [
                (
                    r["run_id"],
                    [
                        r["run_id"],
                        r["workflow"],
                        _cell(r["state"]),
                        r["launched_by"] or "",
                        _short(r["created_at"]),
                        f"{r['completed_steps']}/{r['steps']}",
                        str(r["open_gates"]),
                    ],
                )
                for r in self.runs
            ],
        )
        _fill(
            self.query_one("#gates", DataTable),
            [
                (
                    f"{g['run_id']}/{g['gate_id']}",
                    [
                        g["run_id"],
                        g["gate_id"],
                        _clip(g["message"], 40),
                        g["progress"] or "",
                        _clip(g["who_may_decide"], 40),
                        _short(g["deadline"]),
                        "may decide" if g["may_decide"] else _clip(g["refusal"], 40),
                    ],
                )
                for g in self.gates
            ],
        )
        self.show_gate()
        if self.selected is not None:
            self.show_run(self.selected)

    def show_gate(self) -> None:
        """The gate under the cursor: its message, preview, votes, form and options."""
        key = self._cursor_key("#gates")
        found = [g for g in self.gates if f"{g['run_id']}/{g['gate_id']}" == key]
        label = self.query_one("#gate-detail", Label)
        if not found:
            label.update("")
            return
        g = found[0]
        lines = [f"{g['gate_id']} of {g['run_id']}: {g['message']}"]
        if g.get("progress"):
            lines[0] += f"  [{g['progress']}]"
        lines.append(f"may decide: {g['who_may_decide']}")
        if g.get("acting_for"):
            lines.append(f"you decide for {g['acting_for']} (delegated)")

        if g.get("fields"):
            lines.append(
                "form: "
                + ", ".join(
                    f"{f['name']} ({f['type']}{', required' if f.get('required') else ''})"
                    for f in g["fields"]
                )
            )
        if g.get("options"):
            lines.append("options: " + " / ".join(g["options"]))
        if g.get("preview_text"):
            lines.append("preview: " + _clip(g["preview_text"], 150))
        label.update(escape("\n".join(lines)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "gates":
            try:
                self.show_gate()
            except NoMatches:  # a highlight still queued while the app tears its screen down
                return

    def show_run(self, run_id: str) -> None:
        try:
            detail = overview.run_detail(self.store, run_id)
        except AirunError as exc:
            self.say(exc.message)
            return
        self.selected = run_id
        rejected = overview.rejected_steps(detail)
        self.query_one("#detail-title", Label).update(
            f"run [b]{escape(run_id)}[/b] · {escape(str(detail['workflow']))} · "
            f"{_coloured(detail['state'])}"
            + (f" · {escape(_clip(detail['error'], 80))}" if detail.get("error") else "")
            + (f" · {escape(_clip(detail['resumed_by'], 80))}" if detail.get("resumed_by") else "")
        )
        _fill(
            self.query_one("#steps", DataTable),
            [
                (
                    s["step_id"],
                    [
                        s["step_id"],
                        s["kind"],
                        _cell(
                            "rejected" if s["step_id"] in rejected else s["status"],
                            f" (undo {s['comp_status']})" if s.get("comp_status") else "",
                        ),
                        str(s["attempts"] or 0),
                        _short(s["started_at"]),
                        _short(s["finished_at"]),
                        _clip(s["error"] or s["reason"], 60),
                    ],
                )
                for s in detail["steps"]
            ],
        )
        _fill(
            self.query_one("#attempts", DataTable),
            [
                (
                    f"{a['step_id']}/{a['phase']}/{a['attempt']}",
                    [
                        a["step_id"],
                        a["phase"],
                        str(a["attempt"]),
                        a["status"],
                        _short(a["started_at"]),
                        _short(a["finished_at"]),
                        _clip(a["error"], 60),
                    ],
                )
                for a in detail["attempts"]
            ],
        )

    def say(self, text: str) -> None:
        self.query_one("#message", Label).update(Text(text))  # never markup

    # -- what is under the cursor -------------------------------------------------------------
    def _cursor_key(self, table_id: str) -> str | None:
        table = self.query_one(table_id, DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return None if key.value is None else str(key.value)

    def _target_run(self) -> str | None:
        if self.focused is self.query_one("#runs", DataTable):
            return self._cursor_key("#runs")
        return self.selected or self._cursor_key("#runs")

    # -- actions ----------------------------------------------------------------------------
    def action_filter(self, step: int) -> None:
        self.filter_index = (self.filter_index + step) % len(FILTERS)
        self.refresh_data()

    def action_focus_gates(self) -> None:
        self.query_one("#gates", DataTable).focus()

    def action_focus_runs(self) -> None:
        self.query_one("#runs", DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "runs" and event.row_key.value is not None:
            self.show_run(str(event.row_key.value))
        elif event.data_table.id == "gates" and event.row_key.value is not None:
            self.show_run(str(event.row_key.value).split("/", 1)[0])

    def action_open_run(self) -> None:
        run_id = self._cursor_key("#runs")
        if run_id:
            self.show_run(run_id)

    def action_decide(self, decision: str) -> None:
        key = self._cursor_key("#gates")
        if key is None:
            self.say("no open gate to decide")
            return
        run_id, gate_id = key.split("/", 1)
        verb = "Approve" if decision == gate.APPROVE else "Reject"
        view = next((g for g in self.gates if f"{g['run_id']}/{g['gate_id']}" == key), {})
        request_id = uuid.uuid4().hex  # one per dialog: sending it again is the same decision

        def done(answer: dict[str, Any] | None) -> None:
            if answer is None:
                self.say("nothing decided")
                return
            try:
                out = gate.decide(
                    self.store,
                    run_id,
                    gate_id,
                    decision,
                    actor=self.user,
                    channel="dashboard",
                    comment=(answer.get("comment") or "").strip() or None,
                    form=answer.get("form") or None,
                    option=answer.get("option") if decision == gate.APPROVE else None,
                    request_id=request_id,
                )
            except AirunError as exc:
                self.say(exc.message)
            else:
                self.say(self._decided(out, run_id, gate_id))
            self.refresh_data()

        self.push_screen(
            DecisionScreen(
                f"{verb} gate {gate_id} of run {run_id}?",
                view.get("fields") or [],
                (view.get("options") or []) if decision == gate.APPROVE else [],
                MAX_COMMENT,
            ),
            done,
        )

    def _decided(self, out: dict[str, Any], run_id: str, gate_id: str) -> str:
        if out["status"] == "open":
            return f"your vote on gate {gate_id} of run {run_id} is in: {out['progress']}"
        resume = gate.resume_command(run_id, self.store.path)
        from airun_nb.store.queue import continued_by

        worker = continued_by((self.store.run_row(run_id) or {}).get("source"))
        if worker is not None:  # a submitted run: a worker of its queue takes it on
            return f"{out['status']} gate {gate_id} of run {run_id} as {self.user}; {worker}"
        if out["status"] == "approved":
            chosen = f" with option {out['option']}" if out.get("option") else ""
            return (
                f"approved gate {gate_id} of run {run_id} as {self._as(out)}{chosen}; the run "
                f"continues in its notebook, or with `{resume}`"
            )
        said = f": {out['comment']}" if out.get("comment") else ""
        return (
            f"Rejected by {', '.join(gate.named(out))}{said} (gate {gate_id} of run {run_id}); the run "
            f"rolls back when it continues (its notebook, or `{resume}`)"
        )

    def _as(self, out: Mapping[str, Any]) -> str:
        """``carol for bob`` when this user's vote went in through a delegation."""
        for principal, delegate in (out.get("delegated") or {}).items():
            if delegate == self.user:
                return f"{self.user} for {principal}"
        return str(self.user)

    def action_cancel_run(self) -> None:
        self._confirm_then(False)

    def action_rollback_run(self) -> None:
        self._confirm_then(True)

    def _confirm_then(self, undo: bool) -> None:
        run_id = self._target_run()
        if run_id is None:
            self.say("no run selected")
            return
        question = (
            f"Roll back run {run_id} (undo its finished steps) and end it?"
            if undo
            else f"Cancel run {run_id}? Its open gates close; nothing is undone."
        )

        def done(yes: bool | None) -> None:
            if not yes:
                self.say("nothing changed")
                return
            try:
                self.say(self._apply(run_id, undo))
            except AirunError as exc:
                self.say(exc.message)
            self.refresh_data()

        self.push_screen(ConfirmScreen(question), done)

    def _apply(self, run_id: str, undo: bool) -> str:
        row = overview.runs_by_id(self.store, run_id)
        if row["status"] in cancellation.CANCELLABLE:
            out = cancellation.cancel(
                run_id, rollback=undo, by=self.user, channel="dashboard", db=self.store.path
            )
            return cancellation.describe(out)
        if not undo:
            raise cancellation.CancelError(
                f"run {run_id} is {row['status']} and cannot be cancelled"
            )
        result = rollback(run_id, db=self.store.path)
        return f"rolled back run {run_id}: {result.status}"


def _fill(table: DataTable[Any], rows: list[tuple[str, list[Any]]]) -> None:
    """Replace a table's rows, keeping the cursor on the same key when it is still there."""
    current = None
    if table.row_count:
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        current = row_key.value
    table.clear()
    for key, cells in rows:
        # Text cells: a workflow's names and a gate's message are shown as written, never read
        # as Rich markup ("[/x]" in a message would otherwise stop the dashboard).
        table.add_row(*(Text(str(c)) for c in cells), key=key)
    keys = [k for k, _ in rows]
    if current in keys:
        table.move_cursor(row=keys.index(str(current)), animate=False)


def _coloured(status: str) -> str:
    """A status in its colour, as Rich markup (the text itself escaped), for labels."""
    colour = COLOURS.get(status)
    return f"[{colour}]{escape(status)}[/]" if colour else escape(status)


def _cell(status: str, extra: str = "") -> Text:
    """A status cell in its colour (plain text when read back)."""
    return Text(status + extra, style=COLOURS.get(status, ""))


def _short(value: str | None) -> str:
    return "" if not value else value.replace("T", " ")[:19]


def _clip(value: Any, width: int) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
