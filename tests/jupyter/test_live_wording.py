"""A cell says each thing once: no sentence of its visible output is repeated.

Real kernels (jupyter_client over IPC), real clicks (the comm message a front end sends when a
button is clicked), the real `airun` CLI in a subprocess. What a cell shows is rebuilt from
everything the kernel published: its outputs, with in-place updates applied, and the widgets in
them drawn from their final state (HTML text, button labels, an Output widget's outputs),
the way JupyterLab or Notebook 7 draws them. A collapsed traceback (``<details>``) is not
visible and is left out.

The gate flows: an approval by click, a rejection by click that rolls back two compensated
steps, a step that fails after its retries and rolls back, and a rejection from a terminal
that the kernel's watcher continues.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from support import AIRUN
from support.live import LiveKernel

FUNCTIONS = textwrap.dedent(
    """\
    undone = []

    def undo(name):
        undone.append(name)

    def flaky():
        raise ConnectionError("the warehouse did not answer")
    """
)


def _gate(name: str) -> str:
    return textwrap.dedent(
        f"""\
        %%workflow {name}
        steps:
          - id: prepare
            python: result = 1
            compensate: {{call: undo, with: {{name: prepare}}}}
          - id: stage
            needs: [prepare]
            python: result = 2
            compensate: {{call: undo, with: {{name: stage}}}}
          - id: review
            needs: [stage]
            approval:
              message: "Ship it?"
          - id: ship
            needs: [review]
            python: result = "shipped"
        """
    )


FLAKY = textwrap.dedent(
    """\
    %%workflow flaky
    steps:
      - id: prepare
        python: result = 1
        compensate: {call: undo, with: {name: prepare}}
      - id: send
        needs: [prepare]
        retry: {attempts: 3, backoff: fixed, initial: 0.1s}
        call: flaky
    """
)


# --------------------------------------------------------------------------- what a cell shows


class _Text(HTMLParser):
    """The text a browser draws for some HTML: blocks on their own lines, table cells apart,
    no styles or scripts, and of a collapsed ``<details>`` only its summary."""

    BLOCK = {"div", "br", "p", "li", "pre", "tr", "table", "summary", "details", "h1", "h2"}

    def __init__(self) -> None:
        super().__init__()
        self.out: list[str] = []
        self.hidden = 0  # inside <style>, <script>, or a <details> outside its <summary>
        self.details: list[bool] = []  # per open <details>: are we in its summary?

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self.hidden += 1
        elif tag == "details":
            self.details.append(False)
            self.hidden += 1
        elif tag == "summary" and self.details:
            self.details[-1] = True
            self.hidden -= 1
        if tag in self.BLOCK:
            self.out.append("\n")
        if tag in ("td", "th"):
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self.hidden -= 1
        elif tag == "summary" and self.details and self.details[-1]:
            self.details[-1] = False
            self.hidden += 1
        elif tag == "details" and self.details:
            self.details.pop()
            self.hidden -= 1
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)


def _html_text(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    parser.close()
    return "".join(parser.out)


def _widget_states(kernel: LiveKernel) -> dict[str, dict[str, Any]]:
    """Every widget's final state, by comm id."""
    states: dict[str, dict[str, Any]] = {}
    for _, m in kernel.snapshot():
        content = m["content"]
        if m["msg_type"] == "comm_open":
            states[content["comm_id"]] = dict(content.get("data", {}).get("state", {}))
        elif m["msg_type"] == "comm_msg" and content.get("data", {}).get("method") == "update":
            states.setdefault(content["comm_id"], {}).update(content["data"].get("state", {}))
    return states


def _children(model: str, states: dict[str, dict[str, Any]]) -> Iterator[str]:
    yield model
    for child in states.get(model, {}).get("children", []):
        yield from _children(str(child).removeprefix("IPY_MODEL_"), states)
    for out in states.get(model, {}).get("outputs", []):
        view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
        if view:
            yield from _children(view["model_id"], states)


def _draw_widget(model: str, states: dict[str, dict[str, Any]]) -> str:
    state = states.get(model, {})
    kind = state.get("_model_name")
    if kind in ("VBoxModel", "HBoxModel", "BoxModel"):
        return "\n".join(
            _draw_widget(str(c).removeprefix("IPY_MODEL_"), states)
            for c in state.get("children", [])
        )
    if kind in ("HTMLModel", "LabelModel"):
        return _html_text(str(state.get("value", "")))
    if kind == "ButtonModel":
        return f"[{state.get('description')}]"
    if kind == "OutputModel":
        return "\n".join(_draw_output(o, states) for o in state.get("outputs", []))
    return ""  # a text area, say: what the user types, not what the cell says


