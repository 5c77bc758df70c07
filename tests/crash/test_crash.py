"""Crash tests: real kernels (nbclient), real SIGKILLs, resume in a fresh kernel.

Each scenario runs a workflow in a kernel that dies mid-run (killed from outside, or by the
``AIRUN_CRASH_AT`` test hook at an exact point), then re-runs the same ``%%workflow`` cell in a
fresh kernel in the same folder (same store) and checks that

(i)   every step that had finished before the kill ran exactly once in total (counted by a side
      effect outside the store: ``counts/<step>.txt``);
(ii)  the step that was in flight at the kill ran again as attempt 2 (and no other step did);
(iii) the final outputs equal those of an uninterrupted run of the same workflow in another
      store;
(iv)  the run completed under the single run id the crashed kernel had started (the re-run
      cell resumed it, it did not start a new run).
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from support import crash as cs
from support.crash import Kernel

pytestmark = [pytest.mark.crash, pytest.mark.timeout(120)]

RUN_ID = re.compile(r"\br-[0-9a-f]{8}\b")
PRE_RESUME = (
    "import pickle\n"
    "with open('pre_resume.pkl', 'wb') as _f:\n"
    "    pickle.dump({'runs': airun_nb.runs(), 'steps': airun_nb.steps()}, _f)\n"
    "print(airun_nb.runs()[['run_id', 'workflow', 'status']].to_string())"
)

# --------------------------------------------------------------------------- reference runs
_REFERENCES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """The outcome of an uninterrupted run of a workflow, in its own store (cached)."""

    def get(workflow_cell: str) -> dict[str, Any]:
        if workflow_cell not in _REFERENCES:
            d = tmp_path_factory.mktemp("reference")
            cs.run_workflow(d, workflow_cell)
            ref = cs.load_dump(d)
            assert ref["status"] == "completed", ref
            ref["counts"] = cs.counts(d)
            assert set(ref["counts"].values()) == {1}, ref["counts"]
            _REFERENCES[workflow_cell] = ref
        return _REFERENCES[workflow_cell]

    return get


# --------------------------------------------------------------------------- helpers
def crash_run(
    workdir: Path, workflow_cell: str, pre: list[str], *, kill_when=None, kill_delay: float = 0.0
) -> tuple[str | None, dict[str, Any] | None]:
    """Run the workflow cell in a kernel that must die during it.

    Without ``kill_when`` the kernel is expected to kill itself (AIRUN_CRASH_AT); with it a
    thread SIGKILLs the kernel from outside once ``kill_when()`` holds (+ ``kill_delay``).
    Returns the run id the dying kernel showed (if its display got out) and the killer state.
    """
    with Kernel(workdir) as k:
        k.run("%load_ext airun_nb")
        k.run(cs.STEP_LIB)
        for src in pre:
            k.run(src)
        pid = k.pid
        if kill_when is None:
            cell = k.run_expecting_death(workflow_cell)
            state = None
        else:
            with cs.killer(k, when=kill_when, delay=kill_delay, timeout=30) as state:
                cell = k.run_expecting_death(workflow_cell)
            assert state["error"] is None, state
            assert state["killed"], state
        assert not k.alive()
    _assert_pid_gone(pid)
    ids = set(RUN_ID.findall(cs.text_of(cell)))
    assert len(ids) <= 1, ids
    return (ids.pop() if ids else None), state


def _assert_pid_gone(pid: int) -> None:
    import os

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    cs.wait_for(gone, 10, f"kernel pid {pid} to be gone")


def resume_run(workdir: Path, workflow_cell: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Re-run the same workflow cell in a FRESH kernel in the same folder (same store)."""
    with Kernel(workdir) as k:
        k.run("%load_ext airun_nb")
        k.run(cs.STEP_LIB)
        k.run(PRE_RESUME)  # the store opens after the crash (and shows the dead run)
        cell = k.run(workflow_cell)
        k.run(cs.dump_cell())
    pre = cs.load_dump(workdir, "pre_resume.pkl")
    return pre, cs.load_dump(workdir), cs.text_of(cell)


