"""The dashboard's dialogs: a yes/no confirmation and a comment prompt (keyboard only)."""

from __future__ import annotations

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
