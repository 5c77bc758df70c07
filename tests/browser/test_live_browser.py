"""The live notebook in a real JupyterLab and a real Notebook 7, seen through headless Chromium.

Every test runs once per front end (the ``jupyter`` fixture: ``[lab]`` and ``[notebook7]``).

* While a 4 s step runs, its row says ``running`` with its attempt and its elapsed time moves.
* A failing notebook function's error line names the cell.
* The timeline appears as an image without ``%matplotlib``.
* A decision from a terminal (``airun approve``) flips the gate's buttons and continues the
  run on the page, with nobody touching it.

Screenshots of the element that matters are checked as pictures: two pictures of the running row
differ, the gate's buttons look different before and after the decision, the timeline image is
the size it was drawn at and not blank, and the failed step's row is drawn in red. They are kept in
``$AIRUN_SCREENSHOTS`` when that is set (see conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image, ImageChops

import airun_nb
from support import AIRUN
from support.notebooks import python_notebook

LIVE = """\
%%workflow slow
steps:
  - id: nap
    retry: {attempts: 2}
    python: |
      import os, time
      t0 = time.monotonic()  # rests until the test has watched it run (a file says so)
      while not os.path.exists("rested.flag") and time.monotonic() - t0 < 240:
          time.sleep(0.05)
      result = "rested"
"""

FAILING = """\
def load():
    rows = {"amount": 3}
    return rows["amout"]
"""

FAILING_CELL = """\
%%workflow typo
on_failure: stop
steps:
  - id: load
    call: load
"""

GATE = """\
%%workflow release
steps:
  - id: review
    approval:
      message: "Ship it?"
      approvers: [bob]
  - id: ship
    needs: [review]
    python: |
      open("shipped.txt", "w").write("yes")
      result = "shipped"
