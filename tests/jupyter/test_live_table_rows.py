"""The live table of a long run builds only the rows it draws, and draws what the whole run's
table draws: the same text and HTML, the same counts, the same "more steps" line."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from airun_nb import Workflow, WorkflowFailed
from airun_nb.history.steptable import HTML_LIMIT, TEXT_LIMIT, render_html, render_text, view_of_run
from airun_nb.jupyter.display import LiveTable, _Snapshot

STEPS = 700


def _doc() -> dict[str, object]:
    steps: list[dict[str, object]] = [{"id": "s0", "call": "f"}]
    steps += [{"id": f"s{i}", "call": "f", "needs": [f"s{i - 1}"]} for i in range(1, STEPS)]
    return {"name": "long", "on_failure": "stop", "steps": steps}


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    return InteractiveShell.instance()


def test_a_long_runs_redraw_builds_its_drawn_rows_and_draws_the_full_table(
    db: Path, shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 700-step run that failed at step 450 and was resumed (450 steps replayed, 250 ran):
    the live table's snapshot holds no more rows than its two forms draw, and its text and
    HTML are exactly those of the table built from every step (counts, first and last rows,
    the line saying how many steps are left out)."""
    calls = {"n": 0}

    def f() -> int:
        calls["n"] += 1
        if calls["n"] == 451 and not calls.get("fixed"):
            raise RuntimeError("not yet")
        return 1

    first = Workflow.from_dict(_doc()).runner(db=db, namespace={"f": f})
    first.prepare(new=True)
    with pytest.raises(WorkflowFailed):
        first.execute()
    assert first.status == "failed"
    calls["fixed"] = 1
    live = LiveTable()
    runner = Workflow.from_dict(_doc()).runner(db=db, namespace={"f": f}, listener=live)
    runner.prepare(resume=first.run_id)
    runner.execute()
    assert runner.status == "completed"
    capsys.readouterr()

    snapshot = _Snapshot(runner)
    assert len(snapshot.view.rows) == HTML_LIMIT + TEXT_LIMIT // 2
    full = view_of_run(runner)
    assert len(full.rows) == STEPS
    assert repr(snapshot) == render_text(full)
    assert snapshot._repr_html_() == render_html(full)
    head = repr(snapshot).splitlines()[0]
    assert f"{STEPS} steps ({STEPS - 450} ran, 450 replayed)" in head
    assert f"... {STEPS - TEXT_LIMIT} more steps ..." in repr(snapshot)
    assert f"... {STEPS - HTML_LIMIT} more steps" in snapshot._repr_html_()
    assert f"s{STEPS - 1} " in repr(snapshot)  # the last row is drawn
    assert live.draws >= 1  # the live table drew the finished run


def test_a_short_runs_view_is_the_whole_table(db: Path) -> None:
    """A run no longer than what the table draws keeps every row in its view."""
    doc = {"name": "short", "steps": [{"id": f"s{i}", "call": "f"} for i in range(5)]}
    runner = Workflow.from_dict(doc).runner(db=db, namespace={"f": lambda: 1})
    runner.prepare(new=True)
    runner.execute()
    view = view_of_run(runner, head=HTML_LIMIT, tail=TEXT_LIMIT // 2)
    assert [r["step"] for r in view.rows] == [f"s{i}" for i in range(5)]
    assert view.counts() == (5, 5, 0)
    assert render_text(view) == render_text(view_of_run(runner))
