"""Crashes on the PostgreSQL team store: a process SIGKILLed mid-step (and after its gate was
approved, mid-continuation), an ``airun exec`` process SIGKILLed mid-rollback (one of two
compensations done, the other in flight), and a kernel SIGKILLed while its run waits at a gate;
then three processes resume (or finish rolling back) the run at the same moment.

Exactly one of them executes the rest of the run; the others are refused ("run is busy") or
find nothing left to do, and no step that finished runs twice: a ledger file outside the store
counts every step body with the pid that ran it. Real processes, real SIGKILL, a real server;
the dead owner is told apart by its run lock, which the server dropped with its connection.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import airun_nb
from support.postgres import REPO

BODIES = textwrap.dedent(
    """\
    import os, pathlib, time

    def _tick(name):
        folder = pathlib.Path(os.environ["PG_CRASH_DIR"])
        with open(folder / "ledger", "a") as out:
            out.write(f"{name} {os.getpid()}\\n")
        if os.environ.get("PG_CRASH_HANG") == name:
            (folder / "hanging").touch()
            time.sleep(600)
        return name

    def a():
        return _tick("a")

    def b():
        return _tick("b")

    def c():
        return _tick("c")
    """
)

PLAIN = """
name: crashy
steps:
  - id: a
    call: pgcrashbodies:a
  - id: b
    call: pgcrashbodies:b
    needs: [a]
  - id: c
    call: pgcrashbodies:c
    needs: [b]
"""
GATED = """
name: crashy
steps:
  - id: a
    call: pgcrashbodies:a
  - id: gate
    needs: [a]
    approval: {message: "go?"}
  - id: b
    call: pgcrashbodies:b
    needs: [gate]
  - id: c
    call: pgcrashbodies:c
    needs: [b]