def _draw_output(out: dict[str, Any], states: dict[str, dict[str, Any]]) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        return str(out.get("text", ""))
    if kind == "error":
        return "\n".join(out.get("traceback") or [f"{out.get('ename')}: {out.get('evalue')}"])
    data = out.get("data", {})
    view = data.get("application/vnd.jupyter.widget-view+json")
    if view:
        return _draw_widget(view["model_id"], states)
    if "text/html" in data:
        return _html_text(str(data["text/html"]))
    return str(data.get("text/plain", ""))


def _cell_outputs(kernel: LiveKernel, msg_id: str) -> list[dict[str, Any]]:
    """The cell's outputs as the front end keeps them: an update replaces its display."""
    shown: list[dict[str, Any]] = []
    where: dict[str, int] = {}
    for _, kind, content in kernel.outputs(msg_id):
        display_id = content.get("transient", {}).get("display_id")
        out = {"output_type": kind, **content}
        if kind == "update_display_data":
            if display_id in where:
                shown[where[display_id]] = out
            continue
        if display_id:
            where[display_id] = len(shown)
        shown.append(out)
    return shown


def visible(kernel: LiveKernel, msg_id: str) -> str:
    """What the cell shows now."""
    states = _widget_states(kernel)
    return "\n".join(_draw_output(o, states) for o in _cell_outputs(kernel, msg_id))


def sentences(text: str) -> list[str]:
    """Each line, each table cell, cut into sentences and clauses; the ones of 4 words or more
    (a status, a count, a column name are not sentences)."""
    out = []
    for line in text.splitlines():
        for part in re.split(r"(?<=[.!?;:])\s+", " ".join(line.split())):
            part = part.strip(" .;:")
            if len(part.split()) >= 4:
                out.append(part)
    return out


def repeated(text: str) -> dict[str, int]:
    return {s: n for s, n in Counter(sentences(text)).items() if n > 1}


# --------------------------------------------------------------------------- driving the kernel


