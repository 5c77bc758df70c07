"""A gate's typed form and options in the notebook widget, filled in and approved by real
clicks and keystrokes in headless Chromium, in JupyterLab and in Notebook 7.

The notebook runs a workflow that stops at a gate with an integer field, a choice field and two
options; the test types the amount, picks the region and the option, clicks Approve, and reads
back from the store the gate's output (its form values and option) and the branch that ran.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest

import airun_nb
from airun_nb.store.database import Store
from support.notebooks import python_notebook

WORKFLOW = """\
%%workflow payout
steps:
  - id: review
    approval:
      message: "Pay out?"
      approvers: [bob]
      allow_self_approval: true
      fields:
        amount: {type: integer, required: true}
        region: {type: choice, choices: [eu, us]}
      options: [ship, hold]
  - id: ship
    needs: [review]
    when: "{{ steps.review.output.option == 'ship' }}"
    python: |
      from pathlib import Path
      Path("shipped.txt").write_text(
          f"{steps.review.output['form']['amount']} to {steps.review.output['form']['region']}"
      )
      result = "shipped"
  - id: hold
    needs: [review]
    when: "{{ steps.review.output.option == 'hold' }}"
    python: result = "held"
"""


def write_notebook(path: Path) -> None:
    nb = python_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext airun_nb"),
        nbformat.v4.new_code_cell(WORKFLOW),
    ]
    nbformat.write(nb, str(path))


def wait_for(predicate, what: str, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    limit = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > limit:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.25)  # a poll of the store (safety net above, never an expectation)


@pytest.mark.browser
@pytest.mark.timeout(420)
def test_the_widget_form_and_option_are_recorded_as_the_gates_output(
    jupyter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typing the amount, picking the region and the option ``ship`` and clicking Approve in
    the widget records ``form: {amount: 7, region: us}`` and ``option: ship`` (channel
    ``widget``), and the ``ship`` branch runs with those values; ``hold`` is skipped."""
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    db = jupyter.root / "airun.duckdb"
    write_notebook(jupyter.root / "form.ipynb")
    page = jupyter.start(
        env={
            "AIRUN_DB": str(db),
            "AIRUN_USER": "bob",
            "AIRUN_APPROVAL": "",
            "AIRUN_APPROVAL_MODE": "",
            "AIRUN_CONFIG": "",
        }
    )
    page.open_notebook("form.ipynb")
    page.run_all(timeout=120)
    assert airun_nb.runs(db=db)["status"].tolist() == ["waiting"], page.output_text()
    out = page.page.locator(".jp-NotebookPanel .jp-OutputArea-output")
    amount = out.locator(".widget-text").filter(has_text="amount").locator("input").first
    amount.wait_for(state="visible", timeout=60_000)
    amount.click()
    amount.fill("7")
    region = out.locator(".widget-dropdown").filter(has_text="region").locator("select").first
    region.select_option("us")
    page.click_button("ship")
    page.screenshot(jupyter.artifacts / f"form-{jupyter.front_end}.png")
    page.click_button("Approve")

    wait_for(
        lambda: airun_nb.runs(db=db)["status"].tolist() == ["completed"], "the run to complete"
    )
    run_id = str(airun_nb.runs(db=db)["run_id"].iloc[0])
    row = Store.open(db).gate_row(run_id, "review")
    assert row is not None
    assert (row["status"], row["channel"], row["actor"]) == ("approved", "widget", "bob")
    assert row["option"] == "ship"
    assert json.loads(row["form"]) == {"amount": 7, "region": "us"}
    assert (jupyter.root / "shipped.txt").read_text() == "7 to us"
    steps = airun_nb.steps(db=db).set_index("step_id")
    assert steps.loc["hold", "status"] == "skipped"
