"""Build notebooks/approvals.ipynb and execute it (nbclient) so it is saved with its outputs.

    python notebooks/make_approvals.py

The notebook is validated by nbval in the test suite:

    python -m pytest --nbval notebooks/approvals.ipynb \
        --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
OUT = HERE / "approvals.ipynb"

md = nbformat.v4.new_markdown_cell


def code(source: str, *, ignore_output: bool = False) -> nbformat.NotebookNode:
    """A code cell; ``ignore_output`` for cells whose output is the live step table, which is
    drawn once and updated in place (``update_display_data``): nbclient saves the final table
    but nbval does not replay updates. The cells after them show the outcome in compared form."""
    cell = nbformat.v4.new_code_cell(source)
    if ignore_output:
        cell.metadata["tags"] = ["nbval-ignore-output"]
    return cell


CELLS = [
    md(
        "# Approval gates\n"
        "\n"
        "A gate is a workflow step that waits for a human decision: approve or reject, by whom, "
        "when, with what comment and through which channel (the buttons, `airun approve`, the "
        "Python API, a policy, or the timeout). The decision is durable: it is the gate step's "
        "output, stored with the run, and the first decision wins.\n"
        "\n"
        "This notebook keeps its store beside it, in `approvals.duckdb`, and starts from an empty "
        "one. With `AIRUN_IDENTITY=env`, `AIRUN_USER` names who is acting (by default it is your "
        "login; see docs/security.md for the identity modes)."
    ),
    code(
        "import os\n"
        "import shutil\n"
        "from pathlib import Path\n"
        "\n"
        'os.environ["AIRUN_DB"] = "approvals.duckdb"\n'
        'os.environ["AIRUN_IDENTITY"] = "env"  # play users by name in this demo\n'
        'os.environ["AIRUN_USER"] = "alice"\n'
        "for old in Path('.').glob('approvals.duckdb*'):  # the store and its side files\n"
        "    shutil.rmtree(old) if old.is_dir() else old.unlink()"
    ),
    md(
        "## Deciding headless\n"
        "\n"
        "Run interactively, a gate draws **Approve / Reject** buttons under the cell and the run "
        "waits for a click. This notebook is also executed headless (in CI), where nobody can "
        "click, so it sets `AIRUN_APPROVAL=approve`: a *policy* decides every gate at once. "
        "**When you work in the notebook, leave this cell out** (or `del "
        'os.environ["AIRUN_APPROVAL"]`) and click the buttons instead.\n'
        "\n"
        "`AIRUN_APPROVAL` may also decide gate by gate: `review=approve,publish=reject`."
    ),
    code('os.environ["AIRUN_APPROVAL"] = "approve"'),
    code("%load_ext airun_nb\nimport airun_nb"),
    code(
        "import pandas as pd\n"
        "\n"
        "def load_orders():\n"
        '    return pd.DataFrame({"region": ["north", "south", "east"], '
        '"amount": [120.0, 80.5, 42.0]})\n'
        "\n"
        "def ship(orders, decision):\n"
        '    return {"orders": len(orders), "approved_by": decision["actor"]}'
    ),
    md(
        "The gate shows its message and a preview of the orders. `approvers` names users and "
        "roles (`role:lead`, from the settings file); the user who started the run may not "
        "approve it (four-eyes) unless the gate says `allow_self_approval: true`. Rejecting rolls "
        "the run back."
    ),
    code(
        "%%workflow release\n"
        "steps:\n"
        "  - id: orders\n"
        "    call: load_orders\n"
        "  - id: review\n"
        "    needs: [orders]\n"
        "    approval:\n"
        '      message: "Ship {{ steps.orders.output | length }} orders to the warehouse?"\n'
        '      show: "{{ steps.orders.output }}"\n'
        "      approvers: [bob]\n"
        "      timeout: 24h\n"
        "      on_timeout: reject\n"
        "  - id: ship\n"
        "    needs: [review]\n"
        "    call: ship\n"
        '    with: {orders: "{{ steps.orders.output }}", decision: "{{ steps.review.output }}"}\n'
        "    output: shipped",
        ignore_output=True,
    ),
    code('airun_nb.runs()[["workflow", "status", "launched_by", "steps", "completed_steps"]]'),
    code("shipped"),
    md(
        "## Every decision, as a DataFrame\n"
        "\n"
        "`airun_nb.approvals()` has one row per gate: its message, approvers, deadline and the "
        "decision (`opened_at`, `deadline`, `decided_at` are UTC timestamps, `waited` a "
        "duration). `airun approvals --all` prints the same from a terminal."
    ),
    code(
        "gates = airun_nb.approvals()\n"
        'gates[["workflow", "gate_id", "status", "decision", "actor", "channel"]]'
    ),
    code('gates[["opened_at", "deadline", "decided_at", "waited"]].dtypes'),
    md(
        "## Deciding from outside the notebook\n"
        "\n"
        "A gate with `mode: suspend` waits even here: the cell ends with the run `waiting` and "
        "draws the gate. Anyone allowed can then decide from a terminal, "
        '`airun approve RUN GATE --by bob -m "..."` (or `airun reject`), or from Python with '
        "`airun_nb.approve(run, gate, by=..., comment=...)`. Re-running the cell (or "
        "`%workflow resume`) continues the run; after a kernel restart, `%workflow approvals` "
        "draws every open gate again."
    ),
    code(
        "%%workflow hotfix\n"
        "steps:\n"
        "  - id: orders\n"
        "    call: load_orders\n"
        "  - id: review\n"
        "    needs: [orders]\n"
        "    approval:\n"
        '      message: "Apply the hotfix to {{ steps.orders.output | length }} orders?"\n'
        "      approvers: [bob]\n"
        "      mode: suspend\n"
        "  - id: ship\n"
        "    needs: [review]\n"
        "    call: ship\n"
        '    with: {orders: "{{ steps.orders.output }}", decision: "{{ steps.review.output }}"}\n'
        "    output: hotfixed",
        ignore_output=True,
    ),
    code(
        "waiting = airun_nb.approvals(pending=True)\n"
        'run_id = waiting["run_id"].iloc[0]\n'
        'decision = airun_nb.approve(run_id, "review", by="bob", comment="tested on staging")\n'
        '{k: decision[k] for k in ("decision", "actor", "channel", "comment")}'
    ),
    code("%workflow resume", ignore_output=True),
    code("hotfixed"),
    code(
        'airun_nb.approvals()[["workflow", "gate_id", "decision", "actor", "channel", "comment"]]'
    ),
    md(
        "## A form, options and a quorum\n"
        "\n"
        "A gate can ask for typed values (`fields:`), offer choices (`options:`) and need more "
        "than one person (`quorum: 2`). The values are checked once, by the store, whatever the "
        "channel: a wrong type or a missing required field is refused in one line and nothing is "
        "recorded. The gate's output is `{decision, option, form, by, comment}`, so later steps "
        "read `steps.review.output.form.discount` and branch on `steps.review.output.option`."
    ),
    code(
        "def apply_discount(orders, discount, by):\n"
        "    return f\"{len(orders)} orders at {discount}% off, approved by {' and '.join(by)}\"\n"
        "\n"
        "def hold_orders(orders):\n"
        '    return f"{len(orders)} orders held"'
    ),
    code(
        "%%workflow promotion\n"
        "steps:\n"
        "  - id: orders\n"
        "    call: load_orders\n"
        "  - id: review\n"
        "    needs: [orders]\n"
        "    approval:\n"
        '      message: "Discount {{ steps.orders.output | length }} orders?"\n'
        "      mode: suspend\n"
        "      quorum: 2\n"
        "      fields:\n"
        "        discount: {type: integer, required: true, help: percent}\n"
        "        reason: {type: string}\n"
        "      options: [apply, hold]\n"
        "  - id: apply\n"
        "    needs: [review]\n"
        "    when: \"{{ steps.review.output.option == 'apply' }}\"\n"
        "    call: apply_discount\n"
        '    with: {orders: "{{ steps.orders.output }}", '
        'discount: "{{ steps.review.output.form.discount }}", by: "{{ steps.review.output.by }}"}\n'
        "    output: applied\n"
        "  - id: hold\n"
        "    needs: [review]\n"
        "    when: \"{{ steps.review.output.option == 'hold' }}\"\n"
        "    call: hold_orders\n"
        '    with: {orders: "{{ steps.orders.output }}"}',
        ignore_output=True,
    ),
    md("A value of the wrong type is refused, and nothing is recorded:"),
    code(
        'run_id = airun_nb.approvals(pending=True)["run_id"].iloc[0]\n'
        "try:\n"
        '    airun_nb.approve(run_id, "review", by="bob", form={"discount": "ten"}, '
        'option="apply")\n'
        "except airun_nb.ApprovalError as refused:\n"
        "    print(refused)"
    ),
    md("Bob's approval is the first of two; the gate stays open until Carol's:"),
    code(
        'first = airun_nb.approve(run_id, "review", by="bob", form={"discount": 10}, '
        'option="apply")\n'
        'first["status"], first["progress"]'
    ),
    code(
        'second = airun_nb.approve(run_id, "review", by="carol", comment="fine by me")\n'
        '{k: second[k] for k in ("decision", "option", "form", "by")}'
    ),
    code("%workflow resume", ignore_output=True),
    code("applied"),
    code('airun_nb.steps(run_id)[["step_id", "view"]]'),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = CELLS
    return nb


def main() -> int:
    nb = build()
    env_before = dict(os.environ)
    for var in (
        "AIRUN_DB",
        "AIRUN_APPROVAL",
        "AIRUN_APPROVAL_MODE",
        "AIRUN_CONFIG",
        "AIRUN_USER",
        "AIRUN_IDENTITY",
    ):
        os.environ.pop(var, None)
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small when rebuilt
        cell["id"] = f"approvals-{i:02d}"
    nbformat.write(nb, OUT)
    for side in HERE.glob("approvals.duckdb*"):  # the run's store: not part of the source tree
        shutil.rmtree(side) if side.is_dir() else side.unlink()
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