def assert_converged(
    workdir: Path,
    ref: dict[str, Any],
    pre: dict[str, Any],
    final: dict[str, Any],
    summary: str,
    *,
    crashed_run: str | None,
    finished_before: set[str],
    interrupted: str | None,
    interrupted_body_ran: bool = True,
) -> None:
    step_ids = list(ref["outputs"])
    # --- the store opened after the crash and held exactly one run, still marked running
    runs_before = pre["runs"]
    assert len(runs_before) == 1, runs_before
    run_id = str(runs_before["run_id"].iloc[0])
    assert runs_before["status"].iloc[0] == "running", runs_before
    if crashed_run is not None:
        assert run_id == crashed_run
    steps_before = pre["steps"].set_index("step_id")
    done_before = set(steps_before.index[steps_before["status"] == "completed"])
    assert done_before == finished_before, (done_before, finished_before)
    if interrupted is not None:
        assert steps_before.loc[interrupted, "status"] == "running", steps_before
        assert steps_before.loc[interrupted, "attempts"] == 1, steps_before

    # --- (iv) the re-run cell resumed that run and completed it: a single run id
    assert final["status"] == "completed", final
    assert final["mode"] == "resume", final["mode"]
    assert final["run_id"] == run_id
    runs_after = final["runs"]
    assert list(runs_after["run_id"]) == [run_id], runs_after
    assert list(runs_after["status"]) == ["completed"], runs_after
    assert f"run {run_id}: resuming" in summary, summary
    assert sorted(final["replayed"]) == sorted(finished_before), final["replayed"]
    assert sorted(final["executed"]) == sorted(set(step_ids) - finished_before)

    # --- (i) finished steps ran exactly once in total; (ii) the interrupted one is attempt 2
    counts = cs.counts(workdir)
    for step in ref["counts"]:
        expected = 1
        if step == interrupted and interrupted_body_ran:
            expected = 2
        assert counts.get(step) == expected, (step, counts)
    steps = final["steps"].set_index("step_id")
    assert list(steps.index) == step_ids
    assert (steps["status"] == "completed").all(), steps
    for step in step_ids:
        want = 2 if step == interrupted else 1
        assert steps.loc[step, "attempts"] == want, (step, steps[["status", "attempts"]])
    att = final["attempts"]
    execute = att[att["phase"] == "execute"]
    per_step = execute.groupby("step_id")["attempt"].max().to_dict()
    assert per_step == {s: (2 if s == interrupted else 1) for s in step_ids}, per_step
    if interrupted is not None:
        rows = execute[execute["step_id"] == interrupted].sort_values("attempt")
        assert list(rows["attempt"]) == [1, 2], rows
        assert rows["status"].iloc[-1] == "completed", rows
        # attempt 1 ran in the dead kernel, attempt 2 in the fresh one
        assert rows["pid"].iloc[0] != rows["pid"].iloc[1], rows

    # --- (iii) outputs equal an uninterrupted run's
    assert_same_outputs(final["outputs"], ref["outputs"])


