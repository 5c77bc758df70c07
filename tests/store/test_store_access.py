"""While a kernel sits in a long step, a terminal and a second kernel can read the store.

The readers run with ``AIRUN_LOCK_TIMEOUT=2``: if the running kernel held the store, they would
give up after 2 s with a StoreBusy error, so a successful answer is the proof. Nothing here
measures time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

WORKFLOW_CELL = textwrap.dedent(
    """\
    %%workflow sleepy
    steps:
      - id: first
        python: result = 1
      - id: nap
        needs: [first]
        python: |
          import pathlib, time
          pathlib.Path("napping").write_text("yes")
          time.sleep(20)
          result = "rested"
    """
)


def _kernel(cwd: Path, env: dict[str, str]) -> tuple[KernelManager, object]:
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(cwd), env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _run(kc: object, code: str, timeout: float = 60) -> str:
    """Execute and return everything the cell printed or displayed as text (errors raise)."""
    msg_id = kc.execute(code)  # type: ignore[attr-defined]
    texts: list[str] = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)  # type: ignore[attr-defined]
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            texts.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            texts.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            raise AssertionError(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(texts)


@pytest.mark.timeout(240)
def test_terminal_and_second_kernel_read_while_a_kernel_sleeps_in_a_step(tmp_path: Path) -> None:
    db = tmp_path / "airun.duckdb"
    env = {**os.environ, "AIRUN_DB": str(db), "AIRUN_LOCK_TIMEOUT": "2"}
    env.pop("AIRUN_CRASH_AT", None)
    km1, kc1 = _kernel(tmp_path, env)
    km2 = kc2 = None
    try:
        _run(kc1, "%load_ext airun_nb")
        kc1.execute(WORKFLOW_CELL)  # type: ignore[attr-defined]  # runs for ~20 s
        marker = tmp_path / "napping"
        for _ in range(600):
            if marker.exists():
                break
            time.sleep(0.05)
        assert marker.exists(), "the long step never started"

        # A terminal: `airun runs` answers (it would fail with StoreBusy after 2 s otherwise).
        term = subprocess.run(
            [sys.executable, "-m", "airun_nb", "runs", "--db", str(db)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert term.returncode == 0, term.stderr
        assert "sleepy" in term.stdout and "running" in term.stdout, term.stdout
        assert "Traceback" not in term.stderr and "IOException" not in term.stderr

        # A second kernel: airun_nb.runs() and steps() answer, and see the step in flight.
        km2, kc2 = _kernel(tmp_path, env)
        out = _run(
            kc2,
            "import airun_nb\n"
            "r = airun_nb.runs()\n"
            "s = airun_nb.steps(r.run_id.iloc[-1])\n"
            "print(r.status.iloc[-1], dict(zip(s.step_id, s.status)))",
        )
        assert "running" in out
        assert "'first': 'completed'" in out and "'nap': 'running'" in out
    finally:
        for kc, km in ((kc2, km2), (kc1, km1)):
            if kc is not None:
                kc.stop_channels()  # type: ignore[attr-defined]
            if km is not None:
                km.shutdown_kernel(now=True)
