"""The approval gate as an ipywidget: message, preview, comment, Approve / Reject / Cancel run.

No custom JavaScript: plain ipywidgets 8. The cell that opened the gate has already ended, so
the kernel is free to handle the click. A click first checks that the run can continue here
(its remaining steps' functions are defined), then records the decision (first decision wins)
and continues the run right here, drawing its progress in the gate's area. A decision taken
anywhere else reaches the widget through the kernel's watcher (:mod:`.watcher`): the buttons
show it, and the run continues in this kernel. The plain-text form names the CLI commands, so
headless outputs stay readable.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Mapping, MutableMapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from airun_nb.engine.memory import gc_release
from airun_nb.engine.runner import Runner
from airun_nb.errors import AirunError, RunBusy
from airun_nb.gates import form as forms
from airun_nb.gates import gate
from airun_nb.governance.identity import current as current_user
from airun_nb.history import frames as history
from airun_nb.history.steptable import CSS, render_html, render_text, view_of_run
from airun_nb.jupyter.display import LiveTable, WidgetTable, said_once
from airun_nb.jupyter.lastrun import remember
from airun_nb.jupyter.watcher import WATCHER
from airun_nb.store.opening import open_store
from airun_nb.store.owner import owner_alive
from airun_nb.workflow import Workflow

_DRAWN: list[GateWidget] = []
_STYLE = "<style>.airun-gate pre{white-space:pre-wrap}</style>"


def _deadline(row: Mapping[str, Any]) -> str:
    d = row.get("deadline")
    return d.strftime("%Y-%m-%d %H:%M UTC") if isinstance(d, datetime) else "none"


def _approvers(row: Mapping[str, Any]) -> str:
    if not gate.approver_list(row) and not gate.four_eyes(row):
        return "anyone, the launcher too"
    return gate.who_may_decide(row)


def _age(value: Any) -> str:
    if not isinstance(value, datetime):
        return "?"
    secs = max((datetime.now(timezone.utc) - value.replace(tzinfo=timezone.utc)).total_seconds(), 0)
    if secs < 120:
        return f"{secs:.0f}s"
    if secs < 7200:
        return f"{secs / 60:.0f}m"
    if secs < 172800:
        return f"{secs / 3600:.0f}h"
    return f"{secs / 86400:.0f}d"


def waiting_line(row: Mapping[str, Any]) -> str:
    """One line of ``%workflow approvals``: the run, its age, and how to end it."""
    return (
        f"run {row['run_id']} ({row.get('workflow')}, started by {row.get('launched_by')}, "
        f"{_age(row.get('run_created_at') or row.get('opened_at'))} ago) waits at gate "
        f"{row['gate_id']} for {_age(row.get('opened_at'))}; no longer wanted? "
        f"%workflow cancel {row['run_id']}"
    )


def gate_widgets() -> list[GateWidget]:
    """The gate widgets drawn in this kernel, oldest first."""
    return list(_DRAWN)


def run_outcome(status: str, failed_step: str | None, gates: list[str] | None = None) -> str:
    """What became of a continued run, as the end of a gate's status line."""
    at = f" at step '{failed_step}'" if failed_step else ""
    if status == "completed":
        return "the run completed."
    if status == "waiting":
        named = ", ".join(f"'{g}'" for g in gates or [])
        return f"the run now waits at gate {named}." if named else "the run waits at a gate."
    if status == "rolled_back":
        return f"the run failed{at} and was rolled back." if at else "the run was rolled back."
    if status == "rollback_failed":
        return f"the run failed{at} and its rollback failed."
    if status == "failed":
        return f"the run failed{at}."
    if status == "cancelled":
        return "the run was cancelled."
    if status == "interrupted":
        return "the run was interrupted."
    return f"the run is {status}."


