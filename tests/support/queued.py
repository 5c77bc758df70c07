"""Queued runs and worker processes for the worker tests.

Step bodies count themselves in a ledger file outside the store (``AIRUN_TEST_LEDGER``): each
call appends ``<run> <step> <pid>``, from whichever worker process runs it, so a test can tell
how many times each body really ran, whatever the store says. ``hold`` blocks its worker until
the test releases it: it writes ``<ledger>.holding.<pid>`` when it starts (the event a test
waits for) and returns once ``<ledger>.release`` exists.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from support import AIRUN

HERE = Path(__file__).resolve().parents[1]  # tests/: `call: support.queued:tick` imports
REPO = HERE.parent
TIMEOUT = 300  # a safety net only: every wait ends on an event first


def _ledger() -> Path:
    return Path(os.environ["AIRUN_TEST_LEDGER"])


def tick(run: str, step: str, value: Any = None) -> Any:
    with open(_ledger(), "a") as fh:
        fh.write(f"{run} {step} {os.getpid()}\n")
    return value


def hold(run: str, step: str) -> str:
    ledger = _ledger()
    Path(f"{ledger}.holding.{os.getpid()}").write_text(run)
    release = Path(f"{ledger}.release")
    while not release.exists():  # the test creates it: the event this body waits for
        time.sleep(0.05)
    tick(run, step)
    return step


def env(db: Path | str, ledger: Path, **extra: str) -> dict[str, str]:
    """The environment of `airun` processes: this store, this ledger, the helpers importable."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_TEST")}
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE)])
    out.update(AIRUN_DB=str(db), AIRUN_TEST_LEDGER=str(ledger), AIRUN_CALL_MODULES="*")
    out.update(extra)
    return out


def airun(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIRUN, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def worker(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """A worker process (stdout and stderr to a file beside the store, read with ``said``)."""
    log = open(cwd / f"worker-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - kept by Popen
    proc = subprocess.Popen(
        [*AIRUN, "worker", "--poll", "0.05", *args],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log = log.name  # type: ignore[attr-defined]
    return proc


def said(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log).read_text()  # type: ignore[attr-defined]


def counts(ledger: Path) -> Counter[tuple[str, str]]:
    """How many times each (run, step) body ran."""
    if not ledger.exists():
        return Counter()
    lines = [line.split() for line in ledger.read_text().splitlines() if line.strip()]
    return Counter((run, step) for run, step, _pid in lines)


def wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen[str] | None = None) -> Path:
    """The first file matching ``glob`` in ``folder`` (a body's marker), once it appears; fails
    if ``proc`` ends first."""
    folder, pattern = path_glob
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker ended before {pattern} appeared:\n{said(proc)}")
        time.sleep(0.05)
    raise AssertionError(f"{pattern} never appeared in {folder}")


def rows(db: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """A read of the store (a file or a team store's URL) through airun_nb (it folds every
    process's journal first)."""
    from airun_nb.store.opening import open_store

    store = open_store(db, create=False)
    try:
        return store.query(sql)
    finally:
        store.release()


# A queued run of two steps that count themselves in the ledger (the drain tests' workflow).
TWO_STEPS = """\
name: drained
params: {n: 0}
steps:
  - id: first
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: first, value: "{{ params.n }}"}
  - id: second
    needs: [first]
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: second}
"""
