"""Run a seed-dialect workflow file from Python, in this folder.

AIRUN_APPROVAL=approve python run_seed_workflow.py     # the gate is approved by policy
python run_seed_workflow.py                            # the run waits; then
airun approve RUN signoff --by someone-else            # and run this script again
"""

import os
from pathlib import Path

import airun_nb

here = Path(__file__).resolve().parent
os.chdir(here)  # the workspace (where file capabilities may act) is this folder
wf = airun_nb.Workflow.from_file(here / "rotate_report.yaml")
result = wf.run(db=here / "examples.duckdb")
print(result)
if result.status == "completed":
    print((here / "out" / "final.md").read_text())
