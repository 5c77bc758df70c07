"""Self-test of the browser harness: an ipywidgets button clicked for real in
headless Chromium must run its Python on_click handler in the kernel."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest

from support.notebooks import python_notebook

SCREENSHOT = Path("/tmp/harness_selftest.png")

CELL = """\
import pathlib
import ipywidgets as widgets

_out = pathlib.Path("clicked.txt").resolve()

def _on_click(button):
    _out.write_text("widget")
    button.description = "Approved"

approve = widgets.Button(description="Approve")
approve.on_click(_on_click)
print("harness-selftest-ready")
approve
"""


def write_notebook(path: Path, *sources: str) -> Path:
    nb = python_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, str(path))
    return path


def wait_for_file(path: Path, timeout: float = 20.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text:
                return text
        time.sleep(0.2)
    return None


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_widget_click_round_trips_through_real_browser(lab):
    write_notebook(lab.root / "selftest.ipynb", CELL)

    page = lab.start(env={"AIRUN_HARNESS_SELFTEST": "1"})
    page.open_notebook("selftest.ipynb")
    page.run_all()

    assert "harness-selftest-ready" in page.output_text()

    page.click_button("Approve")

    clicked = lab.root / "clicked.txt"
    text = wait_for_file(clicked, timeout=20)
    assert text == "widget", (
        f"clicked.txt not written by the on_click handler (got {text!r})\n"
        f"outputs: {page.output_text()!r}"
    )
    # the handler's change to the model travels back to the browser too
    page.button_locator("Approved").first.wait_for(state="visible", timeout=20_000)

    page.screenshot(lab.artifacts / "selftest.png")
    shutil.copy(lab.artifacts / "selftest.png", SCREENSHOT)
