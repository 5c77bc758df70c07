"""A process killed in the middle of a rollback, for real (SIGKILL), and what happens next.

Kernel tests drive real ``python3`` kernels through nbclient, one cell at a time, in a work
folder of ``tmp_path``: the first kernel runs a workflow that fails and starts rolling back, and is
killed during a compensation (from outside, once the compensation has written a marker, or by the
runtime's own ``AIRUN_CRASH_AT`` hook set with ``os.environ`` in a cell). A fresh kernel then
finishes the rollback by re-running the workflow cell or with ``%workflow rollback RUN``.

Side effects are counted in files outside the store (``log/<what>_<file>.txt``, one line per call
or effect), so the tests know how often each compensation really ran, whatever the store says.
Plain-Python subprocess tests (also killed by ``AIRUN_CRASH_AT``) cover the run's stored outcome
and the ``airun rollback`` command after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

import airun_nb
from support import cell_text

pytestmark = pytest.mark.crash

CELL_TIMEOUT = 120
STARTUP_TIMEOUT = 60

# -- the kernel side ----------------------------------------------------------------------------

LIB = textwrap.dedent(
    '''
    import os, pathlib, time
    ROOT = pathlib.Path.cwd()
    FILES = ROOT / "files"
    LOG = ROOT / "log"
    FILES.mkdir(exist_ok=True)
    LOG.mkdir(exist_ok=True)

    def _log(what, name):
        with open(LOG / f"{what}_{name}.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")

    def create(name):
        _log("do", name)
        p = FILES / name
        p.write_text(name)
        return {"path": str(p)}

    def undo(path):
        """The compensation: delete the file and append to the ledger (the counted effect).

        In a kernel armed with COMP_TEST_HANG=<file name> it first drops a marker and hangs, so
        the test can kill the kernel in the middle of this compensation."""
        p = pathlib.Path(path)
        _log("undo_call", p.name)
        if os.environ.get("COMP_TEST_HANG") == p.name:
            (ROOT / f"hanging_{p.name}").write_text(str(os.getpid()))
            time.sleep(600)
        p.unlink()
        _log("undo_effect", p.name)

    def charge():
        raise ConnectionError("payment gateway down")
    '''
).strip()

FAILING_CELL = textwrap.dedent(
    """
    %%workflow crash_saga
    steps:
      - id: make_a
        call: create
        with: {name: A.txt}
        compensate: {call: undo, with: {path: "{{ steps.make_a.output.path }}"}}
      - id: make_b
        needs: [make_a]
        call: create
        with: {name: B.txt}
        compensate: {call: undo, with: {path: "{{ steps.make_b.output.path }}"}}
      - id: charge
        needs: [make_b]
        call: charge
    """
).strip()

COMPLETING_CELL = textwrap.dedent(
    """
    %%workflow crash_undo
    steps:
      - id: make_a
        call: create
        with: {name: A.txt}
        compensate: {call: undo, with: {path: "{{ steps.make_a.output.path }}"}}
      - id: make_b
        needs: [make_a]
        call: create
        with: {name: B.txt}
        compensate: {call: undo, with: {path: "{{ steps.make_b.output.path }}"}}
    """
).strip()


def kernel_env(workdir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRUN_") and not k.startswith("COMP_TEST_")
    }
    env["AIRUN_DB"] = str(workdir / "store.duckdb")
    return env


class Kernel:
    """A real kernel in ``cwd``, one cell at a time through nbclient."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.nb = nbformat.v4.new_notebook()
        # Async on purpose: nbclient's dead-kernel watchdog only runs with an async client.
        self.km = AsyncKernelManager(kernel_name="python3")
        self.client = NotebookClient(
            self.nb,
            km=self.km,
            timeout=CELL_TIMEOUT,
            startup_timeout=STARTUP_TIMEOUT,
            allow_errors=False,
            resources={"metadata": {"path": str(cwd)}},
        )

    def start(self) -> Kernel:
        self.client.start_new_kernel(env=kernel_env(self.cwd))
        self.client.start_new_kernel_client()
        return self

    @property
    def process(self) -> Any:
        return self.km.provisioner.process  # type: ignore[union-attr]

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, source: str) -> nbformat.NotebookNode:
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def run_allowing_error(self, source: str) -> tuple[nbformat.NotebookNode, str | None]:
        """Run a cell that may end in an error; return it and the error's name, if any."""
        try:
            cell = self.run(source)
        except CellExecutionError as exc:
            return self.nb.cells[-1], str(exc.ename)
        return cell, None

    def run_expecting_death(self, source: str) -> nbformat.NotebookNode:
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        except DeadKernelError:
            deadline = time.monotonic() + 30
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not self.alive(), "nbclient reported a dead kernel, but it lives"
            return cell
        raise AssertionError("the kernel was to die during this cell; it said:\n" + text(cell))

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.client._cleanup_kernel()