"""

RUNNER = textwrap.dedent(
    """\
    import os, pathlib, sys, time
    import airun_nb
    from airun_nb import Workflow
    folder = pathlib.Path(os.environ["PG_CRASH_DIR"])
    wf = Workflow.from_yaml((folder / "wf.yaml").read_text())
    mode = sys.argv[1]
    if mode == "start":
        result = wf.run(db=os.environ["PG_CRASH_DB"])
    else:
        (folder / f"ready-{os.getpid()}").touch()
        while not (folder / "go").exists():
            time.sleep(0.01)
        try:
            result = wf.run(db=os.environ["PG_CRASH_DB"], resume=sys.argv[2])
        except airun_nb.RunBusy as exc:
            print("BUSY", exc.message)
            sys.exit(0)
    print("STATUS", result.run_id, result.status)
    """
)


AIRUN_CLI = "from airun_nb.cli.main import main; main()"  # `airun` in this interpreter

# A CLI process that waits for the `go` file before it starts, so that several of them begin at
# the same moment: `python gated_cli.py resume RUN --db URL` is `airun resume RUN --db URL`.
GATED_CLI = textwrap.dedent(
    """\
    import os, pathlib, sys, time
    folder = pathlib.Path(os.environ["PG_CRASH_DIR"])
    (folder / f"ready-{os.getpid()}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    from airun_nb.cli.main import main
    sys.argv = ["airun", *sys.argv[1:]]
    main()
    """
)

SAGA_BODIES = textwrap.dedent(
    """\
    import os, pathlib, time

    FOLDER = pathlib.Path(os.environ["PG_CRASH_DIR"])

    def _tick(what):
        with open(FOLDER / "ledger", "a") as out:
            out.write(f"{what} {os.getpid()}\\n")

    def create(name):
        _tick("do_" + name)
        (FOLDER / name).write_text(name)
        return {"name": name}

    def undo(name):
        _tick("undo_" + name)
        if os.environ.get("PG_CRASH_HANG") == "undo_" + name:
            (FOLDER / "hanging").touch()
            time.sleep(600)
        (FOLDER / name).unlink()

    def charge():
        raise ConnectionError("payment gateway down")
    """
)

SAGA = """
name: pg_saga
steps:
  - id: make_a
    call: pgsagabodies:create
    with: {name: A}
    compensate: {call: pgsagabodies:undo, with: {name: A}}
  - id: make_b
    needs: [make_a]
    call: pgsagabodies:create
    with: {name: B}
    compensate: {call: pgsagabodies:undo, with: {name: B}}
  - id: make_c
    needs: [make_b]
    call: pgsagabodies:create
    with: {name: C}
    compensate: {call: pgsagabodies:undo, with: {name: C}}
  - id: charge
    needs: [make_c]
    call: pgsagabodies:charge
"""


def _wait_until(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 120  # a safety net only
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start_together(
    folder: Path, url: str, argv: list[str], n: int = 3
) -> list[tuple[int, str, str]]:
    """Start ``n`` ``airun ARGV...`` processes, let them go at the same moment, and return
    (exit code, stdout, stderr) of each."""
    (folder / "gated_cli.py").write_text(GATED_CLI)
    (folder / "go").unlink(missing_ok=True)
    for ready in folder.glob("ready-*"):
        ready.unlink()
    procs = [
        subprocess.Popen(
            [sys.executable, str(folder / "gated_cli.py"), *argv],
            env=_env(folder, url, None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    _wait_until("every process to be ready", lambda: len(list(folder.glob("ready-*"))) == n)
    (folder / "go").touch()
    outs = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _ledger(folder: Path) -> list[tuple[str, int]]:
    lines = (folder / "ledger").read_text().split("\n")
    return [(ln.split()[0], int(ln.split()[1])) for ln in lines if ln.strip()]


def _env(folder: Path, url: str, hang: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PG_CRASH_DIR=str(folder), PG_CRASH_DB=url, AIRUN_USER="analyst")
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO)])
    env["AIRUN_CALL_MODULES"] = "pgcrashbodies,pgsagabodies"  # the owner lets `call:` reach them
    env.pop("PG_CRASH_HANG", None)
    if hang:
        env["PG_CRASH_HANG"] = hang
    return env


@pytest.mark.slow
@pytest.mark.parametrize("where", ["mid-step", "after-the-gate"])
def test_killed_run_resumed_by_three_processes_at_once(
    pg_url: str, tmp_path: Path, where: str
) -> None:
    """SIGKILL the process executing `b`; three processes then resume the run at once: one
    of them runs `b` again (it was in flight) and `c`, `a` never runs again, and the run ends
    completed."""
    (tmp_path / "pgcrashbodies.py").write_text(BODIES)
    (tmp_path / "wf.yaml").write_text(GATED if where == "after-the-gate" else PLAIN)
    (tmp_path / "runner.py").write_text(RUNNER)
    runner = [sys.executable, str(tmp_path / "runner.py")]
    if where == "after-the-gate":
        first = subprocess.run(
            [*runner, "start"],
            env=_env(tmp_path, pg_url, None),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "waiting" in first.stdout, first.stdout + first.stderr
        run_id = first.stdout.split()[1]
        airun_nb.approve(run_id, "gate", by="lead", db=pg_url)
        victim = subprocess.Popen(
            [*runner, "resume", run_id],
            env=_env(tmp_path, pg_url, "b"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        (tmp_path / "go").touch()
    else:
        victim = subprocess.Popen(
            [*runner, "start"],
            env=_env(tmp_path, pg_url, "b"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    _wait_for(tmp_path / "hanging", victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    (tmp_path / "go").unlink(missing_ok=True)
    run_id = airun_nb.runs(db=pg_url)["run_id"].iloc[0]
    assert airun_nb.runs(db=pg_url)["status"].iloc[0] == "running"  # as the dead owner left it
    before = _ledger(tmp_path)
    for ready in tmp_path.glob("ready-*"):
        ready.unlink()

    resumers = [
        subprocess.Popen(
            [*runner, "resume", run_id],
            env=_env(tmp_path, pg_url, None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=300) for p in resumers]
    assert [p.returncode for p in resumers] == [0, 0, 0], outs
    after = _ledger(tmp_path)[len(before) :]
    # Exactly one process executed the rest of the run.
    assert len({pid for _, pid in after}) == 1, after
    assert Counter(step for step, _ in after) == Counter({"b": 1, "c": 1})
    total = Counter(step for step, _ in _ledger(tmp_path))
    assert total == Counter({"a": 1, "b": 2, "c": 1})  # b was in flight at the kill
    winners = [out for out, _ in outs if "completed" in out]
    assert len(winners) >= 1
    for out, err in outs:
        assert out.startswith(("STATUS", "BUSY")), out + err
        assert "Traceback" not in err
    final = airun_nb.runs(db=pg_url).set_index("run_id").loc[run_id]
    assert final["status"] == "completed"
    attempts = airun_nb.attempts(run_id, db=pg_url)
    b_attempts = attempts[(attempts["step_id"] == "b") & (attempts["phase"] == "execute")]
    assert len(b_attempts) == 2  # the second attempt of b is recorded as such


@pytest.mark.slow
def test_rollback_killed_midway_is_finished_by_one_of_three_processes(
    pg_url: str, tmp_path: Path
) -> None:
    """SIGKILL an `airun exec` process while it rolls back (make_c undone, make_b's undo in
    flight); three `airun rollback RUN` processes then start at once: exactly one of them
    finishes the rollback, make_b's undo runs once more (it was in flight), make_c's never
    again, make_a's once, and no step body runs again."""
    (tmp_path / "pgsagabodies.py").write_text(SAGA_BODIES)
    (tmp_path / "saga.yaml").write_text(SAGA)
    victim = subprocess.Popen(
        [sys.executable, "-c", AIRUN_CLI, "exec", str(tmp_path / "saga.yaml"), "--db", pg_url],
        env=_env(tmp_path, pg_url, "undo_B"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(tmp_path / "hanging", victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    runs = airun_nb.runs(db=pg_url)
    run_id = str(runs["run_id"].iloc[0])
    assert runs["status"].tolist() == ["rolling_back"]  # as the dead process left it
    before = _ledger(tmp_path)
    assert [what for what, _ in before] == ["do_A", "do_B", "do_C", "undo_C", "undo_B"]
    assert sorted(p.name for p in tmp_path.glob("[ABC]")) == ["A", "B"]

    results = _start_together(tmp_path, pg_url, ["rollback", run_id, "--db", pg_url])
    after = _ledger(tmp_path)[len(before) :]
    # Exactly one process did the rest of the rollback; the others were turned away.
    assert len({pid for _, pid in after}) == 1, (after, results)
    assert [what for what, _ in after] == ["undo_B", "undo_A"], after
    winners = [r for r in results if r[0] == 0]
    assert len(winners) == 1, results
    assert "rolled_back" in winners[0][1]
    for code, out, err in results:
        assert "Traceback" not in err, err
        if code != 0:  # a loser says why in one line
            said = (out + err).strip()
            assert len(said.splitlines()) == 1, said
            # (busy, still executing in the winner, or already rolled back by it)
            assert run_id in said, said
            assert any(w in said for w in ("busy", "executing", "rolled back")), said
    assert sorted(p.name for p in tmp_path.glob("[ABC]")) == []
    assert airun_nb.runs(db=pg_url)["status"].tolist() == ["rolled_back"]
    steps = airun_nb.steps(run_id, db=pg_url).set_index("step_id")
    assert steps.loc[["make_a", "make_b", "make_c"], "comp_status"].tolist() == ["done"] * 3
    attempts = airun_nb.attempts(run_id, db=pg_url)
    undo_b = attempts[(attempts["step_id"] == "make_b") & (attempts["phase"] == "compensate")]
    assert sorted(undo_b["attempt"]) == [1, 2]  # the second undo of make_b is recorded as such
    undo_c = attempts[(attempts["step_id"] == "make_c") & (attempts["phase"] == "compensate")]
    assert undo_c["attempt"].tolist() == [1]


@pytest.mark.slow
def test_kernel_killed_at_a_gate_then_three_processes_resume_once_approved(
    pg_url: str, tmp_path: Path
) -> None:
    """A kernel runs a gated workflow on the team store and is SIGKILLed while its run waits at
    the gate. The lead approves from elsewhere; three `airun resume RUN` processes start at
    once: exactly one runs `b` and `c`, `a` never runs again, and the run ends completed with
    the lead's decision on record."""
    from support.crash import Kernel, kernel_env

    (tmp_path / "pgcrashbodies.py").write_text(BODIES)
    ours = _env(tmp_path, pg_url, None)
    env = kernel_env(
        **{k: v for k, v in ours.items() if k.startswith(("AIRUN_", "PG_CRASH", "PYTHONPATH"))}
    )
    env["AIRUN_DB"] = pg_url
    with Kernel(tmp_path / "nb", env=env) as k:
        k.run("%load_ext airun_nb")
        k.run("%%workflow\n" + GATED.strip())
        _wait_until(
            "the run to wait at its gate",
            lambda: airun_nb.runs(db=pg_url)["status"].tolist() == ["waiting"],
        )
        k.kill()
        assert k.wait_dead(60)
    run_id = str(airun_nb.runs(db=pg_url)["run_id"].iloc[0])
    assert [what for what, _ in _ledger(tmp_path)] == ["a"]
    airun_nb.approve(run_id, "gate", by="lead", db=pg_url)

    results = _start_together(tmp_path, pg_url, ["resume", run_id, "--db", pg_url])
    ledger = _ledger(tmp_path)
    assert Counter(step for step, _ in ledger) == Counter({"a": 1, "b": 1, "c": 1}), results
    assert len({pid for step, pid in ledger if step != "a"}) == 1  # one process did the rest
    assert sum(code == 0 and "completed" in out for code, out, _ in results) >= 1, results
    for _code, out, err in results:
        assert "Traceback" not in err, out + err
    final = airun_nb.runs(db=pg_url).set_index("run_id").loc[run_id]
    assert final["status"] == "completed"
    gates = airun_nb.approvals(run_id, db=pg_url)
    assert gates["decision"].tolist() == ["approve"] and gates["actor"].tolist() == ["lead"]