"""


def _released_by(flag: Path) -> str:
    """The slow cell, its step resting until ``flag`` exists."""
    return LIVE.replace('"rested.flag"', repr(str(flag)))


def _notebook(path: Path, cells: list[str]) -> None:
    nb = python_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))


def _env(db: Path, user: str) -> dict[str, str]:
    return {"AIRUN_DB": str(db), "AIRUN_USER": user, "AIRUN_IDENTITY": "env", "AIRUN_CONFIG": ""}


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def _page_shot(page, path: Path, expected: str) -> None:
    """The whole window, for the record (kept with AIRUN_SCREENSHOTS)."""
    assert expected in page.output_text()
    page.screenshot(path)
    assert path.stat().st_size > 10_000


def _picture(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def _inked(img: Image.Image) -> float:
    """The share of the picture that is not its background (the colour of its corner)."""
    bg = Image.new("RGB", img.size, img.getpixel((0, 0)))
    diff = ImageChops.difference(img, bg).convert("L").point(lambda v: 255 if v > 40 else 0)
    return sum(diff.histogram()[255:]) / (img.size[0] * img.size[1])


def _changed_box(a: Image.Image, b: Image.Image) -> tuple[int, int, int, int] | None:
    w, h = min(a.size[0], b.size[0]), min(a.size[1], b.size[1])
    return ImageChops.difference(a.crop((0, 0, w, h)), b.crop((0, 0, w, h))).getbbox()


_TABLE_STYLE = """() => {
  const t = document.querySelector(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output table.airun-table');
  if (!t) return null;
  const style = e => getComputedStyle(e);
  const text = [...t.querySelectorAll('th'), ...t.querySelectorAll('td:not(.num)')];
  return {
    align: [...new Set(text.map(c => style(c).textAlign))],
    pad: Math.min(...[...t.querySelectorAll('th, td')].map(c => parseFloat(style(c).paddingRight))),
    margin: style(t).marginLeft,
    line: parseFloat(style(t.querySelector('td')).lineHeight),
    widget: !!t.closest('.widget-html'),
  };
}"""


def _table_style(page) -> dict:
    """How the run's table is drawn: the alignment of its headers and text cells, the least
    right padding of a cell, its left margin and line height, and whether a widget holds it."""
    found: list[dict] = []
    wait_for(lambda: bool(found.append(page.page.evaluate(_TABLE_STYLE)) or found[-1]), "a table")
    return found[-1]


def _styled_alike(style: dict) -> None:
    # left-aligned headers and text (the front end right-aligns output tables), columns apart,
    # not centred, and not the widget's 28 px lines
    assert style["align"] == ["left"], style
    assert style["pad"] >= 12 and style["margin"] == "0px" and style["line"] < 24, style


def _elapsed(page) -> str | None:
    m = re.search(r"nap\s*python\s*running\s*1\s*([0-9.]+)s\s*attempt 1 of 2", page.output_text())
    return m.group(1) if m else None


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_the_running_row_ticks_and_the_error_line_names_the_cell(jupyter) -> None:
    db = jupyter.root / "airun.duckdb"
    _notebook(
        jupyter.root / "live.ipynb",
        ["%load_ext airun_nb", _released_by(jupyter.root / "rested.flag"), FAILING, FAILING_CELL],
    )
    page = jupyter.start(env=_env(db, "alice"))
    page.open_notebook("live.ipynb")
    page.run_all(wait=False)

    # (a) the running row ticks: its elapsed time changes, and so does its picture
    row = page.page.locator(".jp-OutputArea-output tr").filter(has_text="attempt 1 of 2").first
    wait_for(lambda: _elapsed(page) is not None, "the step's row to say running", 60)
    first = page.element_screenshot(row, jupyter.shot("running-row-1"))
    seen = {_elapsed(page)}

    def ticking() -> bool:
        seen.add(_elapsed(page))
        return len(seen - {None}) >= 3

    wait_for(ticking, "the running row to show three different elapsed times", timeout=30)
    cell_table = _table_style(page)
    assert not cell_table["widget"]
    _styled_alike(cell_table)
    duration = row.locator("td").nth(4).bounding_box()
    origin = row.bounding_box()
    second = page.element_screenshot(row, jupyter.shot("running-row-2"))
    _page_shot(page, jupyter.shot("running"), "attempt 1 of 2")
    (jupyter.root / "rested.flag").write_text("seen")  # the step may end now
    a, b = _picture(first), _picture(second)
    assert a.size[0] > 300 and a.size[1] >= 12, a.size
    assert _inked(a) > 0.02, "the running row's picture is blank"
    changed = _changed_box(a, b)
    assert changed is not None, "the running row looks the same seconds apart"
    # what changed on screen is the duration cell (the elapsed time), nothing else in the row
    assert duration is not None and origin is not None
    left = duration["x"] - origin["x"]
    assert left - 2 <= changed[0] and changed[2] <= left + duration["width"] + 2, (
        changed,
        duration,
        origin,
    )

    # (d) the error line names the notebook cell, once, in the failed step's row drawn in red
    def failed_said() -> bool:  # the failed row, then the cell's one error line under it
        seen = page.output_text()
        return "(at Cell In[3], line 3)" in seen and "WorkflowFailed: run r-" in seen

    wait_for(failed_said, "the error line", 90)
    text = page.output_text()
    assert "KeyError: 'amout' (at Cell In[3], line 3)" in text
    assert text.count("KeyError: 'amout'") == 1, text
    assert "WorkflowFailed: run r-" in text and "failed at step 'load'" in text
    assert "interactiveshell.py" not in text and "ipykernel" not in text
    failed = page.page.locator(".jp-OutputArea-output tr").filter(has_text="Cell In[3], line 3")
    shot = _picture(page.element_screenshot(failed.first, jupyter.shot("error-row")))
    px = np.asarray(shot).astype(int)
    red = int(((px[..., 0] > 150) & (px[..., 1] < 90) & (px[..., 2] < 90)).sum())
    assert red > 50, f"the failed step's status is not drawn in red ({red} red pixels)"
    _page_shot(page, jupyter.shot("error"), "Cell In[3], line 3")


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_the_timeline_image_appears_in_a_fresh_kernel(jupyter) -> None:
    db = jupyter.root / "airun.duckdb"
    (jupyter.root / "rested.flag").write_text("no need to wait")
    text = _released_by(jupyter.root / "rested.flag").split("\n", 1)[1]
    run = airun_nb.Workflow.from_yaml(text, name="slow")
    res = run.run(db=db)
    _notebook(jupyter.root / "tl.ipynb", ["%load_ext airun_nb", f"%workflow timeline {res.run_id}"])
    page = jupyter.start(env=_env(db, "alice"))
    page.open_notebook("tl.ipynb")
    page.run_all(timeout=120)
    img = page.page.locator(".jp-OutputArea-output img").first
    img.wait_for(state="visible", timeout=30_000)
    assert img.evaluate("e => e.naturalWidth") > 300
    assert "Figure size" not in page.output_text()
    shown = img.evaluate("e => [e.clientWidth, e.clientHeight]")
    shot = _picture(page.element_screenshot(img, jupyter.shot("timeline-image")))
    # the picture on screen is the image at its drawn size, with bars and labels on it
    assert abs(shot.size[0] - shown[0]) <= 1 and abs(shot.size[1] - shown[1]) <= 1, (shot, shown)
    assert shot.size[0] > 300 and shot.size[1] > 100
    assert _inked(shot) > 0.03, "the timeline image is blank"
    colours = np.unique(np.asarray(shot).reshape(-1, 3), axis=0)
    assert len(colours) > 20, "the timeline image has almost no colours"
    page.screenshot(jupyter.shot("timeline"))


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_a_terminal_approval_flips_the_buttons_and_continues_the_run_on_the_page(jupyter) -> None:
    db = jupyter.root / "airun.duckdb"
    _notebook(jupyter.root / "gate.ipynb", ["%load_ext airun_nb", GATE])
    page = jupyter.start(env=_env(db, "alice"))
    page.open_notebook("gate.ipynb")
    page.run_all(timeout=120)
    page.button_locator("Approve").first.wait_for(state="visible", timeout=30_000)
    run_id = str(airun_nb.runs(db=db)["run_id"].iloc[0])
    buttons = page.page.locator(".jp-OutputArea-output .widget-hbox").filter(
        has=page.page.locator("button", has_text="Reject")
    )
    before = _picture(page.element_screenshot(buttons.first, jupyter.shot("gate-buttons-before")))
    # the cell's table of the waiting run is a widget now (the continued run redraws it),
    # drawn just like the cell's table of a running step
    widget_table = _table_style(page)
    assert widget_table["widget"], widget_table
    _styled_alike(widget_table)
    _page_shot(page, jupyter.shot("gate-before"), "Approval needed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(_env(db, "bob"))
    done = subprocess.run(
        [*AIRUN, "approve", run_id, "review"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    wait_for((jupyter.root / "shipped.txt").exists, "the run to continue in the kernel", 30)
    wait_for(lambda: "Approved by bob via cli" in page.output_text(), "the gate to show it", 30)
    wait_for(
        lambda: f"run {run_id} · release · completed" in page.output_text(),
        "the continued run's table on the page",
        30,
    )
    assert page.button_locator("Approved").first.is_disabled()
    assert page.button_locator("Reject").first.is_disabled()
    # one table of the run, showing it as it is now, and the status line says how it ended
    text = page.output_text()
    assert text.count(f"run {run_id} · release · ") == 1, text
    wait_for(
        lambda: "Approved by bob via cli; the run completed." in page.output_text(),
        "the status line to say the run completed",
        30,
    )
    after = _picture(page.element_screenshot(buttons.first, jupyter.shot("gate-buttons-after")))
    assert _inked(before) > 0.05 and _inked(after) > 0.05, "a picture of the buttons is blank"
    assert _changed_box(before, after) is not None, "the buttons look the same after the decision"
    # an enabled green "Approve" button turned into a dimmed, disabled "Approved" one
    assert _green(after) < _green(before) * 0.8, (_green(before), _green(after))
    _page_shot(page, jupyter.shot("gate-after"), "Approved by bob via cli")


def _green(img: Image.Image) -> int:
    """How many pixels are the saturated green of an enabled "success" button."""
    r, g, b = np.asarray(img).astype(int).transpose(2, 0, 1)
    return int(((g > 140) & (g - r > 60) & (g - b > 60)).sum())