@contextlib.contextmanager
def kernel(workdir: Path) -> Iterator[Kernel]:
    k = Kernel(workdir).start()
    try:
        k.run("%load_ext airun_nb")
        k.run(LIB)
        yield k
    finally:
        k.shutdown()


text = cell_text


@contextlib.contextmanager
def kill_when(k: Kernel, marker: Path, timeout: float = 90.0) -> Iterator[dict[str, Any]]:
    """SIGKILL the kernel from outside as soon as ``marker`` exists."""
    state: dict[str, Any] = {"killed": False}
    pid = k.pid

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            state["killed"] = True

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield state
    finally:
        t.join(timeout + 5)


# -- the test side --------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AIRUN_CRASH_AT", raising=False)
    monkeypatch.delenv("AIRUN_DB", raising=False)
    d = tmp_path / "nb"
    d.mkdir()
    return d


def db_of(workdir: Path) -> Path:
    return workdir / "store.duckdb"


def counts(workdir: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in sorted((workdir / "log").glob("*.txt")):
        out[f.stem] = len([ln for ln in f.read_text().splitlines() if ln.strip()])
    return out


def files(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "files").iterdir())


def only_run(workdir: Path) -> dict[str, Any]:
    df = airun_nb.runs(db=db_of(workdir))
    assert len(df) == 1, df[["run_id", "status"]]
    return df.iloc[0].to_dict()


def comp_table(workdir: Path, run_id: str) -> dict[str, tuple[str | None, int]]:
    df = airun_nb.steps(run_id, db=db_of(workdir))
    return {
        r["step_id"]: (
            None if pd.isna(r["comp_status"]) else str(r["comp_status"]),
            int(r["comp_attempts"] or 0),
        )
        for r in df.to_dict("records")
    }


def comp_attempts(workdir: Path, run_id: str, step_id: str) -> list[tuple[int, str, int]]:
    df = airun_nb.attempts(run_id, db=db_of(workdir))
    df = df[(df["step_id"] == step_id) & (df["phase"] == "compensate")].sort_values("attempt")
    return [
        (int(a), str(s), int(p))
        for a, s, p in zip(df["attempt"], df["status"], df["pid"], strict=True)
    ]


def event_count(workdir: Path, run_id: str, kind: str, step_id: str | None = None) -> int:
    df = airun_nb.events(run_id, db=db_of(workdir))
    df = df[df["kind"] == kind]
    if step_id is not None:
        df = df[df["step_id"] == step_id]
    return len(df)


def assert_fully_rolled_back(workdir: Path, run_id: str) -> None:
    assert files(workdir) == [], "both compensations must have taken effect"
    c = counts(workdir)
    assert c["undo_effect_B.txt"] == 1 and c["undo_effect_A.txt"] == 1, c
    assert c["do_A.txt"] == 1 and c["do_B.txt"] == 1, c
    assert only_run(workdir)["status"] == "rolled_back"
    table = comp_table(workdir, run_id)
    assert table["make_a"][0] == "done" and table["make_b"][0] == "done", table
    assert event_count(workdir, run_id, "compensation_done", "make_b") == 1
    assert event_count(workdir, run_id, "compensation_done", "make_a") == 1
    assert event_count(workdir, run_id, "run_rolled_back") == 1


# -- kernels killed mid-rollback -------------------------------------------------------------------


def test_kernel_killed_during_first_compensation_then_cell_rerun(workdir: Path) -> None:
    with kernel(workdir) as k1:
        k1.run('os.environ["COMP_TEST_HANG"] = "B.txt"')
        with kill_when(k1, workdir / "hanging_B.txt") as kill:
            k1.run_expecting_death(FAILING_CELL)
        assert kill["killed"], "the compensation of make_b never started"
    killed_pid = int((workdir / "hanging_B.txt").read_text())

    # What the dead kernel left: a run rolling back, make_b's compensation in flight.
    run = only_run(workdir)
    run_id = str(run["run_id"])
    assert run["status"] == "rolling_back"
    assert comp_table(workdir, run_id)["make_b"] == ("running", 1)
    assert comp_table(workdir, run_id)["make_a"][0] is None
    assert counts(workdir) == {"do_A.txt": 1, "do_B.txt": 1, "undo_call_B.txt": 1}
    assert files(workdir) == ["A.txt", "B.txt"]

    with kernel(workdir) as k2:
        cell, _ = k2.run_allowing_error(FAILING_CELL)
    said = text(cell)

    assert_fully_rolled_back(workdir, run_id)
    c = counts(workdir)
    assert c["undo_call_B.txt"] == 2, "the killed compensation runs again, once"
    assert c["undo_call_A.txt"] == 1
    assert c["do_A.txt"] == 1 and c["do_B.txt"] == 1, "no step runs again during a rollback"
    atts = comp_attempts(workdir, run_id, "make_b")
    assert [(a, s) for a, s, _ in atts][1:] == [(2, "completed")], atts
    assert atts[0][0] == 1 and atts[0][1] != "completed" and atts[0][2] == killed_pid, atts
    assert [(a, s) for a, s, _ in comp_attempts(workdir, run_id, "make_a")] == [(1, "completed")]
    assert comp_table(workdir, run_id)["make_b"] == ("done", 2)
    assert "rolled_back" in said or "rolled back" in said, said


