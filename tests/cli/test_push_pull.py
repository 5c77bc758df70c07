"""``airun pull`` and ``airun push`` as a user types them, each in its own process: a failed
run pulled from the team store, fixed by a fork here, and the fix pushed back; refusals and bad
paths are one line; a password in a URL is never printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airun_nb.gates import gate
from airun_nb.store.database import Store
from airun_nb.store.opening import open_store
from airun_nb.workflow import Workflow
from support import AIRUN
from support.crash import wait_for

SPEC = """
params: {d: 0}
on_failure: stop
steps:
  - id: load
    python: |
      import pandas as pd
      result = pd.DataFrame({"region": ["north", "south"], "amount": [1.5, 2.0]})
  - id: review
    needs: [load]
    approval: {message: "Go on?"}
  - id: totals
    needs: [review]
    sql: select sum(amount) as total from {{ steps.load }}
  - id: div
    needs: [totals]
    retry: {attempts: 2, initial: 0s}
    python: |
      result = 10 / params["d"]
"""


def airun(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIRUN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints (exit 1, nothing on stdout, no traceback)."""
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def team_run(tmp_path: Path) -> str:
    """A failed run in ``team.duckdb``: a DataFrame, an approved gate, a SQL output, a step
    that failed twice."""
    team = tmp_path / "team.duckdb"
    wf = Workflow.from_yaml(SPEC, name="report")
    first = wf.run(db=team, raise_on_failure=False)
    gate.decide(Store.open(team), first.run_id, "review", "approve", actor="lead", channel="cli")
    assert wf.run(db=team, resume=first.run_id, raise_on_failure=False).status == "failed"
    Store.open(team).release()
    return first.run_id