def _decided_line(row: Mapping[str, Any], outcome: str | None = None) -> str:
    """The gate's status line: who decided, and what became of the run (once it is known)."""
    who = html.escape(str(row.get("actor") or "?"))
    via = html.escape(str(row.get("channel") or "?"))
    status = str(row.get("status"))
    if status in ("approved", "rejected"):
        out = gate.output_of(row)
        who = html.escape(", ".join(gate.shown_by(row)) or str(row.get("actor") or "?"))
    if status == "approved":
        chosen = f", option <b>{html.escape(str(out['option']))}</b>" if out["option"] else ""
        return f"<b>Approved</b> by {who} via {via}{chosen}; {outcome or 'continuing the run.'}"
    if status == "rejected":
        said = f": {html.escape(str(row['comment']))}" if row.get("comment") else ""
        return f"<b>Rejected</b> by {who} via {via}{said}; {outcome or 'rolling the run back.'}"
    if status == "cancelled":
        return f"<b>Cancelled</b> by {who} via {via}; the run will not continue."
    said = html.escape(str(row.get("comment") or ""))
    tail = f"; {outcome}" if outcome else ""
    return f"<b>{html.escape(status.capitalize())}</b>: {said}{tail}"


def run_table_widget(listener: LiveTable, engine: Runner) -> widgets.HTML | None:
    """Turn the cell's live table of a run that stopped at a gate into a widget, in place (the
    same display), so whatever continues the run later (a click, the watcher) redraws that
    table: the cell keeps one table of the run, and it shows the run as it is now."""
    view = view_of_run(engine)
    table = widgets.HTML(render_html(view))
    bundle = table._repr_mimebundle_()
    if not isinstance(bundle, dict):
        return None
    bundle["text/plain"] = render_text(view)  # what a headless reader of the notebook sees
    bundle["text/html"] = render_html(view)
    return table if listener.hand_over(bundle) else None