def _env(db: Path, user: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(AIRUN_DB=str(db), AIRUN_USER=user, AIRUN_IDENTITY="env")
    return env


@pytest.fixture(scope="module")
def cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wording")


@pytest.fixture(scope="module")
def kernel(cwd: Path) -> Iterator[LiveKernel]:
    k = LiveKernel(cwd, _env(cwd / "airun.duckdb", "alice"))
    k.execute("%load_ext airun_nb")
    k.execute(FUNCTIONS)
    yield k
    k.shutdown()


def _click(kernel: LiveKernel, msg_id: str, label: str) -> None:
    """What the front end sends when the button ``label`` of this cell's gate is clicked."""
    states = _widget_states(kernel)
    roots = [
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for o in _cell_outputs(kernel, msg_id)
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    for root in roots:
        for model in _children(root, states):
            state = states.get(model, {})
            if state.get("_model_name") == "ButtonModel" and state.get("description") == label:
                data = {"method": "custom", "content": {"event": "click"}}
                msg = kernel.kc.session.msg("comm_msg", {"comm_id": model, "data": data})
                kernel.kc.shell_channel.send(msg)
                return
    raise AssertionError(f"no button {label!r} in the cell:\n{visible(kernel, msg_id)}")


def _run_id(text: str) -> str:
    found = re.search(r"run (r-[0-9a-f]+)", text)
    assert found, text
    return found.group(1)


def _settle(kernel: LiveKernel, msg_id: str, *markers: str) -> str:
    kernel.wait_for(
        lambda: all(m in visible(kernel, msg_id) for m in markers),
        60,
        f"the cell to show {markers}",
    )
    return visible(kernel, msg_id)


def test_a_waiting_gate_shows_its_run_once(kernel: LiveKernel) -> None:
    msg_id = kernel.execute(_gate("release_wait"))
    text = visible(kernel, msg_id)
    assert "Approval needed" in text and "Ship it?" in text
    assert text.count("release_wait · waiting") == 1, text  # one table of the run, not two
    assert repeated(text) == {}, text


def _last_status(kernel: LiveKernel) -> str:
    out = kernel.text(kernel.execute("import airun_nb; print('LAST', airun_nb.last_run().status)"))
    return out.split("LAST ")[1].split()[0]


def test_an_approved_gate_says_each_thing_once(kernel: LiveKernel) -> None:
    msg_id = kernel.execute(_gate("release_ok"))
    _click(kernel, msg_id, "Approve")
    text = _settle(kernel, msg_id, "release_ok · completed")
    # one table of the run, and it shows the run as it is now: not "waiting" above the result
    assert text.count("release_ok · ") == 1 and "release_ok · waiting" not in text, text
    text = _settle(kernel, msg_id, "via widget; the run completed", "release_ok · completed")
    assert repeated(text) == {}, text
    # the status line says what became of the run, not that it is still continuing
    assert "Approved by alice via widget; the run completed." in text, text
    assert "continuing" not in text, text
    assert _last_status(kernel) == "completed"


def test_an_approval_whose_next_step_fails_says_where_it_failed(kernel: LiveKernel) -> None:
    cell = _gate("release_bad").replace('python: result = "shipped"', "call: flaky")
    msg_id = kernel.execute(cell)
    _click(kernel, msg_id, "Approve")
    text = _settle(
        kernel, msg_id, "Approved by alice via widget; the run ", "release_bad · rolled_back"
    )
    assert (
        "Approved by alice via widget; the run failed at step 'ship' and was rolled back." in text
    ), text
    assert "continuing" not in text and "release_bad · waiting" not in text, text
    assert text.count("release_bad · ") == 1, text
    assert repeated(text) == {}, text
    assert _last_status(kernel) == "rolled_back"


def test_a_rejected_gate_that_rolls_back_says_each_thing_once(kernel: LiveKernel) -> None:
    msg_id = kernel.execute(_gate("release_no"))
    _click(kernel, msg_id, "Reject")
    text = _settle(kernel, msg_id, "via widget; the run ", "release_no · rolled_back")
    assert "compensated" in text
    # a rejection is a decision: no WorkflowFailed line, the gate's row says "rejected"
    assert "WorkflowFailed" not in text and " failed " not in text, text
    assert re.search(r"review\s+approval\s+rejected\s.*?Rejected by alice", text, re.S), text
    assert repeated(text) == {}, text
    assert "Rejected by alice via widget; the run was rolled back." in text, text
    assert "rolling the run back" not in text and "release_no · waiting" not in text, text
    assert text.count("release_no · ") == 1, text


def test_a_step_that_fails_after_its_retries_says_its_error_once(kernel: LiveKernel) -> None:
    msg_id = kernel.start(FLAKY)
    kernel.wait_for(lambda: kernel.idle_after(msg_id), 60, "the failing cell to end")
    text = visible(kernel, msg_id)
    assert "flaky · rolled_back" in text and "WorkflowFailed" in text
    assert text.count("ConnectionError: the warehouse did not answer (at Cell In[") == 1, text
    # the cell's error line names the step and what became of the run
    assert re.search(r"WorkflowFailed: run r-\w+ failed at step 'send'; rolled back", text)
    assert repeated(text) == {}, text
    # headless tools still get the whole reason (they do not see the table)
    evalue = next(c["evalue"] for _, k, c in kernel.outputs(msg_id) if k == "error")
    assert "failed at step 'send': ConnectionError: the warehouse did not answer" in evalue


def test_a_rejection_from_a_terminal_says_each_thing_once(kernel: LiveKernel, cwd: Path) -> None:
    msg_id = kernel.execute(_gate("release_cli"))
    run_id = _run_id(visible(kernel, msg_id))
    done = subprocess.run(
        [*AIRUN, "reject", run_id, "review", "--comment", "not today"],
        env=_env(cwd / "airun.duckdb", "bob"),
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    text = _settle(kernel, msg_id, "via cli: not today; the run ", "release_cli · rolled_back")
    assert "WorkflowFailed" not in text, text
    assert text.count("Rejected by bob: not today") == 1, text  # the gate's row
    assert repeated(text) == {}, text
    assert "Rejected by bob via cli: not today; the run was rolled back." in text, text
    assert text.count("release_cli · ") == 1 and "release_cli · waiting" not in text, text
    assert _last_status(kernel) == "rolled_back"


def test_an_approval_from_a_terminal_updates_the_cells_table(kernel: LiveKernel, cwd: Path) -> None:
    msg_id = kernel.execute(_gate("release_term"))
    run_id = _run_id(visible(kernel, msg_id))
    done = subprocess.run(
        [*AIRUN, "approve", run_id, "review"],
        env=_env(cwd / "airun.duckdb", "bob"),
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    text = _settle(kernel, msg_id, "release_term · completed")
    assert text.count("release_term · ") == 1 and "release_term · waiting" not in text, text
    text = _settle(kernel, msg_id, "via cli; the run ", "release_term · completed")
    assert "Approved by bob via cli; the run completed." in text, text
    assert "continuing" not in text, text
    assert text.count("release_term · ") == 1 and "release_term · waiting" not in text, text
    assert repeated(text) == {}, text
    assert _last_status(kernel) == "completed"


def test_the_run_error_line_stays_when_no_step_row_says_it() -> None:
    from airun_nb.history.steptable import RunView, render_html, render_text

    row = {"step": "a", "kind": "python", "status": "failed", "attempts": 1, "duration": 0.1}
    said = RunView("r-1", "wf", "failed", "KeyError: 'x' (at Cell In[2], line 3)", [])
    said.rows = [{**row, "note": said.error}]
    assert render_text(said).count("KeyError: 'x'") == 1
    assert render_html(said).count("KeyError: &#x27;x&#x27;") == 1
    # a run-level error that no row shows is still written under the table
    alone = RunView("r-2", "wf", "failed", "the kernel died while the run executed", [])
    alone.rows = [{**row, "status": "interrupted", "note": ""}]
    assert "  error: the kernel died while the run executed" in render_text(alone)
    assert "error: the kernel died while the run executed</div>" in render_html(alone)
