"""Helpers for the fault tests: a workflow run in real processes, its steps counted in a ledger.

Every step of :data:`WORKFLOW` calls :func:`step`, which first appends ``<step> <pid>`` to the
ledger file named by ``AIRUN_TEST_LEDGER`` (outside the store), so a test can tell how many
times each step body really ran, whatever the store says. ``AIRUN_TEST_KILL=<step>`` makes that
step SIGKILL its own process right after writing the ledger (a kill mid-step);
``AIRUN_TEST_WAIT=<step>`` makes it wait until the file named by ``AIRUN_TEST_GO`` exists.

Run as a script (``python support/faults.py DB [RUN_ID]``) it runs or resumes the workflow and
prints ``RUN <run_id> <status>``; an airun_nb error is printed as ``error: <message>`` on
stderr with exit status 3 (busy) or 1.

Importing airun_nb (pandas, DuckDB, Arrow) takes seconds on a loaded machine, which would drown
"starts 0-500 ms apart". :class:`Forker` imports it once in a server process and forks a real
child process per request: its own pid, its own file descriptors and locks, killed for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # tests/, where `support` is importable
STEPS = ("a", "b", "c", "d", "e")
WORKFLOW = "\n".join(
    ["name: faulty", "steps:"]
    + [
        line
        for i, s in enumerate(STEPS)
        for line in (
            f"  - id: {s}",
            "    call: support.faults:step",
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
    if os.environ.get("AIRUN_TEST_WAIT") == name:
        go = Path(os.environ["AIRUN_TEST_GO"])
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return f"{name}-done"


def undo(name: str) -> None:
    """A compensation: appends ``undo-<name> <pid>`` to the ledger."""
    with open(os.environ["AIRUN_TEST_LEDGER"], "a") as f:
        f.write(f"undo-{name} {os.getpid()}\n")


def boom() -> None:
    """A step that always fails (its run rolls back)."""
    raise RuntimeError("boom")


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
    out["AIRUN_CALL_MODULES"] = "support.faults"  # the owner lets `call:` reach the step body
    out.update(extra)
    return out


def command(db: Path, run_id: str | None = None) -> list[str]:
    return [
        sys.executable,
        str(HERE / "support" / "faults.py"),
        str(db),
        *([run_id] if run_id else []),
    ]


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


_SERVER = """
import atexit, json, os, signal, sys, traceback
sys.path.insert(0, sys.argv[1])
import support.faults as fault_support, airun_nb, airun_nb.engine.runner  # the slow imports, once

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the OS
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        continue
    for fd, suffix in ((1, ".out"), (2, ".err")):
        os.dup2(os.open(req["out"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout = open(1, "w", buffering=1)
    sys.stderr = open(2, "w", buffering=1)
    sys.stdin.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(req["env"])
    code = 99
    try:
        code = getattr(fault_support, req["func"])(req["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    with open(req["out"] + ".rc.tmp", "w") as f:
        f.write(str(code))
    os.rename(req["out"] + ".rc.tmp", req["out"] + ".rc")
    os._exit(code)
"""


class Child:
    """A process forked by :class:`Forker`; its output lands in ``<out>.out`` / ``<out>.err``."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float = 90) -> tuple[int, str, str]:
        """(exit status, stdout, stderr); -9 when it was killed."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"process {self.pid} hung")
            time.sleep(0.01)
        rc = Path(str(self.out) + ".rc")
        code = int(rc.read_text()) if rc.exists() else -9
        return (
            code,
            Path(str(self.out) + ".out").read_text(),
            Path(str(self.out) + ".err").read_text(),
        )


class Forker:
    def __init__(self) -> None:
        self._n = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(HERE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env(Path("/nonexistent")),
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def spawn(self, func: str, argv: list[str], child_env: dict[str, str], out: Path) -> Child:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._n += 1
        stem = out / f"p{self._n}"
        req = {"func": func, "argv": argv, "env": child_env, "out": str(stem)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return Child(int(self.proc.stdout.readline()), stem)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def claim_main(argv: list[str]) -> int:
    """Claim a run with the store primitive and stay its owner until ``argv[2]`` exists."""
    from airun_nb.engine.claim import claim_run
    from airun_nb.errors import RunBusy
    from airun_nb.store.database import Store
    from airun_nb.store.owner import owner_alive, owner_fields

    db, run_id, go = argv[0], argv[1], Path(argv[2])
    store = Store.open(db)
    try:
        claim_run(store, run_id, status="running", owner=owner_fields(), alive=owner_alive)
    except RunBusy as exc:
        print("BUSY", exc.message)
        return 3
    store.release()
    print("CLAIMED", os.getpid(), flush=True)
    while not go.exists():
        time.sleep(0.01)
    return 0


def _main(argv: list[str]) -> int:
    import airun_nb
    from airun_nb.errors import AirunError, RunBusy, WorkflowFailed

    db, run_id = argv[0], (argv[1] if len(argv) > 1 else None)
    try:
        result = airun_nb.Workflow.from_yaml(WORKFLOW).run(db=db, resume=run_id)
    except WorkflowFailed as exc:
        print(f"RUN {exc.run_id} {exc.status}")
        return 0
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