class GateWidget(widgets.VBox):
    """One open gate. ``approve_button.click()`` does what a click in the page does.

    With ``table=False`` (the run's table is drawn right above the gate) the gate's own table
    stays empty until the run continues, so the cell does not show the same table twice."""

    def __init__(
        self,
        row: Mapping[str, Any],
        db: Path,
        namespace: MutableMapping[str, Any],
        *,
        table: bool = True,
        run_table: widgets.HTML | None = None,
    ):
        self.row = dict(row)
        self.db = db
        self.namespace = namespace
        self.run_id = str(row["run_id"])
        self.gate_id = str(row["gate_id"])
        self._deciding = threading.Lock()
        self.decided = False
        self._decision: dict[str, Any] = {}
        self.header = widgets.HTML(self._header("Approval needed"))
        parts: list[widgets.Widget] = [self.header]
        if row.get("preview_html"):
            parts.append(
                widgets.HTML(f"{CSS}<div class='airun-gate airun-run'>{row['preview_html']}</div>")
            )
        self.fields = _field_widgets(row)
        if self.fields:
            parts.append(widgets.VBox(list(self.fields.values())))
        options = gate.form_spec(row).get("options") or []
        self.option = (
            widgets.ToggleButtons(
                options=list(options), value=None, description="option", tooltips=list(options)
            )
            if options
            else None
        )
        if self.option is not None:
            parts.append(self.option)
        self.comment = widgets.Textarea(placeholder="comment (optional)", layout={"width": "60%"})
        self.approve_button = widgets.Button(
            description="Approve", button_style="success", icon="check"
        )
        self.reject_button = widgets.Button(
            description="Reject", button_style="danger", icon="times"
        )
        self.cancel_button = widgets.Button(description="Cancel run", icon="ban")
        self.approve_button.on_click(lambda _b: self.decide(gate.APPROVE))
        self.reject_button.on_click(lambda _b: self.decide(gate.REJECT))
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.status = widgets.HTML("")
        # The run's table: the cell's own (``run_table``, drawn above the gate), redrawn as the
        # run continues, or one of the gate's own.
        if run_table is None:
            run_table = widgets.HTML(self._stored_table()[1] if table else "")
            parts_table = [run_table]
        else:
            parts_table = []
        self.table = run_table
        self.out = widgets.Output()
        parts += [
            self.comment,
            widgets.HBox([self.approve_button, self.reject_button, self.cancel_button]),
            self.status,
            *parts_table,
            self.out,
        ]
        super().__init__(parts)
        _DRAWN.append(self)
        WATCHER.watch(self)

    def _header(self, title: str) -> str:
        row = self.row
        cmds = gate.commands(self.run_id, self.gate_id, db=self.db, row=row)
        count = gate.progress(row)
        return (
            f"{_STYLE}<div class='airun-gate' style='border-left:4px solid #8250df;"
            "padding-left:8px'>"
            f"<b class='airun-gate-title'>{html.escape(title)}</b> · gate "
            f"<code>{html.escape(self.gate_id)}</code> · run "
            f"<code>{html.escape(self.run_id)}</code> · {html.escape(str(row.get('workflow')))}"
            + (f" · <b>{html.escape(count)}</b>" if count and row.get("status") == "open" else "")
            + f"<div style='font-size:1.1em;margin:4px 0'>{html.escape(str(row.get('message')))}"
            f"</div><small>may decide: {html.escape(_approvers(row))} · deadline: "
            f"{_deadline(row)}<br>or from a terminal: <code>{html.escape(cmds['approve'])}</code>"
            f" / <code>{html.escape(cmds['reject'])}</code>"
            " — a decision taken there continues the run here.</small></div>"
        )

    def form_values(self) -> dict[str, Any]:
        """What the person typed in the gate's form (checked by the store's one check)."""
        return {name: w.value for name, w in self.fields.items() if w.value not in ("", None)}

    def _stored_table(self) -> tuple[str, str]:
        try:
            view = history.stored_run(self.run_id, self.db).view
        except AirunError:
            return "", ""
        return render_text(view), render_html(view)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = repr(self)  # the full text, not ipywidgets' 110 characters
        return bundle

    def __repr__(self) -> str:
        cmds = gate.commands(self.run_id, self.gate_id, db=self.db, row=self.row)
        lines = [
            f"Approval needed · gate {self.gate_id} · run {self.run_id} · {self.row.get('workflow')}",
            str(self.row.get("message")),
            f"may decide: {_approvers(self.row)} · deadline: {_deadline(self.row)}",
        ]
        count = gate.progress(self.row)
        if count:
            lines.append(count)
        spec = gate.form_spec(self.row)
        for f in forms.fields_of(spec).values():
            lines.append(f"field {forms.describe_field(f)}")
        if spec.get("options"):
            lines.append(f"options: {', '.join(spec['options'])}")
        if self.row.get("preview_text"):
            preview = str(self.row["preview_text"]).splitlines()
            lines += ["preview:", *("  " + p for p in preview[:12])]
            if len(preview) > 12:
                lines.append(f"  ... {len(preview) - 12} more lines")
        lines.append(f"decide with the buttons, or: {cmds['approve']} | {cmds['reject']}")
        return "\n".join(lines)

    def _buttons(self, enabled: bool) -> None:
        for b in (self.approve_button, self.reject_button, self.cancel_button):
            b.disabled = not enabled
        for w in [*self.fields.values(), *([self.option] if self.option else [])]:
            w.disabled = not enabled

    def _show_decision(self, row: Mapping[str, Any]) -> None:
        status = str(row.get("status"))
        self._buttons(False)
        self.approve_button.description = "Approved" if status == "approved" else "Approve"
        self.reject_button.description = "Rejected" if status == "rejected" else "Reject"
        self.cancel_button.description = "Cancelled" if status == "cancelled" else "Cancel run"
        self._decision = dict(row)
        self.status.value = _decided_line(row)
        title = {"approved": "Approved", "rejected": "Rejected", "cancelled": "Cancelled"}
        if status in title:
            self.row = {**self.row, **row}
            self.header.value = self._header(title[status])

    def decide(self, decision: str) -> None:
        """Check the run can continue here (a plan, nothing claimed), record the decision, then
        continue the run in this widget's output area. A refused decision changes nothing."""
        if self.decided or not self._deciding.acquire(blocking=False):
            return  # a double click: the first one is being handled
        try:
            self._buttons(False)
            WATCHER.forget(self)
            planned = self._claimed(dry=True)
            if isinstance(planned, AirunError):
                self.status.value = (
                    "<b style='color:var(--jp-error-color1, #cf222e)'>Not recorded:</b> the run "
                    f"cannot continue in this kernel: {html.escape(planned.message)}. Define "
                    "what is missing (run the notebook's cells above), then click again."
                )
                self._buttons(True)
                WATCHER.watch(self)
                return
            store = open_store(self.db)
            try:
                # The decision and this kernel's claim on the run are one hold of the store, so
                # another live kernel that sees the decision finds the run claimed by this one.
                with store.session("recording an approval decision"):
                    answer = gate.decide(
                        store,
                        self.run_id,
                        self.gate_id,
                        decision,
                        actor=current_user(),
                        channel="widget",
                        comment=self.comment.value or None,
                        form=self.form_values() or None,
                        option=self.option.value
                        if self.option and decision == gate.APPROVE
                        else None,
                    )
                    claimed = self._claimed() if answer.get("status") != "open" else None
            except BaseException as exc:
                gc_release()
                closed = None
                if isinstance(exc, gate.AlreadyDecided):
                    closed = gate.gate_row(open_store(self.db), self.run_id, self.gate_id) or {}
                    if closed.get("status") == "open":  # this person's vote is already in
                        closed = None
                if closed is not None:
                    self.decided = True
                    row = closed
                    self._show_decision(row)
                    self.status.value += f" (your click came too late: {html.escape(exc.message)})"
                    return
                if isinstance(exc, AirunError):
                    self.status.value = f"<b style='color:var(--jp-error-color1, #cf222e)'>Refused:</b> {html.escape(exc.message)}"
                    self._buttons(True)
                    WATCHER.watch(self)
                    return
                raise
            row = gate.gate_row(open_store(self.db), self.run_id, self.gate_id) or {}
            if answer.get("status") == "open":  # a vote towards a quorum: the gate waits on
                # (nothing was claimed for the vote: the run is still waiting at this gate)
                self.row = dict(row)
                self.header.value = self._header("Approval needed")
                said = "approved" if decision == gate.APPROVE else "rejected"
                self.status.value = (
                    f"You {said} as {html.escape(current_user())}: "
                    f"{html.escape(str(answer.get('progress')))}; the run continues here once "
                    "the gate is decided."
                )
                WATCHER.watch(self)
                return
            self.decided = True
            self._show_decision(row)
            if claimed is not None:
                self._go_on(claimed)
        finally:
            self._deciding.release()

    def _claimed(self, *, dry: bool = False) -> Runner | AirunError:
        """The run planned and claimed to continue here (``dry``: planned only, not claimed),
        or why it cannot continue here."""
        try:
            wf = Workflow.from_run(self.run_id, db=self.db)
            runner = wf.runner(
                db=self.db, namespace=self.namespace, listener=WidgetTable(self.table)
            )
            if dry:
                runner.dry_run(resume=self.run_id)
            else:
                runner.prepare(resume=self.run_id)
        except AirunError as exc:
            return exc
        return runner

    def _go_on(self, claimed: Runner | AirunError) -> None:
        """Continue the claimed run here, or say on the decided gate's line where it goes on."""
        if isinstance(claimed, Runner):
            self._execute(claimed)
            return
        if isinstance(claimed, RunBusy):
            where = "another process continues the run."
        else:
            where = (
                f"the run cannot continue in this kernel: {html.escape(claimed.message)}. "
                f"Define what is missing, then run <code>%workflow resume {self.run_id}</code>."
            )
        self.status.value = _decided_line(self._decision, where)

    def _execute(self, runner: Runner) -> None:
        remember(runner)  # last_run() is this run from now on
        try:
            runner.execute()
        except AirunError as exc:
            self.out.append_stdout(said_once(exc, runner) + "\n")
        finally:
            remember(runner)
            gates = [str(g["gate_id"]) for g in runner.open_gates]
            self._say_outcome(runner.status, runner.failed_step, gates)
            for row in runner.open_gates:
                fresh = gate.gate_row(runner.store, str(row["run_id"]), str(row["gate_id"]))
                gate_widget = GateWidget(
                    fresh or row, self.db, self.namespace, table=False, run_table=self.table
                )
                self.out.append_display_data(gate_widget)

    def _say_outcome(
        self, status: str, failed_step: str | None, gates: list[str] | None = None
    ) -> None:
        """End the status line with what became of the run (said once, replacing
        "continuing the run")."""
        if failed_step == self.gate_id:
            failed_step = None  # this gate was rejected: the line says so already
        row = gate.gate_row(open_store(self.db), self.run_id, self.gate_id) or self._decision
        self.status.value = _decided_line(row, run_outcome(status, failed_step, gates))

    def continue_run(self) -> None:
        """Continue the run after its gate was decided (here or elsewhere)."""
        self._go_on(self._claimed())

    def decided_elsewhere(self, row: dict[str, Any]) -> None:
        """The watcher saw a decision from another channel: show it and, when this kernel may
        run the run (it launched it, or nobody runs it now), continue it here."""
        if self.decided or not self._deciding.acquire(blocking=False):
            return
        try:
            self.decided = True
            self._show_decision(row)
            if row.get("status") == "cancelled":
                self.table.value = self._stored_table()[1]
                return
            run = open_store(self.db).run_row(self.run_id)
            if run is None or run["status"] != "waiting":
                self.table.value = self._stored_table()[1]
                if run is not None:
                    self._say_outcome(run["status"], run.get("failed_step"))
                return
            if gate.decided_here(self.run_id, self.gate_id):
                # decided by this notebook's own code: the cell that is run next continues it
                self.status.value = _decided_line(
                    row, "run the workflow's cell again to continue the run."
                )
                return
            if owner_alive(run) and int(run.get("owner_pid") or 0) != _pid():
                # the kernel that runs it continues it
                self.status.value = _decided_line(
                    row, "the kernel that launched the run continues it."
                )
                return
            self.continue_run()
        finally:
            self._deciding.release()

    def deadline_reached(self) -> None:
        """The gate's deadline passed: continuing applies its on_timeout."""
        self.decided_elsewhere({"status": "timed out", "comment": "the deadline passed"})

    def cancel(self) -> None:
        """End the run as cancelled (its gates close)."""
        from airun_nb.engine.cancel import cancel, describe

        WATCHER.forget(self)
        try:
            done = cancel(self.run_id, channel="widget", db=self.db, namespace=self.namespace)
        except AirunError as exc:
            self.status.value = f"<b style='color:var(--jp-error-color1, #cf222e)'>Refused:</b> {html.escape(exc.message)}"
            WATCHER.watch(self)
            return
        self.decided = True
        row = gate.gate_row(open_store(self.db), self.run_id, self.gate_id) or {}
        self._show_decision(row or {"status": "cancelled", "actor": current_user()})
        self.status.value += f"<br><small>{html.escape(describe(done))}</small>"
        self.table.value = self._stored_table()[1]


