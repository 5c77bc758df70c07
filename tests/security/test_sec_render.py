"""Everything a browser or terminal renders is escaped: a workflow's name in the timeline's HTML
attribute and in the run table, Rich markup in the dashboard (``[/x]`` in a gate message shown
as written, not a crash)."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

from sec_support import World

import airun_nb
from airun_nb import Workflow
from airun_nb.dashboard.app import Dashboard
from airun_nb.history import timeline as timeline_mod
from airun_nb.store.database import Store

EVIL_NAME = 'x" onload="alert(1)" y="<script>alert(2)</script>'


def _attributes(markup: str) -> list[tuple[str, str]]:
    """Every (tag, attribute name) of an HTML text, as a browser would read it."""
    from html.parser import HTMLParser

    found: list[tuple[str, str]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend((tag, name) for name, _ in attrs)

    Collect().feed(markup)
    return found


def test_the_timeline_puts_a_name_into_its_attribute_escaped(world: World) -> None:
    """A title holding quotes and tags stays inside the ``alt`` attribute: no ``onload``
    attribute, no script tag; matplotlib prints ``$`` literally."""
    r = Workflow.from_yaml("name: drawn\nsteps:\n  - id: a\n    python: result = 1\n").run()
    frame = airun_nb.attempts(r.run_id)
    drawn = timeline_mod.draw(frame, title=EVIL_NAME + " costs $5 and $6")
    markup = drawn._repr_html_()
    assert ("img", "onload") not in _attributes(markup)
    assert "<script>" not in markup
    assert html.escape(EVIL_NAME) in markup
    drawn._repr_png_()  # the "$...$" is not read as mathtext


def test_the_run_table_escapes_what_the_workflow_names(world: World) -> None:
    """Step ids, the workflow name and the error line are text in the run table's HTML."""
    r = Workflow.from_yaml(
        "name: t\nsteps:\n  - id: a\n    python: raise ValueError('<img src=x onerror=alert(1)>')\n"
    ).run(raise_on_failure=False)
    markup = r._repr_html_()
    assert "<img src=x" not in markup
    assert not any(name == "onerror" for _, name in _attributes(markup))


def test_a_gate_message_with_rich_markup_is_shown_as_written(world: World) -> None:
    """``[/x]``, ``[bold]`` and ``[link=...]`` in a gate message and a step error neither stop
    the dashboard nor style it: the cells hold the text as written."""
    message = "ship [/x] it [bold red]now[/] [link=https://evil.example]here[/link]"
    r = Workflow.from_yaml(
        "name: markup\nsteps:\n  - id: review\n"
        f"    approval: {{message: {message!r}, approvers: [bob]}}\n"
    ).run(raise_on_failure=False)
    assert r.status == "waiting"

    async def drive() -> list[str]:
        app = Dashboard(Store.open(Path(world.store)))
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.pause()
            table = app.query_one("#gates")
            cells = [str(c) for c in table.get_row_at(0)]
            app.show_run(r.run_id)
            app.say("[/x] a message with markup")
            await pilot.pause()
            said = str(app.query_one("#message").render())
            return [*cells, said]

    shown = asyncio.run(drive())
    assert any(cell.startswith("ship [/x] it [bold red]now[/]") for cell in shown), shown
    assert "[/x] a message with markup" in shown[-1]
    assert airun_nb.approvals(r.run_id)["status"].tolist() == ["open"]
    assert re.search(r"\[link=", " ".join(shown))