def test_crash_at_compensate_started_then_magic_rollback(workdir: Path) -> None:
    with kernel(workdir) as k1:
        k1.run('os.environ["AIRUN_CRASH_AT"] = "compensate:started"')
        k1.run_expecting_death(FAILING_CELL)

    run = only_run(workdir)
    run_id = str(run["run_id"])
    assert run["status"] == "rolling_back"
    assert comp_table(workdir, run_id)["make_b"] == ("running", 1)
    assert "undo_call_B.txt" not in counts(workdir), "killed before the function was called"

    with kernel(workdir) as k2:
        cell, _ = k2.run_allowing_error(f"%workflow rollback {run_id}")
    said = text(cell)

    assert_fully_rolled_back(workdir, run_id)
    c = counts(workdir)
    assert c["undo_call_B.txt"] == 1 and c["undo_call_A.txt"] == 1, c
    atts = comp_attempts(workdir, run_id, "make_b")
    assert [a for a, _, _ in atts] == [1, 2], atts
    assert atts[0][1] != "completed" and atts[1][1] == "completed", atts
    assert comp_table(workdir, run_id)["make_b"] == ("done", 2)
    assert "rolled" in said, said


def test_crash_after_compensation_recorded_never_reruns_it(workdir: Path) -> None:
    with kernel(workdir) as k1:
        k1.run('os.environ["AIRUN_CRASH_AT"] = "compensate:recorded"')
        k1.run_expecting_death(FAILING_CELL)

    run_id = str(only_run(workdir)["run_id"])
    assert only_run(workdir)["status"] == "rolling_back"
    assert comp_table(workdir, run_id)["make_b"] == ("done", 1)
    assert comp_table(workdir, run_id)["make_a"][0] is None
    assert files(workdir) == ["A.txt"]

    with kernel(workdir) as k2:
        k2.run_allowing_error(FAILING_CELL)

    assert_fully_rolled_back(workdir, run_id)
    c = counts(workdir)
    assert c["undo_call_B.txt"] == 1, "a finished compensation must never run again"
    assert c["undo_call_A.txt"] == 1
    assert [(a, s) for a, s, _ in comp_attempts(workdir, run_id, "make_b")] == [(1, "completed")]
    assert comp_table(workdir, run_id)["make_b"] == ("done", 1)


def test_crash_during_on_demand_rollback_of_completed_run(workdir: Path) -> None:
    with kernel(workdir) as k1:
        k1.run(COMPLETING_CELL)
        run_id = str(only_run(workdir)["run_id"])
        assert files(workdir) == ["A.txt", "B.txt"]
        k1.run('os.environ["AIRUN_CRASH_AT"] = "compensate:started"')
        k1.run_expecting_death(f"%workflow rollback {run_id}")

    assert only_run(workdir)["status"] == "rolling_back"
    with kernel(workdir) as k2:
        cell = k2.run(f"%workflow rollback {run_id}")  # must not raise: the undo succeeds
    assert "rolled_back" in text(cell)
    assert_fully_rolled_back(workdir, run_id)
    assert counts(workdir)["undo_call_A.txt"] == 1


# -- plain processes killed mid-rollback: the stored outcome and the CLI ----------------------------

MODULE = textwrap.dedent(
    """
    import pathlib

    def create(path):
        pathlib.Path(path).write_text("x")
        return {"path": path}

    def undo(path):
        p = pathlib.Path(path)
        with open(p.parent / "ledger.txt", "a") as f:
            f.write(p.name + "\\n")
        p.unlink()

    def charge():
        raise ConnectionError("payment gateway down")
    """
)

SCRIPT = textwrap.dedent(
    '''
    import sys
    import airun_nb

    folder = sys.argv[1]
    text = f"""
    name: cli_saga
    steps:
      - id: make_a
        call: "crashmod:create"
        with: {{path: "{folder}/A.txt"}}
        compensate: {{call: "crashmod:undo", with: {{path: "{{{{ steps.make_a.output.path }}}}"}}}}
      - id: make_b
        needs: [make_a]
        call: "crashmod:create"
        with: {{path: "{folder}/B.txt"}}
        compensate: {{call: "crashmod:undo", with: {{path: "{{{{ steps.make_b.output.path }}}}"}}}}
      - id: charge
        needs: [make_b]
        call: "crashmod:charge"
    """
    try:
        airun_nb.Workflow.from_yaml(text).run()
        print("RESULT completed")
    except airun_nb.WorkflowFailed as exc:
        print("RESULT", exc.status, exc.run_id)
    '''
)