def _field_widgets(row: Mapping[str, Any]) -> dict[str, widgets.Widget]:
    """One input a form field: text boxes (typed by the store's one check), a dropdown for a
    choice or a yes/no, a password box for a secret."""
    out: dict[str, widgets.Widget] = {}
    style = {"description_width": "initial"}
    for name, f in forms.fields_of(gate.form_spec(row)).items():
        label = (f.label or name) + (" *" if f.required else "")
        hint = f.help or {"date": "YYYY-MM-DD", "integer": "whole number"}.get(f.type, f.type)
        w: widgets.Widget
        if f.type == "choice":
            w = widgets.Dropdown(
                options=[("", ""), *((str(c), str(c)) for c in f.choices or [])],
                value="" if f.default is None else str(f.default),
                description=label,
                style=style,
            )
        elif f.type == "boolean":
            w = widgets.Dropdown(
                options=[("", ""), ("yes", "true"), ("no", "false")],
                value="" if f.default is None else ("true" if f.default else "false"),
                description=label,
                style=style,
            )
        elif f.secret:
            w = widgets.Password(description=label, placeholder=hint, style=style)
        else:
            w = widgets.Text(
                value="" if f.default is None else str(f.default),
                description=label,
                placeholder=hint,
                style=style,
            )
        out[name] = w
    return out


def _pid() -> int:
    import os

    return os.getpid()


def draw_gates(
    rows: list[Mapping[str, Any]],
    db: Path,
    namespace: MutableMapping[str, Any],
    *,
    table: bool = True,
    run_table: widgets.HTML | None = None,
) -> None:
    """Display a gate widget per row; ``table=False`` when the run's table is right above
    (and ``run_table`` that table as a widget, which the continued run redraws)."""
    store = open_store(db)
    for row in rows:
        fresh = gate.gate_row(store, str(row["run_id"]), str(row["gate_id"])) or row
        display(GateWidget(fresh, db, namespace, table=table, run_table=run_table))
