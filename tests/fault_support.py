"""Helpers for the fault tests: a workflow run in real processes, its steps counted in a ledger.

Every step of :data:`WORKFLOW` calls :func:`step`, which first appends ``<step> <pid>`` to the
ledger file named by ``AIRUN_TEST_LEDGER`` (outside the store), so a test can tell how many
times each step body really ran, whatever the store says. ``AIRUN_TEST_KILL=<step>`` makes that
step SIGKILL its own process right after writing the ledger (a kill mid-step);
``AIRUN_TEST_HOLD=<step>`` makes it sleep for that many seconds given by ``AIRUN_TEST_HOLD_S``.

Run as a script (``python fault_support.py DB [RUN_ID]``) it runs or resumes the workflow and
prints ``RUN <run_id> <status>``; an airun_nb error is printed as ``error: <message>`` on
stderr with exit status 3 (busy) or 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = ("a", "b", "c", "d", "e")
WORKFLOW = "\n".join(
    ["name: faulty", "steps:"]
    + [
        line
        for i, s in enumerate(STEPS)
        for line in (
            f"  - id: {s}",
            "    call: fault_support:step",
            f"    with: {{name: {s}}}",
            *([f"    needs: [{STEPS[i - 1]}]"] if i else []),
        )
    ]
)


def step(name: str) -> str:
    with open(os.environ["AIRUN_TEST_LEDGER"], "a") as f:
        f.write(f"{name} {os.getpid()}\n")
    if os.environ.get("AIRUN_TEST_KILL") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("AIRUN_TEST_HOLD") == name:
        time.sleep(float(os.environ.get("AIRUN_TEST_HOLD_S", "1")))
    return f"{name}-done"


def ledger(path: Path) -> Counter[str]:
    """How many times each step body ran."""
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line.strip())


def env(ledger_path: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    out["PYTHONPATH"] = os.pathsep.join([str(HERE), out.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out["AIRUN_TEST_LEDGER"] = str(ledger_path)
    out["AIRUN_USER"] = "tester"
    out.update(extra)
    return out


def command(db: Path, run_id: str | None = None) -> list[str]:
    return [sys.executable, str(HERE / "fault_support.py"), str(db), *([run_id] if run_id else [])]


def run(
    db: Path, ledger_path: Path, run_id: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run (or resume) the workflow in a fresh process and wait for it."""
    return subprocess.run(
        command(db, run_id),
        env=env(ledger_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_id_of(proc: subprocess.CompletedProcess[str]) -> str:
    for line in proc.stdout.splitlines():
        if line.startswith("RUN "):
            return line.split()[1]
    raise AssertionError(f"no run line: {proc.stdout!r} {proc.stderr!r}")


def _main(argv: list[str]) -> int:
    import airun_nb
    from airun_nb.errors import AirunError, RunBusy

    db, run_id = argv[0], (argv[1] if len(argv) > 1 else None)
    try:
        result = airun_nb.Workflow.from_yaml(WORKFLOW).run(
            db=db, resume=run_id, raise_on_failure=False
        )
    except RunBusy as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 3
    except AirunError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"RUN {result.run_id} {result.status}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
