"""An approval gate in a real JupyterLab, decided by a real click in headless Chromium.

The notebook runs a workflow that stops at a gate; the cell ends (the run is ``waiting``) and
shows the gate widget with its message and a preview table. Clicking "Approve" in the page
records the decision (channel ``widget``) and continues the run in place; the step after the
gate writes a file. Everything is checked from the test process through the store.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest

import airun_nb
from support.notebooks import python_notebook

SCREENSHOT = Path("/tmp/gate_browser.png")
SCREENSHOT_AFTER = Path("/tmp/gate_browser_after.png")

FUNCTIONS = """\
from pathlib import Path
import pandas as pd

def load_orders():
    return pd.DataFrame({"region": ["north", "south", "east"], "amount": [120.0, 80.5, 42.0]})

def ship(orders):
    Path("shipped.txt").write_text(f"shipped {len(orders)} orders")
    return len(orders)
"""

WORKFLOW = """\
%%workflow release
steps:
  - id: orders
    call: load_orders
  - id: review
    needs: [orders]
    approval:
      message: "Ship {{ steps.orders.output | length }} orders to the warehouse?"
      show: "{{ steps.orders.output }}"
      approvers: [bob]
      allow_self_approval: true
  - id: ship
    needs: [review]
    call: ship
    with: {orders: "{{ steps.orders.output }}"}
"""


def write_notebook(path: Path) -> None:
    nb = python_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext airun_nb"),
        nbformat.v4.new_code_cell(FUNCTIONS),
        nbformat.v4.new_code_cell(WORKFLOW),
    ]
    nbformat.write(nb, str(path))


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.25)


def show_gate(page, title: str = "Approval needed") -> None:
    """Scroll the notebook so the gate (header to buttons and below) fills the window; the
    gate's header is ``title`` (it becomes the decision once the gate is decided)."""
    header = page.page.locator(".jp-OutputArea-output").get_by_text(title).first
    header.evaluate("e => e.scrollIntoView({block: 'start'})")
    time.sleep(0.3)  # let the scroll settle before the screenshot (cosmetic only)


def run_statuses(db: Path) -> list[str]:
    return airun_nb.runs(db=db)["status"].tolist() if db.exists() else []


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_approve_button_in_jupyterlab_continues_the_run(
    lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    db = lab.root / "airun.duckdb"
    write_notebook(lab.root / "gate.ipynb")
    # The kernel has one user: bob launches and approves, so the gate allows self-approval.
    page = lab.start(
        env={
            "AIRUN_DB": str(db),
            "AIRUN_USER": "bob",
            "AIRUN_APPROVAL": "",
            "AIRUN_APPROVAL_MODE": "",
            "AIRUN_CONFIG": "",
        }
    )
    page.open_notebook("gate.ipynb")
    page.run_all(timeout=120)

    # the cell ended without blocking: the run waits at the gate
    assert run_statuses(db) == ["waiting"], page.output_text()
    text = page.output_text()
    assert "Approval needed" in text
    assert "Ship 3 orders to the warehouse?" in text
    assert "north" in text and "120.0" in text  # the preview table
    page.button_locator("Approve").first.wait_for(state="visible", timeout=30_000)
    page.button_locator("Reject").first.wait_for(state="visible", timeout=30_000)
    assert not (lab.root / "shipped.txt").exists()
    show_gate(page)
    page.screenshot(lab.artifacts / "gate.png")
    shutil.copy(lab.artifacts / "gate.png", SCREENSHOT)

    page.click_button("Approve")

    shipped = lab.root / "shipped.txt"
    wait_for(shipped.exists, "the step after the gate to write shipped.txt", timeout=60)
    wait_for(lambda: run_statuses(db) == ["completed"], "the run to complete", timeout=60)
    assert shipped.read_text() == "shipped 3 orders"

    gates = airun_nb.approvals(db=db)
    assert len(gates) == 1
    row = gates.iloc[0]
    assert (row["gate_id"], row["status"], row["decision"]) == ("review", "approved", "approve")
    assert (row["actor"], row["channel"]) == ("bob", "widget")
    assert row["decided_at"] >= row["opened_at"]
    steps = airun_nb.steps(db=db).set_index("step_id")
    assert steps.loc["ship", "status"] == "completed"
    assert int(steps.loc["orders", "attempts"]) == 1  # not executed again by the continuation
    events = airun_nb.events(db=db)
    assert (events["kind"] == "gate_decided").sum() == 1

    # the page shows the decision and the continued run in the gate's area
    page.page.get_by_text("Approved", exact=False).first.wait_for(state="visible", timeout=30_000)
    # the buttons now say what was decided, and take no second decision
    assert page.button_locator("Approved").first.is_disabled()
    assert page.button_locator("Reject").first.is_disabled()
    run_id = str(row["run_id"])
    final = f"run {run_id} · release · completed"
    try:
        wait_for(lambda: final in page.output_text(), "the continued run's final table", timeout=30)
    finally:
        show_gate(page, "Approved ·")
        page.screenshot(lab.artifacts / "gate_after.png")
        shutil.copy(lab.artifacts / "gate_after.png", SCREENSHOT_AFTER)
    assert f"run {run_id} · release · running" not in page.output_text(), (
        "the gate's area still shows the continued run as running"
    )
    # the cell shows one table of the run, as it is now (not "waiting" above the result)
    wait_for(
        lambda: "Approved by bob via widget; the run completed." in page.output_text(),
        "the status line to say how the run ended",
        timeout=30,
    )
    text = page.output_text()
    assert text.count(f"run {run_id} · release · ") == 1, text