def assert_same_outputs(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for step, value in want.items():
        if isinstance(value, pd.DataFrame):
            assert isinstance(got[step], pd.DataFrame), (step, type(got[step]))
            pd.testing.assert_frame_equal(got[step], value, check_exact=True, obj=step)
        else:
            assert got[step] == value, (step, got[step], value)


def raw_store_opens(db: Path) -> list[tuple[Any, ...]]:
    """Open the DuckDB file as plain DuckDB (no airun_nb recovery): it must not be damaged."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert {"runs", "steps", "attempts", "events", "airun_meta"} <= tables, tables
        return con.execute("SELECT run_id, status FROM runs").fetchall()
    finally:
        con.close()


# --------------------------------------------------------------------------- (a) kill inside a step
def test_kill_inside_a_step(tmp_path: Path, reference) -> None:
    ref = reference(cs.WF_ORDERS)
    marker = tmp_path / "in_enrich.marker"
    crashed_run, _ = crash_run(
        tmp_path,
        cs.WF_ORDERS,
        ["os.environ['AIRUN_TEST_SLOW'] = '30'"],
        kill_when=marker.exists,
    )
    assert crashed_run is not None  # the live table was drawn long before the kill
    assert cs.counts(tmp_path) == {"orders": 1, "rates": 1, "enrich": 1}
    pre, final, summary = resume_run(tmp_path, cs.WF_ORDERS)
    assert "runs: enrich (was in flight when its process died (attempt 1))" in summary, summary
    assert_converged(
        tmp_path,
        ref,
        pre,
        final,
        summary,
        crashed_run=crashed_run,
        finished_before={"orders", "rates"},
        interrupted="enrich",
    )


# --------------------------------------------------------------------------- (b) kill mid-commit
@pytest.mark.parametrize("point", ["fold:before_commit", "fold:after_commit"])
@pytest.mark.parametrize(
    "trigger, finished_before, interrupted",
    [
        # AIRUN_CRASH_AT set in a cell before the workflow, at the same instant of the commit
        # of step 'orders' DataFrame output table (output:before_commit / output:after_commit);
        # 'rates' has finished, but its completion record is still only in the journal.
        ("output", {"rates"}, "orders"),
        # Armed from inside step 'audit', whose history query folds the journal: the fold that
        # dies carries the completion of 'clean' (a DataFrame, its table already committed).
        ("query", {"rates", "orders", "clean"}, "audit"),
        # Armed in 'enrich', which then sleeps 2 s: the store's keeper thread folds and lets go
        # of the file once the kernel has been idle for 0.25 s, and dies in that fold.
        ("idle", {"rates", "orders", "clean", "audit"}, "enrich"),
    ],
    ids=["dataframe-output", "history-query", "keeper-idle-release"],
)
def test_kill_while_checkpoint_commits(
    tmp_path: Path,
    reference,
    point: str,
    trigger: str,
    finished_before: set[str],
    interrupted: str,
) -> None:
    ref = reference(cs.WF_FOLD)
    if trigger == "output":
        pre = [f"os.environ['AIRUN_CRASH_AT'] = {point.replace('fold:', 'output:')!r}"]
    elif trigger == "query":
        pre = [f"os.environ['AIRUN_TEST_ARM'] = 'audit@{point}'"]
    else:
        pre = [
            f"os.environ['AIRUN_TEST_ARM'] = 'enrich@{point}'",
            "os.environ['AIRUN_TEST_SLOW'] = '2'",
        ]
    crashed_run, _ = crash_run(tmp_path, cs.WF_FOLD, pre)
    # The DuckDB file is intact as plain DuckDB sees it, before any airun_nb recovery.
    rows = raw_store_opens(tmp_path / "airun.duckdb")
    if trigger == "output" or (trigger == "query" and point == "fold:before_commit"):
        assert rows == []  # no fold has committed yet: the whole run lives in the journal
    else:
        assert [r[1] for r in rows] == ["running"], rows
    assert (tmp_path / "airun.duckdb.journal").stat().st_size > 0
    pre_state, final, summary = resume_run(tmp_path, cs.WF_FOLD)
    assert_converged(
        tmp_path,
        ref,
        pre_state,
        final,
        summary,
        crashed_run=crashed_run,
        finished_before=finished_before,
        interrupted=interrupted,
    )


# --------------------------------------------------------------------------- (c) kill between steps
@pytest.mark.parametrize(
    "workflow, arm, finished_before, interrupted, body_ran",
    [
        # In a cell before the workflow: dies right after the first step's completion record
        # ('rates' runs alone first in fold_report; in orders_report two steps start together).
        (cs.WF_FOLD, "cell:step:recorded", {"rates"}, None, False),
        # Armed in 'enrich': dies right after enrich's completion record, before 'totals'.
        (cs.WF_ORDERS, "enrich@step:recorded", {"orders", "rates", "enrich"}, None, False),
        # Armed in 'enrich': dies after the next step ('totals') is recorded as started.
        (cs.WF_ORDERS, "enrich@step:started", {"orders", "rates", "enrich"}, "totals", False),
        # Armed in 'enrich': dies after enrich's body returned, before its output is recorded.
        (cs.WF_ORDERS, "enrich@step:returned", {"orders", "rates"}, "enrich", True),
    ],
    ids=["after-first-step", "between-enrich-and-totals", "totals-started", "enrich-returned"],
)
def test_kill_between_steps(
    tmp_path: Path,
    reference,
    workflow: str,
    arm: str,
    finished_before: set[str],
    interrupted: str | None,
    body_ran: bool,
) -> None:
    ref = reference(workflow)
    if arm.startswith("cell:"):
        pre = [f"os.environ['AIRUN_CRASH_AT'] = {arm[5:]!r}"]
    else:
        pre = [f"os.environ['AIRUN_TEST_ARM'] = {arm!r}"]
    crashed_run, _ = crash_run(tmp_path, workflow, pre)
    pre_state, final, summary = resume_run(tmp_path, workflow)
    assert_converged(
        tmp_path,
        ref,
        pre_state,
        final,
        summary,
        crashed_run=crashed_run,
        finished_before=finished_before,
        interrupted=interrupted,
        interrupted_body_ran=body_ran,
    )


# --------------------------------------------------------------------------- history after a crash
def test_history_closes_the_attempt_that_died(tmp_path: Path) -> None:
    """After the resume, attempt 1 of the step that died must not still read 'running'.

    The crashed attempt's row is only ever written as 'running' (by the dead kernel); the
    resume records attempt 2 but leaves attempt 1 open, so ``airun_nb.attempts()`` of a
    completed run shows an attempt running forever (no finished_at) in a process that is gone.
    """
    crash_run(tmp_path, cs.WF_ORDERS, ["os.environ['AIRUN_TEST_ARM'] = 'enrich@step:returned'"])
    _, final, _ = resume_run(tmp_path, cs.WF_ORDERS)
    assert final["status"] == "completed"
    att = final["attempts"]
    dead = att[(att["step_id"] == "enrich") & (att["attempt"] == 1)]
    assert len(dead) == 1, att
    assert dead["status"].iloc[0] != "running", (
        "attempt 1 of 'enrich' died with its kernel but is still recorded as running after the "
        f"run completed:\n{att[['step_id', 'attempt', 'status', 'finished_at', 'pid']].to_string()}"
    )


# --------------------------------------------------------------------------- randomized
CHAIN = cs.chain_workflow(30)


@pytest.mark.parametrize("seed", range(5))
def test_kill_at_random_instant(tmp_path: Path, reference, seed: int) -> None:
    ref = reference(CHAIN)
    rng = random.Random(1000 + seed)
    delay = rng.uniform(0.0, 1.2)  # the 30 steps take >= 1.5 s after s01 starts
    first = tmp_path / "counts" / "s01.txt"
    t0 = time.monotonic()
    crashed_run, _ = crash_run(tmp_path, CHAIN, [], kill_when=first.exists, kill_delay=delay)
    before = cs.counts(tmp_path)
    assert 1 <= len(before) < 30, before
    _, final, summary = resume_run(tmp_path, CHAIN)
    assert "resuming" in summary, summary
    elapsed = time.monotonic() - t0
    assert final["status"] == "completed"
    assert final["mode"] == "resume"
    assert list(final["runs"]["run_id"]) == [final["run_id"]]
    if crashed_run is not None:
        assert final["run_id"] == crashed_run

    counts = cs.counts(tmp_path)
    step_ids = [f"s{i:02d}" for i in range(1, 31)]
    assert sorted(counts) == step_ids, counts
    twice = [s for s in step_ids if counts[s] == 2]
    assert all(counts[s] in (1, 2) for s in step_ids), counts
    assert len(twice) <= 1, (twice, counts)
    steps = final["steps"].set_index("step_id")
    again = [s for s in step_ids if steps.loc[s, "attempts"] == 2]
    assert all(steps.loc[s, "attempts"] in (1, 2) for s in step_ids), steps["attempts"]
    assert len(again) <= 1, again
    assert set(twice) <= set(again), (twice, again)  # a body that ran twice is attempt 2
    # Replayed steps are exactly those whose body ran only in the dead kernel.
    for s in final["replayed"]:
        assert counts[s] == 1 and before.get(s) == 1, (s, counts, before)
    assert_same_outputs(final["outputs"], ref["outputs"])
    print(
        f"seed {seed}: kill after {delay:.2f} s, {len(before)} steps started, "
        f"re-ran {again or 'none'}, {elapsed:.1f} s"
    )