def test_pull_fork_and_push_back(tmp_path: Path, team_run: str) -> None:
    """The teammate's workflow: pull the failed run (one line saying what came), see it with
    `airun show`, fork it here with the fix, push the fix; the team store lists the fix as
    completed next to the run it fixed."""
    pulled = airun("pull", team_run, "--from", "team.duckdb", "--db", "mine.duckdb", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == (
        f"pulled {team_run}: 4 steps, 4 attempts, 1 gate, 2 output tables from team.duckdb\n"
    )
    shown = airun("show", team_run, "--db", "mine.duckdb", cwd=tmp_path)
    assert "ZeroDivisionError" in shown.stdout and "Approved by lead" in shown.stdout

    forked = airun(
        "fork", team_run, "--from", "div", "-p", "d=4", "--db", "mine.duckdb", cwd=tmp_path
    )
    assert forked.returncode == 0, forked.stdout + forked.stderr
    fix = re.search(r"run (r-[0-9a-f]+) .* completed", forked.stdout)
    assert fix, forked.stdout
    fix_id = fix.group(1)

    pushed = airun("push", fix_id, "--to", "team.duckdb", "--db", "mine.duckdb", cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith(f"pushed {fix_id}: 4 steps, ") and pushed.stdout.endswith(
        "to team.duckdb\n"
    )
    runs = airun("runs", "--db", "team.duckdb", cwd=tmp_path).stdout
    assert re.search(rf"{team_run}\s+report\s+failed", runs), runs
    assert re.search(rf"{fix_id}\s+report\s+completed", runs), runs

    third = airun("pull", fix_id, "--from", "team.duckdb", "--db", "third.duckdb", cwd=tmp_path)
    assert third.stdout.rstrip().endswith(
        f"from team.duckdb (forked from {team_run}, which is not in third.duckdb: copy it too "
        "for the outputs it reuses)"
    ), third.stdout + third.stderr


def test_pull_from_a_team_store_fork_here_and_push_the_fix_back(
    tmp_path: Path, pg_url: str
) -> None:
    """The same day with the team store on PostgreSQL: the failed run is pulled from the server
    into a local file (outputs, gate and attempts with it), forked here with the fix, and the
    fix pushed back to the server, where `airun runs` lists it completed beside the failure."""
    wf = Workflow.from_yaml(SPEC, name="report")
    first = wf.run(db=pg_url, raise_on_failure=False)
    gate.decide(open_store(pg_url), first.run_id, "review", "approve", actor="lead", channel="cli")
    assert wf.run(db=pg_url, resume=first.run_id, raise_on_failure=False).status == "failed"
    run_id = first.run_id

    pulled = airun("pull", run_id, "--from", pg_url, "--db", "mine.duckdb", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.startswith(f"pulled {run_id}: 4 steps, 4 attempts, 1 gate, 2 output")
    shown = airun("show", run_id, "--db", "mine.duckdb", cwd=tmp_path)
    assert "ZeroDivisionError" in shown.stdout and "Approved by lead" in shown.stdout
    forked = airun(
        "fork", run_id, "--from", "div", "-p", "d=4", "--db", "mine.duckdb", cwd=tmp_path
    )
    fix = re.search(r"run (r-[0-9a-f]+) .* completed", forked.stdout)
    assert forked.returncode == 0 and fix, forked.stdout + forked.stderr
    pushed = airun("push", fix.group(1), "--to", pg_url, "--db", "mine.duckdb", cwd=tmp_path)
    assert pushed.returncode == 0 and pushed.stdout.startswith(f"pushed {fix.group(1)}: 4 steps")
    runs = airun("runs", "--db", pg_url, cwd=tmp_path).stdout
    assert re.search(rf"{run_id}\s+report\s+failed", runs), runs
    assert re.search(rf"{fix.group(1)}\s+report\s+completed", runs), runs
    assert open_store(pg_url).step_rows(fix.group(1), "completed")  # the fix's steps are there


def test_a_second_pull_is_refused_unless_replaced(tmp_path: Path, team_run: str) -> None:
    """Pulling a run that is already here is one line and copies nothing; --replace copies."""
    args = ("pull", team_run, "--from", "team.duckdb", "--db", "mine.duckdb")
    assert airun(*args, cwd=tmp_path).returncode == 0
    line = error_line(airun(*args, cwd=tmp_path))
    assert line == (
        f"error: run {team_run} is already in {tmp_path / 'mine.duckdb'}; nothing copied"
    )
    again = airun(*args, "--replace", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith(f"pulled {team_run}:"), again.stderr


def test_a_second_push_to_a_team_store_is_refused_unless_replaced(
    tmp_path: Path, team_run: str, pg_url: str
) -> None:
    """Pushing a run the team store already has is one line and changes nothing there;
    ``--replace`` swaps the server's copy for this one (rolled back here since): its status and
    steps are this store's, no row of the old copy is left, and its outputs still read."""
    args = ("push", team_run, "--to", pg_url, "--db", "team.duckdb")
    first = airun(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    server = open_store(pg_url)
    before = server.step_rows(team_run)
    line = error_line(airun(*args, cwd=tmp_path))
    assert line.startswith(f"error: run {team_run} is already in postgresql://")
    assert line.endswith("; nothing copied"), line
    assert server.step_rows(team_run) == before

    rolled = airun("rollback", team_run, "--db", "team.duckdb", cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr
    again = airun(*args, "--replace", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith(f"pushed {team_run}:"), again.stderr
    assert server.run_row(team_run)["status"] == "rolled_back"  # type: ignore[index]
    local = Store.open(tmp_path / "team.duckdb")
    assert len(server.step_rows(team_run)) == len(local.step_rows(team_run))
    copies = server.query("SELECT count(*) FROM runs WHERE run_id = ?", [team_run])
    assert copies == [(1,)]
    shown = airun("show", team_run, "--db", pg_url, cwd=tmp_path)
    assert shown.returncode == 0 and "rolled_back" in shown.stdout, shown.stdout + shown.stderr


def test_a_pull_killed_before_it_commits_leaves_nothing(tmp_path: Path, team_run: str) -> None:
    """A pull SIGKILLed just before its transaction commits leaves a destination that opens
    and holds no part of the run (no rows, no output table); the next pull copies it whole."""
    args = ("pull", team_run, "--from", "team.duckdb", "--db", "mine.duckdb")
    killed = airun(*args, cwd=tmp_path, AIRUN_CRASH_AT="import:before_commit")
    assert killed.returncode == -9, killed.stderr
    mine = Store.open(tmp_path / "mine.duckdb")
    assert not mine.has_run(team_run)
    assert mine.query("SELECT count(*) FROM steps")[0][0] == 0
    assert mine.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'outputs'"
    ) == [(0,)]
    mine.release()
    again = airun(*args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith(f"pulled {team_run}: 4 steps"), (
        again.stderr
    )


def test_bad_stores_are_one_line(tmp_path: Path, team_run: str) -> None:
    """A missing source, a file that is not a store, a folder that does not exist, the same
    store on both sides, a run the source does not have: one line each."""
    (tmp_path / "notes.duckdb").write_text("not a database")
    cases = {
        (
            "pull",
            team_run,
            "--from",
            "nope.duckdb",
        ): "there is no store at nope.duckdb (check --from)",
        ("pull", team_run, "--from", "notes.duckdb"): "is not an airun_nb store",
        ("pull", team_run, "--from", "team.duckdb", "--db", "no/such/dir.duckdb"): (
            "folder no/such does not exist"
        ),
        ("push", team_run, "--to", "nope.duckdb", "--db", "team.duckdb"): "check --to",
        ("push", team_run, "--to", "team.duckdb", "--db", "team.duckdb"): "are one store",
        ("pull", "r-nope", "--from", "team.duckdb", "--db", "mine.duckdb"): "no run 'r-nope'",
    }
    for args, said in cases.items():
        line = error_line(airun(*args, cwd=tmp_path))
        assert line.startswith("error: ") and said in line, (args, line)
    assert not (tmp_path / "nope.duckdb").exists()


def test_a_password_in_a_url_is_never_printed(tmp_path: Path, team_run: str) -> None:
    """A store URL with a password, in --from and in --to: the line shows ``user:***@``."""
    url = "postgresql://ann:hunter2@127.0.0.1:9/team"
    for args in (
        ("pull", team_run, "--from", url, "--db", "mine.duckdb"),
        ("push", team_run, "--to", url, "--db", "team.duckdb"),
    ):
        proc = airun(*args, cwd=tmp_path)
        assert proc.returncode == 1
        assert "hunter2" not in proc.stdout + proc.stderr
        assert "ann:***@" in error_line(proc)


def test_a_run_being_executed_is_not_pushed(tmp_path: Path) -> None:
    """While a live process executes a run, `airun push` of it is one line naming the process,
    and the destination gets nothing; afterwards the push goes through."""
    go = tmp_path / "go"
    spec = textwrap.dedent(
        f"""
        steps:
          - id: work
            python: |
              import pathlib, time
              while not pathlib.Path({str(go)!r}).exists():
                  time.sleep(0.02)
              result = 1
        """
    )
    code = (
        "from airun_nb.workflow import Workflow\n"
        f"r = Workflow.from_yaml({spec!r}, name='waits').run(db='mine.duckdb')\n"
        "print(r.run_id, r.status)\n"
    )
    Store.open(tmp_path / "team.duckdb").release()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    mine = tmp_path / "mine.duckdb"
    try:

        def executing() -> list[str]:
            if not mine.exists():
                return []
            return [r["run_id"] for r in Store.open(mine).runs_with_status("running")]

        wait_for(lambda: bool(executing()), 120, "the run to be executing")
        run_id = executing()[0]
        line = error_line(
            airun("push", run_id, "--to", "team.duckdb", "--db", "mine.duckdb", cwd=tmp_path)
        )
        assert line.startswith(f"error: run {run_id} is running in ")
        assert f"(pid {proc.pid} on " in line and line.endswith("; nothing copied")
        go.write_text("")
    finally:
        out, _ = proc.communicate(timeout=120)
    assert out.split() == [run_id, "completed"]
    assert not Store.open(tmp_path / "team.duckdb").has_run(run_id)
    pushed = airun("push", run_id, "--to", "team.duckdb", "--db", "mine.duckdb", cwd=tmp_path)
    assert (
        pushed.stdout
        == f"pushed {run_id}: 1 step, 1 attempt, 0 gates, 0 output tables to team.duckdb\n"
    )


def test_help_lists_both_commands(tmp_path: Path) -> None:
    """`airun --help` names push and pull with their one-line help."""
    out = airun("--help", cwd=tmp_path).stdout
    assert re.search(r"^\s+pull\s+Copy a run", out, re.M) and re.search(
        r"^\s+push\s+Copy a run", out, re.M
    )
