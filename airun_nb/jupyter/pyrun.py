"""Runs started from Python in a notebook cell (``Workflow(...).run()``, ``airun_nb.fork``).

They are shown as a ``%%workflow`` cell shows its run: the live step table, the gates it waits
at, and ``airun_nb.last_run()``; the workflow finds the notebook's functions without
``namespace=globals()``.
"""

from __future__ import annotations

from typing import Any

from IPython import get_ipython

from airun_nb.engine.runner import Runner
from airun_nb.jupyter.display import LiveTable
from airun_nb.jupyter.lastrun import notebook_path, remember
from airun_nb.workflow import add_front


class NotebookFront:
    """One run's live table in the cell that started it, and what follows the run."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.namespace: dict[str, Any] = shell.user_ns
        self.listener = LiveTable()
        self.source = notebook_path(shell.user_ns)

    def finished(self, engine: Runner) -> None:
        after_run(self.shell, engine, self.listener)


def after_run(shell: Any, engine: Runner, listener: LiveTable) -> None:
    """What a run leaves in its cell: it becomes the last run, and a run waiting at a gate
    draws its gates (its table, right above, turns into a widget the continuation redraws)."""
    from airun_nb.jupyter.widgets import draw_gates, run_table_widget

    remember(engine)
    if engine.open_gates:
        table = None
        if getattr(shell, "kernel", None) is not None:
            table = run_table_widget(listener, engine)
        draw_gates(
            engine.open_gates, engine.store.path, shell.user_ns, table=False, run_table=table
        )


def find(caller_globals: dict[str, Any]) -> NotebookFront | None:
    """The notebook front when the caller is a cell of the running shell (its user namespace)."""
    shell = get_ipython()
    if shell is None or caller_globals is not shell.user_ns:
        return None
    return NotebookFront(shell)


add_front(find)
