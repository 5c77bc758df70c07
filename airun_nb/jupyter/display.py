"""The live step table: one display that updates in place while a run executes."""

from __future__ import annotations

import threading
import time
from typing import Any

from IPython.display import display

from ..ledger import Listener
from ..runner import Runner
from ..runview import render_html, render_text, view_of_run
from ..state import StepState

UPDATE_EVERY = 0.25  # seconds between redraws while steps finish


class _Snapshot:
    def __init__(self, engine: Runner) -> None:
        self.view = view_of_run(engine)

    def __repr__(self) -> str:
        return render_text(self.view)

    def _repr_html_(self) -> str:
        return render_html(self.view)


class LiveTable(Listener):
    """Draws the run's step table and redraws it as steps change (main thread only)."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._last = 0.0
        self._dirty = False

    def planned(self, engine: Runner) -> None:
        plan = engine.plan
        if plan is not None and plan.mode != "new":
            print(plan.summary())
        self._handle = display(_Snapshot(engine), display_id=True)
        self._last = time.monotonic()

    def changed(self, engine: Runner, state: StepState | None) -> None:
        self._dirty = True
        if threading.current_thread() is not threading.main_thread():
            return
        if time.monotonic() - self._last >= UPDATE_EVERY:
            self._draw(engine)

    def finished(self, engine: Runner) -> None:
        self._draw(engine)

    def _draw(self, engine: Runner) -> None:
        if self._handle is None:
            self._handle = display(_Snapshot(engine), display_id=True)
        else:
            self._handle.update(_Snapshot(engine))
        self._last = time.monotonic()
        self._dirty = False


class WidgetTable(Listener):
    """The step table drawn into an ipywidgets HTML (front ends do not apply in-place display
    updates inside an Output widget, so a continuation inside a gate draws here instead)."""

    def __init__(self, html_widget: Any) -> None:
        self.html = html_widget
        self._last = 0.0

    def planned(self, engine: Runner) -> None:
        self._draw(engine)

    def changed(self, engine: Runner, state: StepState | None) -> None:
        if time.monotonic() - self._last >= UPDATE_EVERY:
            self._draw(engine)

    def finished(self, engine: Runner) -> None:
        self._draw(engine)

    def _draw(self, engine: Runner) -> None:
        self.html.value = render_html(view_of_run(engine))
        self._last = time.monotonic()
