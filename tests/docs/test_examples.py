"""The runnable examples in examples/ work as their docstrings say."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_seed_dialect_workflow_runs_unchanged(tmp_path: Path) -> None:
    work = tmp_path / "examples"
    shutil.copytree(EXAMPLES, work, ignore=shutil.ignore_patterns("out", "*.duckdb*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_APPROVAL"] = "approve"
    out = subprocess.run(
        [sys.executable, str(work / "run_seed_workflow.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "rotate_report · completed" in out.stdout
    assert (work / "out" / "final.md").read_text() == "v1"
    assert not (work / "out" / "draft.md").exists()  # moved by the publish step
