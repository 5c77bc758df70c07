"""Build notebooks/governance.ipynb and execute it (nbclient), saving it with its outputs.

    python notebooks/make_governance.py

The notebook is validated by ``python -m pytest --nbval notebooks/governance.ipynb
--nbval-sanitize-with tests/nbval_sanitize.cfg``. The ``%%workflow`` cells draw a live step
table that is updated in place (``update_display_data``, which nbval cannot replay), so they
are tagged ``nbval-ignore-output``; the cell after each prints the same facts in a stable form.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
TARGET = HERE / "governance.ipynb"


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


CELLS = [
    md(
        """
        # Governance: an agent's workflow meets the policy

        An LLM agent (`llm-bot`) writes a workflow and runs it. The kernel's policy says agents
        may not delete files and may not run inline Python, and must ask a lead before they run
        a shell command. This notebook shows the policy stopping the agent *before* anything
        irreversible happens, the automatic undo of what had already been done, a lead approving
        the one thing the agent may do with permission, and the audit trail of it all.

        The first cell starts from a clean slate: its own store (`governance.duckdb` in this
        folder), a small workspace folder the agent's file capabilities are confined to, and the
        policy file.
        """
    ),
    code(
        '''
        import os
        import pathlib
        import shutil
        import textwrap

        import airun_nb

        os.environ["AIRUN_DB"] = "governance.duckdb"  # this notebook's own store
        for old in pathlib.Path(".").glob("governance.duckdb*"):  # store, journal, undo data
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        for var in ("AIRUN_POLICY", "AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CRASH_AT"):
            os.environ.pop(var, None)

        workspace = pathlib.Path("governance_files")  # file capabilities stay in here
        shutil.rmtree(workspace, ignore_errors=True)
        workspace.mkdir()
        (workspace / "customers.csv").write_text("id,name\\n1,Ada\\n2,Grace\\n")
        os.environ["AIRUN_WORKSPACE"] = str(workspace)

        pathlib.Path("policy.yaml").write_text(textwrap.dedent("""\\
            roles:
              lead: [alice]
              agent: [llm-bot]
            default: allow
            rules:
              - name: agents-no-code
                principals: [role:agent]
                capabilities: [python.exec, fs.delete]
                decision: deny
              - name: agents-ask-before-shell
                principals: [role:agent]
                capabilities: [shell.run, "http.*"]
                decision: require_approval
                approvers: [role:lead]
            """))

        os.environ["AIRUN_IDENTITY"] = "env"  # identity from AIRUN_USER (see docs/security.md)
        os.environ["AIRUN_USER"] = "llm-bot"  # the agent is the principal of every run below
        print(pathlib.Path("policy.yaml").read_text())
        '''
    ),
    code(
        """
        %load_ext airun_nb
        %config Workflow.policy = "policy.yaml"
        """
    ),
    md(
        """
        ## The agent's workflow

        Write a summary, delete the raw data with `fs.delete`, then "vacuum" with inline Python.
        The write is allowed (and its undo is recorded before it happens); the delete is denied
        by rule `agents-no-code`, so the step fails without running, and the run rolls back: the
        summary is removed again. The inline Python step is never reached.
        """
    ),
    code(
        """
        %%workflow agent_cleanup
        steps:
          - id: summary
            capability: fs.write
            with: {path: summary.txt, content: "2 customers"}
          - id: drop_raw
            needs: [summary]
            capability: fs.delete
            with: {path: customers.csv}
          - id: vacuum
            needs: [drop_raw]
            python: |
              import os
              os.remove("governance_files/customers.csv")
        """,
        "raises-exception",
        "nbval-ignore-output",
    ),
    code(
        """
        run = airun_nb.last_run()
        print("run status:", run.status)
        print("workspace:", sorted(p.name for p in workspace.iterdir()))
        steps = airun_nb.steps(run.run_id)
        print("drop_raw:", steps.set_index("step_id").loc["drop_raw", "error"])
        steps[["step_id", "kind", "status", "comp_status"]]
        """
    ),
    md(
        """
        ## The agent tries a workaround

        Deleting the file from inline Python is `python.exec`, denied for agents by the same
        rule. Nothing runs; the raw data is still there.
        """
    ),
    code(
        """
        %%workflow agent_workaround
        steps:
          - id: remove_by_code
            python: |
              import os
              os.remove("governance_files/customers.csv")
        """,
        "raises-exception",
        "nbval-ignore-output",
    ),
    code(
        """
        run = airun_nb.last_run()
        print("run status:", run.status)
        print("error:", airun_nb.steps(run.run_id)["error"].iloc[0])
        print("workspace:", sorted(p.name for p in workspace.iterdir()))
        """
    ),
    md(
        """
        ## What the agent may do with a lead's approval

        A shell command needs a lead's approval (rule `agents-ask-before-shell`): the runtime
        inserts a gate `announce.approval` before the step and the run waits. Alice, a lead,
        approves it (here from Python; the widget, `airun approve` or a policy would do the
        same), and re-running the cell continues the run.
        """
    ),
    code(
        """
        %%workflow agent_report
        steps:
          - id: announce
            capability: shell.run
            with: {command: "echo report ready > announced.txt"}
        """,
        "nbval-ignore-output",
    ),
    code(
        """
        run = airun_nb.last_run()
        print("run status:", run.status)
        gate = airun_nb.approvals(run.run_id).iloc[0]
        print("gate:", gate["gate_id"], "| approvers:", gate["approvers"], "| status:", gate["status"])
        decision = airun_nb.approve(run.run_id, "announce.approval", by="alice", comment="fine")
        print("decided:", decision["decision"], "by", decision["actor"])
        """
    ),
    code(
        """
        %%workflow agent_report
        steps:
          - id: announce
            capability: shell.run
            with: {command: "echo report ready > announced.txt"}
        """,
        "nbval-ignore-output",
    ),
    code(
        """
        print("run status:", airun_nb.last_run().status)
        print((workspace / "announced.txt").read_text().strip())
        """
    ),
    md(
        """
        ## The audit trail

        Every policy decision, human decision, capability execution and undo is a row, with the
        principal, the rule that decided and (not shown here) the arguments with secrets
        redacted. The same table comes out of `airun audit --db governance.duckdb --format
        jsonl` (or `--format csv`).
        """
    ),
    code(
        """
        airun_nb.audit()[["kind", "principal", "step_id", "capability", "decision", "rule"]]
        """
    ),
    md(
        """
        Tidy up the files this notebook made (the store stays, for `airun audit`).
        """
    ),
    code(
        """
        shutil.rmtree(workspace)
        pathlib.Path("policy.yaml").unlink()
        """
    ),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = CELLS
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> int:
    nb = build()
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()
    nbformat.write(nb, TARGET)
    print(
        f"wrote {TARGET.relative_to(Path.cwd()) if TARGET.is_relative_to(Path.cwd()) else TARGET}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
