"""The approval gate as an ipywidget: message, preview, comment, Approve / Reject.

No custom JavaScript: plain ipywidgets 8. The cell that opened the gate has already ended, so
the kernel is free to handle the click; the click records the decision in the store (first
decision wins) and continues the run right here, drawing its progress in the gate's area.
The plain-text form names the CLI commands, so headless outputs stay readable.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from .. import gate
from ..config import current_user
from ..errors import AirunError
from ..ledger import Listener
from ..store import Store
from ..workflow import Workflow
from .display import LiveTable, WidgetTable


def _deadline(row: Mapping[str, Any]) -> str:
    d = row.get("deadline")
    return d.strftime("%Y-%m-%d %H:%M UTC") if isinstance(d, datetime) else "none"


def _approvers(row: Mapping[str, Any]) -> str:
    raw = json.loads(row["approvers"]) if row.get("approvers") else None
    if not raw:
        return "anyone but the launcher" if not row.get("allow_self_approval") else "anyone"
    return "; ".join(gate.expand_approvers(raw)[1])


class GateWidget(widgets.VBox):
    """One open gate. ``approve_button.click()`` does what a click in the page does."""

    def __init__(self, row: Mapping[str, Any], db: Path, namespace: MutableMapping[str, Any]):
        self.row = dict(row)
        self.db = db
        self.namespace = namespace
        self.run_id = str(row["run_id"])
        self.gate_id = str(row["gate_id"])
        self._deciding = False
        cmds = gate.commands(self.run_id, self.gate_id)
        header = widgets.HTML(
            f"<div style='border-left:4px solid #8250df;padding-left:8px'>"
            f"<b>Approval needed</b> · gate <code>{html.escape(self.gate_id)}</code> · run "
            f"<code>{html.escape(self.run_id)}</code> · {html.escape(str(row.get('workflow')))}"
            f"<div style='font-size:1.1em;margin:4px 0'>{html.escape(str(row.get('message')))}</div>"
            f"<small>approvers: {html.escape(_approvers(row))} · deadline: {_deadline(row)}<br>"
            f"or from a terminal: <code>{cmds['approve']}</code> / <code>{cmds['reject']}</code>."
            " After a kernel restart these buttons are stale: run <code>%workflow approvals</code>"
            " to draw the gate again.</small></div>"
        )
        parts: list[widgets.Widget] = [header]
        if row.get("preview_html"):
            parts.append(widgets.HTML(str(row["preview_html"])))
        self.comment = widgets.Textarea(placeholder="comment (optional)", layout={"width": "60%"})
        self.approve_button = widgets.Button(
            description="Approve", button_style="success", icon="check"
        )
        self.reject_button = widgets.Button(
            description="Reject", button_style="danger", icon="times"
        )
        self.approve_button.on_click(lambda _b: self.decide(gate.APPROVE))
        self.reject_button.on_click(lambda _b: self.decide(gate.REJECT))
        self.status = widgets.HTML("")
        self.table = widgets.HTML("")
        self.out = widgets.Output()
        parts += [
            self.comment,
            widgets.HBox([self.approve_button, self.reject_button]),
            self.status,
            self.table,
            self.out,
        ]
        super().__init__(parts)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = repr(self)  # the full text, not ipywidgets' 110 characters
        return bundle

    def __repr__(self) -> str:
        cmds = gate.commands(self.run_id, self.gate_id)
        lines = [
            f"Approval needed · gate {self.gate_id} · run {self.run_id} · {self.row.get('workflow')}",
            str(self.row.get("message")),
            f"approvers: {_approvers(self.row)} · deadline: {_deadline(self.row)}",
        ]
        if self.row.get("preview_text"):
            preview = str(self.row["preview_text"]).splitlines()
            lines += ["preview:", *("  " + p for p in preview[:12])]
            if len(preview) > 12:
                lines.append(f"  ... {len(preview) - 12} more lines")
        lines.append(f"decide with the buttons, or: {cmds['approve']} | {cmds['reject']}")
        return "\n".join(lines)

    def _buttons(self, enabled: bool) -> None:
        self.approve_button.disabled = not enabled
        self.reject_button.disabled = not enabled

    def decide(self, decision: str) -> None:
        """Record the decision, then continue the run in this widget's output area."""
        if self._deciding:
            return  # a double click: the first one is already being recorded
        self._deciding = True
        self._buttons(False)
        try:
            gate.decide(
                Store.open(self.db),
                self.run_id,
                self.gate_id,
                decision,
                actor=current_user(),
                channel="widget",
                comment=self.comment.value or None,
            )
        except gate.AlreadyDecided as exc:
            self.status.value = f"<b>Stale gate:</b> {html.escape(exc.message)}; nothing recorded."
            return
        except AirunError as exc:
            self.status.value = f"<b style='color:#cf222e'>Refused:</b> {html.escape(exc.message)}"
            self._buttons(True)
            self._deciding = False
            return
        verb = "Approved" if decision == gate.APPROVE else "Rejected"
        self.status.value = f"<b>{verb}</b> by {html.escape(current_user())}; continuing the run."
        self.continue_run()

    def continue_run(self) -> None:
        with self.out:
            try:
                resume_and_draw(self.run_id, self.db, self.namespace, WidgetTable(self.table))
            except AirunError as exc:
                print(f"{type(exc).__name__}: {exc.message}")


def resume_and_draw(
    run_id: str, db: Path, namespace: MutableMapping[str, Any], listener: Listener | None = None
) -> None:
    """Resume a run in this kernel; draw the gates it stops at (if any)."""
    wf = Workflow.from_run(run_id, db=db)
    engine = wf.runner(db=db, namespace=namespace, listener=listener or LiveTable())
    engine.prepare(resume=run_id)
    try:
        engine.execute()
    finally:
        draw_gates(engine.open_gates, engine.store.path, namespace)


def draw_gates(
    rows: list[Mapping[str, Any]], db: Path, namespace: MutableMapping[str, Any]
) -> None:
    store = Store.open(db)
    for row in rows:
        fresh = gate.gate_row(store, str(row["run_id"]), str(row["gate_id"])) or row
        display(GateWidget(fresh, db, namespace))
