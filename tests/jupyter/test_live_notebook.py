"""What a real kernel publishes while a run executes and while it waits at a gate.

Real kernels (jupyter_client over IPC), a real store, the real `airun` CLI in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from support import AIRUN
from support.live import LiveKernel


def _env(db: Path, user: str = "alice") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(AIRUN_DB=str(db), AIRUN_USER=user, AIRUN_IDENTITY="env")
    return env


@pytest.fixture
def kernel(tmp_path: Path):
    k = LiveKernel(tmp_path, _env(tmp_path / "airun.duckdb"))
    k.execute("%load_ext airun_nb")
    yield k
    k.shutdown()


SLOW = textwrap.dedent(
    """\
    %%workflow slow
    steps:
      - id: first
        python: result = 1
      - id: nap
        needs: [first]
        retry: {attempts: 2}
        python: |
          import time
          time.sleep(3)
          result = "rested"
    """
)


def test_a_three_second_step_is_shown_running_with_its_attempt_and_ticking(
    kernel: LiveKernel,
) -> None:
    msg_id = kernel.execute(SLOW)
    outs = kernel.outputs(msg_id)
    updates = [(t, c["data"]["text/plain"]) for t, k, c in outs if k == "update_display_data"]
    running = [(t, text) for t, text in updates if "nap    python  running" in text]
    assert running, "no update showed the step running:\n" + "\n".join(u for _, u in updates)
    assert all("attempt 1 of 2" in text for _, text in running)
    final = [text for _, text in updates if "nap    python  completed" in text]
    assert final, "the table never showed the step completed"
    t_done = min(t for t, text in updates if "nap    python  completed" in text)
    assert min(t for t, _ in running) < t_done
    # The elapsed time moves while it runs: several different durations were drawn.
    nap_lines = [line for _, text in running for line in text.splitlines() if "nap " in line]
    durations = {line.split()[4] for line in nap_lines}
    assert len(durations) >= 3, durations


def test_the_error_line_names_the_notebook_cell_and_the_traceback_is_kept(
    kernel: LiveKernel,
) -> None:
    kernel.execute(
        "import pandas as pd\n"
        "def total(df):\n"
        "    return df['amout'].sum()\n"
        "def load():\n"
        "    return total(pd.DataFrame({'amount': [1, 2]}))\n"
    )
    msg_id = kernel.start("%%workflow typo\nsteps:\n  - id: load\n    call: load\n")
    kernel.wait_for(lambda: kernel.idle_after(msg_id), 60, "the failing cell")
    text = kernel.text(msg_id)
    assert "KeyError: 'amout' (at Cell In[2], line 3)" in text, text
    assert "base.py" not in text
    tb_id = kernel.execute(
        "import airun_nb\n"
        "_a = airun_nb.attempts()\n"
        "print(_a['traceback'].iloc[-1])\n"
        "%workflow traceback"
    )
    tb = kernel.text(tb_id)
    assert 'File "Cell In[2]", line 5, in load' in tb, tb
    assert 'File "Cell In[2]", line 3, in total' in tb
    assert "ipykernel" not in tb and "airun_nb/" not in tb
    assert "KeyError: 'amout'" in tb


GATE = textwrap.dedent(
    """\
    %%workflow release
    steps:
      - id: prepare
        call: prepare
      - id: review
        needs: [prepare]
        approval:
          message: "Ship it?"
          approvers: [bob]
      - id: ship
        needs: [review]
        call: ship
    """
)

FUNCTIONS = textwrap.dedent(
    """\
    def prepare():
        return 3

    def ship():
        open("shipped", "w").write("yes")
        return "shipped"
    """
)


def _run_id(kernel: LiveKernel) -> str:
    out = kernel.text(kernel.execute("import airun_nb; print('RUN', airun_nb.last_run().run_id)"))
    return out.split("RUN ")[1].split()[0]


def test_a_cli_approval_continues_the_idle_kernels_run(kernel: LiveKernel, tmp_path: Path) -> None:
    kernel.execute(FUNCTIONS)
    kernel.execute(GATE)
    run_id = _run_id(kernel)
    assert not (tmp_path / "shipped").exists()
    before = len(kernel.snapshot())
    env = _env(tmp_path / "airun.duckdb", user="bob")
    done = subprocess.run(
        [*AIRUN, "approve", run_id, "review"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # how fast it continues is measured by the benchmarks; here: that it does, by itself
    kernel.wait_for(lambda: (tmp_path / "shipped").exists(), 120, "the run to continue")
    kernel.wait_for(
        lambda: any("completed" in str(s.get("value", "")) for _, s in kernel.comm_values()),
        120,
        "the gate's table to show the run completed",
    )
    states = [s for t, m in kernel.snapshot()[before:] for s in [m] if m]
    assert states
    buttons = [s for _, s in kernel.comm_values() if "disabled" in s]
    assert any(s["disabled"] for s in buttons), "the buttons were not disabled"
    status = [
        str(s.get("value")) for _, s in kernel.comm_values() if "Approved" in str(s.get("value"))
    ]
    assert any("bob" in v and "cli" in v for v in status), status
    # The kernel answers: nothing holds its main thread.
    assert "2" in kernel.text(kernel.execute("print(1 + 1)"))
    out = kernel.text(kernel.execute("import airun_nb; print(airun_nb.last_run().status)"))
    assert "completed" in out


def test_a_click_without_the_functions_records_nothing_and_says_what_to_define(
    tmp_path: Path,
) -> None:
    db = tmp_path / "airun.duckdb"
    first = LiveKernel(tmp_path, _env(db))
    try:
        first.execute("%load_ext airun_nb")
        first.execute(FUNCTIONS)
        first.execute(GATE)
        run_id = _run_id(first)
    finally:
        first.shutdown()
    second = LiveKernel(tmp_path, _env(db, user="bob"))
    try:
        second.execute("%load_ext airun_nb")
        msg = second.execute(
            "from airun_nb.jupyter.widgets import gate_widgets\n"
            "%workflow approvals\n"
            "_w = gate_widgets()[-1]\n"
            "_w.approve_button.click()\n"
            "print('STATUS', _w.status.value)"
        )
        text = second.text(msg)
        assert "define" in text and "ship" in text, text
        rows = second.text(
            second.execute(
                f"import airun_nb; print(airun_nb.approvals('{run_id}')['status'].tolist())"
            )
        )
        assert "['open']" in rows, rows
    finally:
        second.shutdown()


def test_the_timeline_displays_as_a_picture_in_a_fresh_kernel(tmp_path: Path) -> None:
    db = tmp_path / "airun.duckdb"
    first = LiveKernel(tmp_path, _env(db))
    try:
        first.execute("%load_ext airun_nb")
        first.execute(SLOW.replace("time.sleep(3)", "time.sleep(0.1)"))
        run_id = _run_id(first)
    finally:
        first.shutdown()
    fresh = LiveKernel(tmp_path, _env(db))
    try:
        fresh.execute("%load_ext airun_nb")
        msg = fresh.execute(f"%workflow timeline {run_id}")
        results = [c for _, k, c in fresh.outputs(msg) if k == "execute_result"]
        assert results, fresh.text(msg)
        data = results[0]["data"]
        assert data["image/png"] and "data:image/png;base64," in data["text/html"]
        assert "Figure size" not in data["text/plain"]
    finally:
        fresh.shutdown()


def test_cancel_from_the_notebook_ends_a_waiting_run_and_its_gate_shows_it(
    kernel: LiveKernel, tmp_path: Path
) -> None:
    kernel.execute(FUNCTIONS)
    kernel.execute(GATE)
    run_id = _run_id(kernel)
    listing = kernel.text(kernel.execute("%workflow approvals"))
    assert f"%workflow cancel {run_id}" in listing and "ago" in listing
    out = kernel.text(kernel.execute(f"%workflow cancel {run_id}"))
    assert f"cancelled run {run_id} (was waiting)" in out
    kernel.wait_for(
        lambda: any("Cancelled" in str(s.get("value", "")) for _, s in kernel.comm_values()),
        5,
        "the gate widgets to show the cancel",
    )
    status = kernel.text(
        kernel.execute(
            f"import airun_nb; print(airun_nb.runs().set_index('run_id').loc['{run_id}', 'status'])"
        )
    )
    assert "cancelled" in status
    assert not (tmp_path / "shipped").exists()


def test_after_a_restart_running_the_cell_again_resumes_the_same_run(tmp_path: Path) -> None:
    db = tmp_path / "airun.duckdb"
    cell = GATE.replace("approvers: [bob]", "allow_self_approval: true")
    first = LiveKernel(tmp_path, _env(db))
    try:
        first.execute("%load_ext airun_nb")
        first.execute(FUNCTIONS)
        first.execute(cell)
        run_id = _run_id(first)
    finally:
        first.shutdown()
    again = LiveKernel(tmp_path, _env(db))
    try:
        again.execute("%load_ext airun_nb")
        again.execute(FUNCTIONS)
        again.execute(cell)
        assert _run_id(again) == run_id
        msg = again.execute(
            "from airun_nb.jupyter.widgets import gate_widgets\n"
            "gate_widgets()[-1].approve_button.click()\n"
            "import airun_nb; print('STATUS', airun_nb.last_run().run_id, airun_nb.last_run().status)"
        )
        assert f"STATUS {run_id} completed" in again.text(msg)
        assert (tmp_path / "shipped").exists()
    finally:
        again.shutdown()


def _cli(tmp_path: Path, *args: str, user: str = "bob") -> subprocess.CompletedProcess[str]:
    env = _env(tmp_path / "airun.duckdb", user=user)
    return subprocess.run([*AIRUN, *args], env=env, cwd=tmp_path, capture_output=True, text=True)


def _waiting_run(tmp_path: Path, cell: str, *, store_code: bool) -> str:
    k = LiveKernel(tmp_path, _env(tmp_path / "airun.duckdb"))
    try:
        k.execute("%load_ext airun_nb")
        if store_code:
            k.execute("%config Workflow.store_code = True")
        k.execute(FUNCTIONS)
        k.execute(cell)
        return _run_id(k)
    finally:
        k.shutdown()


def test_a_terminal_resumes_a_run_whose_remaining_steps_need_no_notebook(tmp_path: Path) -> None:
    cell = GATE.replace("call: ship", 'python: |\n      open("shipped", "w").write("yes")')
    run_id = _waiting_run(tmp_path, cell, store_code=False)
    assert _cli(tmp_path, "approve", run_id, "review").returncode == 0
    done = _cli(tmp_path, "resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr  # prepare's function is not needed
    assert (tmp_path / "shipped").exists()


def test_a_terminal_resume_names_the_missing_function_unless_the_code_was_stored(
    tmp_path: Path,
) -> None:
    run_id = _waiting_run(tmp_path, GATE, store_code=False)
    assert _cli(tmp_path, "approve", run_id, "review").returncode == 0
    done = _cli(tmp_path, "resume", run_id)
    assert done.returncode != 0
    assert "call 'ship' is not defined" in done.stderr and "prepare" not in done.stderr
    assert "Re-open" in done.stderr and "store_code" in done.stderr
    assert "Traceback" not in done.stderr

    stored = tmp_path / "stored"
    stored.mkdir()
    run_id = _waiting_run(stored, GATE, store_code=True)
    assert _cli(stored, "approve", run_id, "review").returncode == 0
    done = _cli(stored, "resume", run_id)  # the resuming side opts in too
    assert done.returncode != 0 and "--trust-stored-code" in done.stderr
    assert not (stored / "shipped").exists()
    done = _cli(stored, "resume", run_id, "--trust-stored-code")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (stored / "shipped").read_text() == "yes"
