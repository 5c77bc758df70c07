"""The live notebook in a real JupyterLab, seen through headless Chromium.

* While a 4 s step runs, its row says ``running`` with its attempt and its elapsed time moves.
* A failing notebook function's error line names the cell.
* The timeline appears as an image without ``%matplotlib``.
* A decision from a terminal (``airun approve``) flips the gate's buttons and continues the
  run on the page, with nobody touching it.

Screenshots are written to the test's artifacts and checked (non-empty files, the expected text
present in the DOM when they were taken).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

import airun_nb
from support import AIRUN

LIVE = """\
%%workflow slow
steps:
  - id: nap
    retry: {attempts: 2}
    python: |
      import time
      time.sleep(4)
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


def _notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
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


def _shot(page, path: Path, expected: str) -> None:
    assert expected in page.output_text()
    page.screenshot(path)
    assert path.stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_the_running_row_ticks_the_error_names_the_cell_and_the_timeline_shows(lab) -> None:
    db = lab.root / "airun.duckdb"
    _notebook(
        lab.root / "live.ipynb",
        ["%load_ext airun_nb", LIVE, FAILING, FAILING_CELL],
    )
    page = lab.start(env=_env(db, "alice"))
    page.open_notebook("live.ipynb")
    page.run_all(wait=False)
    seen: set[str] = set()

    def ticking() -> bool:
        m = re.search(
            r"nap\s*python\s*running\s*1\s*([0-9.]+)s\s*attempt 1 of 2", page.output_text()
        )
        if m:
            seen.add(m.group(1))
        return len(seen) >= 3

    wait_for(ticking, "the running row to show three different elapsed times", timeout=60)
    _shot(page, lab.artifacts / "running.png", "attempt 1 of 2")
    wait_for(lambda: "(at Cell In[3], line 3)" in page.output_text(), "the error line", 90)
    text = page.output_text()
    assert "KeyError: 'amout' (at Cell In[3], line 3)" in text
    assert "interactiveshell.py" not in text and "ipykernel" not in text
    _shot(page, lab.artifacts / "error.png", "Cell In[3], line 3")


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_the_timeline_image_appears_in_a_fresh_kernel(lab) -> None:
    db = lab.root / "airun.duckdb"
    text = LIVE.split("\n", 1)[1].replace("sleep(4)", "sleep(0.1)")
    run = airun_nb.Workflow.from_yaml(text, name="slow")
    res = run.run(db=db)
    _notebook(lab.root / "tl.ipynb", ["%load_ext airun_nb", f"%workflow timeline {res.run_id}"])
    page = lab.start(env=_env(db, "alice"))
    page.open_notebook("tl.ipynb")
    page.run_all(timeout=120)
    img = page.page.locator(".jp-OutputArea-output img").first
    img.wait_for(state="visible", timeout=30_000)
    assert img.evaluate("e => e.naturalWidth") > 300
    assert "Figure size" not in page.output_text()
    page.screenshot(lab.artifacts / "timeline.png")
    assert (lab.artifacts / "timeline.png").stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_a_terminal_approval_flips_the_buttons_and_continues_the_run_on_the_page(lab) -> None:
    db = lab.root / "airun.duckdb"
    _notebook(lab.root / "gate.ipynb", ["%load_ext airun_nb", GATE])
    page = lab.start(env=_env(db, "alice"))
    page.open_notebook("gate.ipynb")
    page.run_all(timeout=120)
    page.button_locator("Approve").first.wait_for(state="visible", timeout=30_000)
    run_id = str(airun_nb.runs(db=db)["run_id"].iloc[0])
    _shot(page, lab.artifacts / "gate_before.png", "Approval needed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(_env(db, "bob"))
    done = subprocess.run(
        [*AIRUN, "approve", run_id, "review"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    wait_for((lab.root / "shipped.txt").exists, "the run to continue in the kernel", 30)
    wait_for(lambda: "Approved by bob via cli" in page.output_text(), "the gate to show it", 30)
    wait_for(
        lambda: f"run {run_id} · release · completed" in page.output_text(),
        "the continued run's table on the page",
        30,
    )
    assert page.button_locator("Approved").first.is_disabled()
    _shot(page, lab.artifacts / "gate_after.png", "Approved by bob via cli")
