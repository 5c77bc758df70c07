"""The dashboard's dialogs: a yes/no confirmation and a comment prompt (keyboard only)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

CSS = """
ConfirmScreen, CommentScreen { align: center middle; }
#dialog { width: 80; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
#dialog Label { width: 100%; margin-bottom: 1; }
"""


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; ``y`` confirms, ``n`` or Escape declines."""

    DEFAULT_CSS = CSS
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.question), id="question")
            yield Label("[b]y[/b] yes    [b]n[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class CommentScreen(ModalScreen["str | None"]):
    """Ask for a comment; Enter sends it (may be empty), Escape gives up."""

    DEFAULT_CSS = CSS
    BINDINGS = [Binding("escape", "give_up", "Cancel")]

    def __init__(self, question: str, max_length: int) -> None:
        super().__init__()
        self.question = question
        self.max_length = max_length

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.question), id="question")
            yield Input(
                placeholder="comment (optional), Enter to send, Escape to go back",
                max_length=self.max_length,
                id="comment",
            )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_give_up(self) -> None:
        self.dismiss(None)


class DecisionScreen(ModalScreen["dict[str, Any] | None"]):
    """A gate's decision: one input a form field, the option (when approving a gate with
    options) and a comment. Enter moves to the next input and sends from the last one; Escape
    gives up. The values are checked by the store's one check, not here."""

    DEFAULT_CSS = (
        CSS
        + """
DecisionScreen { align: center middle; }
DecisionScreen #dialog { width: 100%; max-width: 80; max-height: 100%; overflow-y: auto; }
DecisionScreen Input { margin-bottom: 0; }
DecisionScreen .hint { color: $text-muted; margin-bottom: 0; }
"""
    )
    BINDINGS = [Binding("escape", "give_up", "Cancel")]

    def __init__(
        self,
        question: str,
        fields: list[dict[str, Any]],
        options: list[str],
        max_length: int,
    ) -> None:
        super().__init__()
        self.question = question
        self.fields = fields
        self.options = options
        self.max_length = max_length

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            for f in self.fields:
                kind = f["type"] if f["type"] != "choice" else "/".join(map(str, f["choices"]))
                need = ", required" if f.get("required") else ""
                yield Label(f"{f.get('label') or f['name']} ({kind}{need})", classes="hint")
                yield Input(
                    value="" if f.get("default") is None else str(f["default"]),
                    placeholder=f.get("help") or kind,
                    password=bool(f.get("secret")),
                    id=f"field-{f['name']}",
                )
            if self.options:
                yield Label(f"option: {' / '.join(self.options)}", classes="hint")
                yield Input(placeholder=self.options[0], id="option")
            yield Input(
                placeholder="comment (optional), Enter to send, Escape to go back",
                max_length=self.max_length,
                id="comment",
            )

    def on_mount(self) -> None:
        self.query(Input).first().focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        at = inputs.index(event.input)
        if at + 1 < len(inputs):
            inputs[at + 1].focus()
            return
        form = {
            f["name"]: self.query_one(f"#field-{f['name']}", Input).value
            for f in self.fields
            if self.query_one(f"#field-{f['name']}", Input).value.strip()
        }
        option = self.query_one("#option", Input).value.strip() if self.options else ""
        self.dismiss(
            {
                "form": form,
                "option": option or None,
                "comment": self.query_one("#comment", Input).value,
            }
        )

    def action_give_up(self) -> None:
        self.dismiss(None)
