"""The live step table: one display that updates in place while a run executes."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

from IPython.display import display

from airun_nb.engine.ledger import Listener
from airun_nb.engine.runner import Runner
from airun_nb.engine.state import StepState
from airun_nb.errors import AirunError, WorkflowFailed
from airun_nb.history.steptable import (
    HTML_LIMIT,
    TEXT_LIMIT,
    render_html,
    render_text,
    view_of_run,
)

MIN_INTERVAL = 0.1  # at most 10 redraws a second, however fast steps change
TICK = 0.5  # while a step runs (or waits), its elapsed time is redrawn this often
COST_FACTOR = 25  # redraws are spaced by at least this many times what one costs
_LIVE = ("running", "waiting")


def said_once(exc: AirunError, engine: Runner) -> str:
    """The line a cell shows for ``exc`` under the run's table (also set as ``exc.shown``).

    A failed run's reason is already in its step's row, so the line names the step and what
    became of the run, without saying the reason a second time. The message itself stays
    whole: headless tools (``airun run NOTEBOOK``) report it without the table."""
    step, error = engine.failed_step, engine.error
    said = f" failed at step '{step}': {error}"
    if (
        isinstance(exc, WorkflowFailed)
        and step
        and error
        and said in exc.message
        and any(r["note"] == error for r in view_of_run(engine).rows)
    ):
        exc.shown = exc.message.replace(said, f" failed at step '{step}'", 1)
    return f"{type(exc).__name__}: {exc.shown or exc.message}"


class _Snapshot:
    def __init__(self, engine: Runner) -> None:
        # Only the rows the two forms draw: a redraw of a long run costs its drawn rows.
        self.view = view_of_run(engine, head=HTML_LIMIT, tail=TEXT_LIMIT // 2)

    def __repr__(self) -> str:
        return render_text(self.view)

    def _repr_html_(self) -> str:
        return render_html(self.view)


def _live(engine: Runner) -> bool:
    return engine.status in ("running", "rolling_back") and any(
        st.status in _LIVE or st.comp_status == "running" for st in engine.states.values()
    )


class Ticker:
    """A daemon thread that redraws a table: soon after a change (at most every
    ``MIN_INTERVAL`` s) and every ``TICK`` s while a step runs, so its elapsed time moves.

    The thread draws in the context of the cell that started it (``contextvars``), so the
    kernel routes the updates to that cell's output even while the main thread is busy.
    """

    def __init__(self, draw: Callable[[], None], live: Callable[[], bool]) -> None:
        self._draw = draw
        self._live = live
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last = 0.0
        self._gap = MIN_INTERVAL
        self.draws = 0
        self.spent = 0.0  # seconds spent drawing
        self._ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=self._loop, name="airun-live-table", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        self._dirty.set()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)

    def draw_now(self) -> None:
        with self._lock:
            t0 = time.monotonic()
            self._draw()
            self._last = time.monotonic()
            # A big table costs more to draw: space redraws so drawing stays a few percent of
            # the run, never less often than once a second.
            self._gap = min(max(MIN_INTERVAL, COST_FACTOR * (self._last - t0)), 1.0)
            self.draws += 1
            self.spent += self._last - t0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(TICK)
            if self._stop.is_set():
                return
            wait = self._gap - (time.monotonic() - self._last)
            if wait > 0:
                time.sleep(wait)
            changed = self._dirty.is_set()
            self._dirty.clear()
            if changed or self._live():
                with contextlib.suppress(Exception):  # a redraw must never break the run
                    self._ctx.run(self.draw_now)


class LiveTable(Listener):
    """Draws the run's step table and redraws it on every transition (throttled) and while a
    step runs, from any thread."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._engine: Runner | None = None
        self._ticker: Ticker | None = None

    @property
    def draws(self) -> int:
        return self._ticker.draws if self._ticker is not None else 0

    @property
    def spent(self) -> float:
        """Seconds spent drawing so far."""
        return self._ticker.spent if self._ticker is not None else 0.0

    def planned(self, engine: Runner) -> None:
        plan = engine.plan
        if plan is not None and plan.mode != "new":
            print(plan.summary())
        self._engine = engine
        self._handle = display(_Snapshot(engine), display_id=True)
        self._ticker = Ticker(self._redraw, lambda: _live(engine))
        self._ticker.start()

    def changed(self, engine: Runner, state: StepState | None) -> None:
        if self._ticker is not None:
            self._ticker.poke()

    def finished(self, engine: Runner) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self._engine = engine
        if self._ticker is not None:
            self._ticker.draw_now()
        else:
            self._redraw()

    def hand_over(self, bundle: dict[str, Any]) -> bool:
        """Replace the drawn table, in place, with ``bundle`` (a widget that carries the run's
        table on after the cell ends: a front end applies in-place updates of a display only
        while its cell runs). False when nothing was drawn."""
        if self._handle is None:
            return False
        self._handle.update(bundle, raw=True)
        return True

    def _redraw(self) -> None:
        engine = self._engine
        if engine is None:
            return
        if self._handle is None:
            self._handle = display(_Snapshot(engine), display_id=True)
        else:
            self._handle.update(_Snapshot(engine))


class WidgetTable(Listener):
    """The step table drawn into an ipywidgets HTML (front ends do not apply in-place display
    updates inside an Output widget, so a continuation inside a gate draws here instead);
    widget updates are fine from any thread."""

    def __init__(self, html_widget: Any) -> None:
        self.html = html_widget
        self._engine: Runner | None = None
        self._ticker: Ticker | None = None

    def planned(self, engine: Runner) -> None:
        self._engine = engine
        self._ticker = Ticker(self._redraw, lambda: _live(engine))
        self._ticker.draw_now()
        self._ticker.start()

    def changed(self, engine: Runner, state: StepState | None) -> None:
        if self._ticker is not None:
            self._ticker.poke()

    def finished(self, engine: Runner) -> None:
        self._engine = engine
        if self._ticker is not None:
            self._ticker.stop()
        self._redraw()

    def _redraw(self) -> None:
        if self._engine is not None:
            self.html.value = render_html(view_of_run(self._engine, head=HTML_LIMIT))