def py(
    root: Path, args: list[str], *, db: Path | str, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env["AIRUN_DB"] = str(db)
    env["AIRUN_CALL_MODULES"] = "crashmod"  # the owner lets `call:` reach the saga's module
    if crash_at:
        env["AIRUN_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def proc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AIRUN_CRASH_AT", raising=False)
    root = tmp_path / "proc"
    root.mkdir()
    (root / "crashmod.py").write_text(MODULE)
    (root / "saga.py").write_text(SCRIPT)
    for sub in ("crashed", "reference"):
        (root / sub).mkdir()
    return root


@pytest.fixture
def stores(
    backend: str, proc_root: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """Two empty stores of the backend in force: ``crashed`` and ``reference`` (DuckDB files in
    the work folder, or two databases on the PostgreSQL test server)."""
    if backend == "duckdb":
        yield {"crashed": proc_root / "crashed.duckdb", "reference": proc_root / "reference.duckdb"}
        return
    from support.postgres import create_database, drop_database

    server = request.getfixturevalue("pg_server")
    made = {name: create_database(server) for name in ("crashed", "reference")}
    try:
        yield made
    finally:
        for url in made.values():
            drop_database(server, url)


def crash_mid_rollback(root: Path, db: Path | str) -> tuple[Path | str, str]:
    """Run the saga in a process killed at its first compensation; return (store, run id)."""
    killed = py(root, ["saga.py", str(root / "crashed")], db=db, crash_at="compensate:started")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr)
    df = airun_nb.runs(db=db)
    assert df["status"].tolist() == ["rolling_back"]
    return db, str(df["run_id"].iloc[0])


def test_rollback_finished_after_a_crash_ends_like_an_uninterrupted_one(
    proc_root: Path, stores: dict[str, Any]
) -> None:
    """DESIGN: a killed run resumes to the same final state as one that was never killed (on
    either backend)."""
    ref_db = stores["reference"]
    ref = py(proc_root, ["saga.py", str(proc_root / "reference")], db=ref_db)
    assert "RESULT rolled_back" in ref.stdout, ref
    db, run_id = crash_mid_rollback(proc_root, stores["crashed"])

    again = py(proc_root, ["saga.py", str(proc_root / "crashed")], db=db)
    assert again.returncode == 0, again

    assert (proc_root / "crashed" / "ledger.txt").read_text().split() == ["B.txt", "A.txt"]
    got = airun_nb.runs(db=db).iloc[0]
    want = airun_nb.runs(db=ref_db).iloc[0]
    assert got["status"] == want["status"] == "rolled_back"

    def table(d: Path | str) -> list[tuple[str, str, str | None]]:
        df = airun_nb.steps(db=d)
        return [
            (r["step_id"], r["status"], None if pd.isna(r["comp_status"]) else r["comp_status"])
            for r in df.to_dict("records")
        ]

    assert table(db) == table(ref_db)

    def cell_value(row: pd.Series, col: str) -> str | None:
        return None if pd.isna(row[col]) else str(row[col])

    assert cell_value(want, "failed_step") == "charge"
    assert cell_value(got, "failed_step") == "charge", (
        f"finishing the rollback rewrote the run's failed_step to {cell_value(got, 'failed_step')!r}"
    )
    assert "payment gateway down" in str(cell_value(got, "error")), (
        f"finishing the rollback rewrote the run's error to {cell_value(got, 'error')!r}"
    )
    assert f"RESULT rolled_back {run_id}" in again.stdout, (
        "re-running the workflow that finishes the rollback should report the failure like the "
        f"uninterrupted run did; it printed {again.stdout!r}"
    )


def test_cli_rollback_finishes_an_interrupted_rollback(
    proc_root: Path, stores: dict[str, Any]
) -> None:
    """`airun rollback RUN` finishes the rollback a SIGKILL interrupted (on either backend)."""
    db, run_id = crash_mid_rollback(proc_root, stores["crashed"])
    done = py(
        proc_root,
        ["-c", "from airun_nb.cli.main import main; main()", "rollback", run_id, "--db", str(db)],
        db=db,
    )
    assert (proc_root / "crashed" / "ledger.txt").read_text().split() == ["B.txt", "A.txt"]
    assert airun_nb.runs(db=db)["status"].tolist() == ["rolled_back"]
    assert done.returncode == 0, (
        "`airun rollback RUN` did what was asked (the run is rolled_back) but exited "
        f"{done.returncode}: {done.stderr.strip()}"
    )
    assert "rolled_back" in done.stdout
