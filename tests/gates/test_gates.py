"""Approval gates: who may decide, first decision wins, rollback on rejection, timeouts, policy
and wait modes, notifications, the approvals history, and the gate widget in a real IPython shell.

Everything is real: stores on both backends (DuckDB files in tmp_path, PostgreSQL databases),
``airun`` in subprocesses, an HTTP server on 127.0.0.1, ipywidgets buttons clicked through their
own ``click()``. No assertion depends on how long something took; waits are bounded loops that
fail with a message.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import airun_nb
from airun_nb import AlreadyDecided, ApprovalError, Workflow, WorkflowFailed
from airun_nb.gates import gate as gate_mod
from airun_nb.result import RunResult
from support import AIRUN

# The CLI entry point (`airun = airun_nb.cli.main:main`), run the way the console script runs it.


# -- the workflow under test -------------------------------------------------------------------
# Every side effect goes to a file in the working directory (tmp_path), so it is visible from
# any process and counts exactly how often each step (and its compensation) really ran.


def _effect(what: str) -> None:
    with open("effects.log", "a") as fh:
        fh.write(what + "\n")


def effects() -> list[str]:
    p = Path("effects.log")
    return p.read_text().split() if p.exists() else []


def prepare() -> dict[str, Any]:
    _effect("prepare")
    return {"rows": 3, "table": "orders"}


def unprepare() -> None:
    _effect("unprepare")


def ship(decision: dict[str, Any]) -> dict[str, Any]:
    _effect("ship")
    return {"shipped": True, "approved_by": decision["actor"], "channel": decision["channel"]}


def namespace(**extra: Any) -> dict[str, Any]:
    return {"prepare": prepare, "unprepare": unprepare, "ship": ship, **extra}


def spec(
    approval: dict[str, Any] | None = None,
    *,
    name: str = "deploy",
    second: dict[str, Any] | None = None,
    **top: Any,
) -> str:
    """prepare (compensated) -> review (the gate) [-> publish (a 2nd gate)] -> ship."""
    gate = {
        "message": "Ship {{ steps.prepare.output.rows }} rows of {{ steps.prepare.output.table }}?"
    }
    gate.update(approval or {})
    steps: list[dict[str, Any]] = [
        {"id": "prepare", "call": "prepare", "compensate": {"call": "unprepare"}},
        {"id": "review", "needs": ["prepare"], "approval": gate},
    ]
    last = "review"
    if second is not None:
        steps.append({"id": "publish", "needs": ["review"], "approval": second})
        last = "publish"
    steps.append(
        {
            "id": "ship",
            "needs": [last],
            "call": "ship",
            "with": {"decision": "{{ steps.review.output }}"},
            "output": "shipped",
        }
    )
    return yaml.safe_dump({"name": name, **top, "steps": steps}, sort_keys=False)


def run(text: str, db: Path, ns: dict[str, Any] | None = None, **kw: Any) -> RunResult:
    return Workflow.from_yaml(text).run(
        db=db, namespace=ns if ns is not None else namespace(), raise_on_failure=False, **kw
    )


def gate_row(db: Path, run_id: str, gate_id: str = "review") -> dict[str, Any]:
    df = airun_nb.approvals(run_id, db=db)
    rows = df[df["gate_id"] == gate_id].to_dict("records")
    assert len(rows) == 1, f"expected one approvals row for {gate_id}, got {len(rows)}"
    return rows[0]


def events(db: Path, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    df = airun_nb.events(run_id, db=db)
    if kind is not None:
        df = df[df["kind"] == kind]
    out = []
    for r in df.to_dict("records"):
        r["detail"] = json.loads(r["detail"]) if isinstance(r["detail"], str) else None
        out.append(r)
    return out


def run_status(db: Path, run_id: str) -> str:
    df = airun_nb.runs(db=db)
    return str(df.loc[df["run_id"] == run_id, "status"].iloc[0])


def cli(
    *args: str, user: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if user is not None:
        env["AIRUN_USER"] = user
    return subprocess.run(
        [*AIRUN, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# A gate timeout that the run opening the gate always outlives, however busy the machine (it
# checks the deadline right after opening); tests then wait for the wall clock to pass it.
SHORT = 3.0


def sleep_past(deadline: pd.Timestamp) -> None:
    """Sleep until the wall clock is past a gate's stored deadline."""
    target = deadline.timestamp() + 0.05
    while time.time() < target:
        time.sleep(max(0.01, target - time.time()))


@pytest.fixture
def db(store_db: Any) -> Any:
    """Every test here runs on both backends: the DuckDB file and a PostgreSQL database."""
    return store_db


@pytest.fixture(autouse=True)
def gate_env(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No approval settings leak in; alice launches; the working directory is tmp_path."""
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.chdir(tmp_path)
    return db


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doc: dict[str, Any]) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("AIRUN_CONFIG", str(path))
    return path


# -- who may decide ----------------------------------------------------------------------------


def test_named_approver_decides_and_the_run_continues_on_resume(db: Path) -> None:
    text = spec({"approvers": ["bob"]})
    first = run(text, db)
    assert first.status == "waiting"
    assert effects() == ["prepare"]
    row = gate_row(db, first.run_id)
    assert row["status"] == "open" and pd.isna(row["decision"])
    assert row["message"] == "Ship 3 rows of orders?"
    assert row["launched_by"] == "alice"
    assert json.loads(row["approvers"]) == ["bob"]

    out = airun_nb.approve(first.run_id, "review", by="bob", comment="looks right", db=db)
    assert (
        out["decision"] == "approved"
        and out["by"] == ["bob"]
        and out["actor"] == "bob"
        and out["channel"] == "api"
    )

    second = run(text, db)
    assert second.run_id == first.run_id
    assert second.status == "completed"
    assert effects() == ["prepare", "ship"]  # prepare replayed from the store, ship ran once
    assert second.outputs["ship"] == {"shipped": True, "approved_by": "bob", "channel": "api"}
    decision = second.outputs["review"]
    assert decision["approved"] is True and decision["comment"] == "looks right"
    row = gate_row(db, first.run_id)
    assert (row["status"], row["decision"], row["actor"], row["channel"], row["comment"]) == (
        "approved",
        "approve",
        "bob",
        "api",
        "looks right",
    )


def test_approvers_by_role_come_from_the_settings_file(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, monkeypatch, {"roles": {"lead": ["carol", "dave"], "ops": ["erin"]}})
    first = run(spec({"approvers": ["role:lead"]}), db)
    assert first.status == "waiting"

    with pytest.raises(ApprovalError) as refused:
        airun_nb.approve(first.run_id, "review", by="erin", db=db)
    assert "erin may not decide" in str(refused.value)
    assert "role:lead (carol, dave)" in str(refused.value)
    assert gate_row(db, first.run_id)["status"] == "open"

    airun_nb.approve(first.run_id, "review", by="dave", db=db)
    row = gate_row(db, first.run_id)
    assert (row["status"], row["actor"]) == ("approved", "dave")
    assert run(spec({"approvers": ["role:lead"]}), db).status == "completed"


def test_a_role_missing_from_the_settings_lets_nobody_decide(db: Path) -> None:
    first = run(spec({"approvers": ["role:finance"]}), db)
    with pytest.raises(ApprovalError) as refused:
        airun_nb.approve(first.run_id, "review", by="bob", db=db)
    assert "role:finance (no such role)" in str(refused.value)
    assert gate_row(db, first.run_id)["status"] == "open"


def test_a_non_approver_is_refused_and_nothing_is_recorded(db: Path) -> None:
    first = run(spec({"approvers": ["bob"]}), db)
    before = events(db, first.run_id)

    with pytest.raises(ApprovalError) as refused:
        airun_nb.reject(first.run_id, "review", by="mallory", comment="no", db=db)
    assert not isinstance(refused.value, AlreadyDecided)
    assert "mallory may not decide gate 'review'" in str(refused.value)
    assert "approvers are bob" in str(refused.value)

    done = cli("approve", first.run_id, "review", "--by", "mallory", "--db", str(db))
    assert done.returncode == 1, done
    assert "error: mallory may not decide gate 'review'" in done.stderr

    row = gate_row(db, first.run_id)
    assert row["status"] == "open"
    assert pd.isna(row["decision"]) and pd.isna(row["actor"]) and pd.isna(row["decided_at"])
    assert events(db, first.run_id) == before  # no gate_decided, no other trace
    assert run(spec({"approvers": ["bob"]}), db).status == "waiting"  # still waiting
    assert effects() == ["prepare"]


def test_four_eyes_the_launcher_cannot_decide_their_own_run(db: Path) -> None:
    text = spec({"approvers": ["alice", "bob"]})
    first = run(text, db)  # launched by alice (AIRUN_USER)
    with pytest.raises(ApprovalError) as refused:
        airun_nb.approve(first.run_id, "review", by="alice", db=db)
    assert "four-eyes" in str(refused.value)
    assert "alice started run" in str(refused.value)
    # no --by: the CLI acts as AIRUN_USER
    done = cli("approve", first.run_id, "review", "--db", str(db), user="alice")
    assert done.returncode == 1 and "four-eyes" in done.stderr, done
    assert gate_row(db, first.run_id)["status"] == "open"
    assert events(db, first.run_id, "gate_decided") == []

    airun_nb.approve(first.run_id, "review", by="bob", db=db)
    assert run(text, db).status == "completed"


def test_four_eyes_true_without_an_approvers_list_means_anyone_but_the_launcher(
    db: Path,
) -> None:
    first = run(spec({"four_eyes": True}), db)
    with pytest.raises(ApprovalError, match="four-eyes"):
        airun_nb.approve(first.run_id, "review", db=db)  # by the current user: alice
    airun_nb.approve(first.run_id, "review", by="zoe", db=db)
    assert gate_row(db, first.run_id)["actor"] == "zoe"


def test_a_gate_without_approvers_or_four_eyes_may_be_decided_by_its_launcher(db: Path) -> None:
    first = run(spec({}), db)
    airun_nb.approve(first.run_id, "review", db=db)  # by the current user: alice, the launcher
    assert gate_row(db, first.run_id)["actor"] == "alice"
    assert run(spec({}), db).status == "completed"


def test_editing_an_open_gate_and_running_the_cell_again_applies_the_new_settings(
    db: Path,
) -> None:
    first = run(spec({"approvers": ["bob"]}), db)
    with pytest.raises(ApprovalError, match="approvers are bob"):
        airun_nb.approve(first.run_id, "review", db=db)
    again = run(spec({"approvers": ["bob", "alice"], "allow_self_approval": True}), db)
    assert again.run_id == first.run_id and again.status == "waiting"
    changed = events(db, first.run_id, "gate_settings_changed")
    assert len(changed) == 1
    airun_nb.approve(first.run_id, "review", db=db)  # alice, now listed and allowed
    assert run(spec({"approvers": ["bob", "alice"], "allow_self_approval": True}), db).status == (
        "completed"
    )


def test_allow_self_approval_lets_the_launcher_decide(db: Path) -> None:
    text = spec({"approvers": ["alice"], "allow_self_approval": True})
    first = run(text, db)
    done = cli(
        "approve", first.run_id, "review", "-m", "my own change", "--db", str(db), user="alice"
    )
    assert done.returncode == 0, done.stderr
    assert f"approved gate review of run {first.run_id} as alice" in done.stdout
    second = run(text, db)
    assert second.status == "completed"
    row = gate_row(db, first.run_id)
    assert (row["actor"], row["channel"], row["comment"], row["launched_by"]) == (
        "alice",
        "cli",
        "my own change",
        "alice",
    )


def test_the_launcher_stays_the_launcher_when_someone_else_resumes(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gates: alice starts the run, bob approves the first and resumes the run (his kernel,
    or `airun resume`); the second gate opens. alice is still the launcher: she may not approve
    her own run's second gate, while bob, who is not the launcher, may."""
    team = {"approvers": ["alice", "bob", "carol"]}
    text = spec(team, second={"message": "Publish?", **team})
    first = run(text, db)  # AIRUN_USER=alice
    airun_nb.approve(first.run_id, "review", by="bob", db=db)
    monkeypatch.setenv("AIRUN_USER", "bob")
    resumed = run(text, db)
    assert (resumed.run_id, resumed.status) == (first.run_id, "waiting")
    assert gate_row(db, first.run_id, "publish")["status"] == "open"

    try:
        airun_nb.approve(first.run_id, "publish", by="alice", db=db)
    except ApprovalError as exc:
        assert "four-eyes" in str(exc)
    else:
        raise AssertionError("alice approved a gate of the run she launched (four-eyes)")
    assert gate_row(db, first.run_id, "publish")["status"] == "open"
    assert gate_row(db, first.run_id, "publish")["launched_by"] == "alice"
    runs = airun_nb.runs(db=db).set_index("run_id")
    assert runs.loc[first.run_id, "launched_by"] == "alice"
    airun_nb.approve(first.run_id, "publish", by="bob", db=db)
    assert run(text, db).status == "completed"


# -- first decision wins -----------------------------------------------------------------------


def test_a_second_decision_through_another_channel_is_refused_naming_the_first(db: Path) -> None:
    first = run(spec({"approvers": ["bob", "carol"]}), db)
    done = cli("approve", first.run_id, "review", "--by", "bob", "-m", "ok", "--db", str(db))
    assert done.returncode == 0, done.stderr

    with pytest.raises(AlreadyDecided) as again:
        airun_nb.reject(first.run_id, "review", by="carol", comment="wait!", db=db)
    message = str(again.value)
    assert f"gate 'review' of run {first.run_id} was already approved by bob via cli at " in message
    assert "UTC" in message and '("ok")' in message

    again_cli = cli("reject", first.run_id, "review", "--by", "carol", "--db", str(db))
    assert again_cli.returncode == 1
    assert "already approved by bob via cli" in again_cli.stderr

    row = gate_row(db, first.run_id)
    assert (row["decision"], row["actor"], row["channel"], row["comment"]) == (
        "approve",
        "bob",
        "cli",
        "ok",
    )
    assert len(events(db, first.run_id, "gate_decided")) == 1
    second = run(spec({"approvers": ["bob", "carol"]}), db)
    assert second.status == "completed"
    # a replay of the finished gate never records a decision again
    assert len(events(db, first.run_id, "gate_decided")) == 1


def test_a_double_click_on_the_widget_records_one_decision(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airun_nb.jupyter.widgets import GateWidget
    from airun_nb.store.opening import open_store

    ns = namespace()
    first = run(spec({"approvers": ["bob"]}), db, ns)
    row = gate_mod.gate_row(open_store(db), first.run_id, "review")
    widget = GateWidget(row, db, ns)
    monkeypatch.setenv("AIRUN_USER", "bob")
    widget.comment.value = "ship it"
    widget.approve_button.click()
    widget.approve_button.click()
    widget.reject_button.click()

    assert len(events(db, first.run_id, "gate_decided")) == 1
    row = gate_row(db, first.run_id)
    assert (row["decision"], row["actor"], row["channel"], row["comment"]) == (
        "approve",
        "bob",
        "widget",
        "ship it",
    )
    assert run_status(db, first.run_id) == "completed"
    assert effects() == ["prepare", "ship"]
    assert ns["shipped"] == {"shipped": True, "approved_by": "bob", "channel": "widget"}
    assert widget.approve_button.disabled and widget.reject_button.disabled


_RACER = textwrap.dedent(
    """
    import os, sys, time
    from airun_nb.cli.main import main  # imported before the start line: the race is the decision
    ready, go = sys.argv[1], sys.argv[2]
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    sys.argv = ["airun", *sys.argv[3:]]
    main()
    """
)


def test_decisions_racing_from_processes_exactly_one_wins(db: Path, tmp_path: Path) -> None:
    first = run(spec({"approvers": ["bob", "carol", "dave", "erin"]}), db)
    go = tmp_path / "go"
    racers = [("approve", "bob"), ("reject", "carol"), ("approve", "dave"), ("reject", "erin")]
    env = {k: v for k, v in os.environ.items() if k != "AIRUN_USER"}
    procs = []
    for i, (verb, who) in enumerate(racers):
        argv = [str(tmp_path / f"ready-{i}"), str(go), verb, first.run_id, "review", "--by", who]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RACER, *argv, "--db", str(db)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    wait_until(
        lambda: all((tmp_path / f"ready-{i}").exists() for i in range(len(racers))),
        "every racer to be at the start line",
        timeout=120,
    )
    go.write_text("go")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append((p.returncode, out, err))

    winners = [i for i, (rc, _, _) in enumerate(results) if rc == 0]
    assert len(winners) == 1, results
    verb, who = racers[winners[0]]
    for i, (rc, _out, err) in enumerate(results):
        if i == winners[0]:
            continue
        assert rc == 1 and "Traceback" not in err, (rc, err)
        assert "already" in err and f"by {who} via cli" in err, err  # each loser names the winner
    row = gate_row(db, first.run_id)
    assert (row["decision"], row["actor"], row["channel"]) == (verb, who, "cli")
    decided = events(db, first.run_id, "gate_decided")
    assert len(decided) == 1 and decided[0]["detail"]["actor"] == who


# -- rejection rolls back ----------------------------------------------------------------------


def test_rejection_rolls_the_run_back(db: Path) -> None:
    text = spec({"approvers": ["bob"]})
    first = run(text, db)
    airun_nb.reject(first.run_id, "review", by="bob", comment="numbers look off", db=db)
    second = run(text, db)
    assert second.run_id == first.run_id
    assert second.status == "rolled_back"
    assert effects() == ["prepare", "unprepare"]  # undone once, ship never ran
    steps = airun_nb.steps(first.run_id, db=db).set_index("step_id")
    assert steps.loc["prepare", "comp_status"] == "done"
    assert steps.loc["review", "view"] == "rejected"  # a decision, not a failure
    assert steps.loc["review", "error"] == "Rejected by bob: numbers look off"
    assert steps.loc["ship", "status"] != "completed"
    assert second.error == "Rejected by bob: numbers look off"


def test_a_rejection_is_a_decision_not_a_workflow_failure(db: Path) -> None:
    """Resuming a rejected run rolls it back without raising WorkflowFailed (even with
    raise_on_failure); the step table shows the gate as rejected, not failed."""
    text = spec({"approvers": ["bob"]})
    first = run(text, db)
    airun_nb.reject(first.run_id, "review", by="bob", db=db)
    result = Workflow.from_yaml(text).run(db=db, namespace=namespace())
    assert result.status == "rolled_back"
    table = repr(result)
    assert "rejected" in table and " failed " not in table, table
    assert "Rejected by bob" in table


# -- timeouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("on_timeout", ["approve", "reject", "fail"])
def test_a_resume_after_the_deadline_decides_per_on_timeout(db: Path, on_timeout: str) -> None:
    text = spec(
        {"approvers": ["bob"], "timeout": f"{SHORT}s", "on_timeout": on_timeout, "mode": "suspend"}
    )
    first = run(text, db)
    assert first.status == "waiting"
    opened = gate_row(db, first.run_id)
    deadline = opened["deadline"]
    # fixed at open: opened_at + timeout (to the microsecond the store keeps)
    assert abs(deadline - opened["opened_at"] - pd.Timedelta(seconds=SHORT)) <= pd.Timedelta("1us")
    sleep_past(deadline)

    second = run(text, db)
    assert second.run_id == first.run_id
    row = gate_row(db, first.run_id)
    assert row["deadline"] == deadline and row["opened_at"] == opened["opened_at"]
    assert row["channel"] == "timeout"
    if on_timeout == "approve":
        assert second.status == "completed"
        assert (row["status"], row["decision"], row["actor"]) == ("approved", "approve", "timeout")
        assert effects() == ["prepare", "ship"]
        assert second.outputs["ship"]["channel"] == "timeout"
    elif on_timeout == "reject":
        assert second.status == "rolled_back"
        assert (row["status"], row["decision"]) == ("rejected", "reject")
        assert effects() == ["prepare", "unprepare"]
    else:
        assert second.status in ("rolled_back", "failed")
        assert row["status"] == "expired" and pd.isna(row["decision"])
        assert "approval timed out" in (second.error or "")
        assert "ship" not in effects()
        assert len(events(db, first.run_id, "gate_expired")) == 1
    assert row["decided_at"] >= deadline
    # a late human decision is refused: the gate is closed
    with pytest.raises(AlreadyDecided):
        airun_nb.approve(first.run_id, "review", by="bob", db=db)


def test_an_expired_gate_is_not_reported_as_rejected(db: Path) -> None:
    """on_timeout: fail closes the gate without a decision; a later attempt is told so, not
    that somebody rejected it."""
    text = spec({"approvers": ["bob"], "timeout": f"{SHORT}s", "on_timeout": "fail"})
    first = run(text, db)
    sleep_past(gate_row(db, first.run_id)["deadline"])
    run(text, db)
    assert gate_row(db, first.run_id)["status"] == "expired"
    with pytest.raises(AlreadyDecided) as late:
        airun_nb.approve(first.run_id, "review", by="bob", db=db)
    assert "expired" in str(late.value), str(late.value)
    assert "rejected" not in str(late.value), str(late.value)


def test_the_deadline_is_fixed_when_the_gate_opens(db: Path) -> None:
    text = spec({"approvers": ["bob"], "timeout": "1h"})
    first = run(text, db)
    opened = gate_row(db, first.run_id)
    assert abs(opened["deadline"] - opened["opened_at"] - pd.Timedelta(hours=1)) <= pd.Timedelta(
        "1us"
    )
    for _ in range(2):
        again = run(text, db)
        assert (again.run_id, again.status) == (first.run_id, "waiting")
    row = gate_row(db, first.run_id)
    assert row["deadline"] == opened["deadline"] and row["opened_at"] == opened["opened_at"]
    assert len(events(db, first.run_id, "gate_opened")) == 1
    assert effects() == ["prepare"]


def test_a_human_decision_after_the_deadline_does_not_override_on_timeout(db: Path) -> None:
    """The deadline is fixed when the gate opens; once it has passed, the gate's outcome is
    on_timeout, whoever comes first afterwards (a late click or CLI call, or the resume)."""
    text = spec(
        {"approvers": ["bob"], "timeout": f"{SHORT}s", "on_timeout": "reject", "mode": "suspend"}
    )
    first = run(text, db)
    sleep_past(gate_row(db, first.run_id)["deadline"])

    late = cli("approve", first.run_id, "review", "--by", "bob", "--db", str(db))
    assert late.returncode == 1, late.stdout
    assert "deadline" in late.stderr
    second = run(text, db)
    row = gate_row(db, first.run_id)
    assert (row["decision"], row["channel"]) == ("reject", "timeout")
    assert second.status == "rolled_back"
    assert "ship" not in effects()


# -- policy mode -------------------------------------------------------------------------------


def test_policy_approve_decides_headless_in_one_call(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_APPROVAL", "approve")
    result = run(spec({"approvers": ["bob"]}), db)
    assert result.status == "completed"
    row = gate_row(db, result.run_id)
    assert (row["decision"], row["channel"], row["actor"]) == (
        "approve",
        "policy",
        "policy:AIRUN_APPROVAL",
    )
    assert effects() == ["prepare", "ship"]
    assert events(db, result.run_id, "run_waiting") == []


def test_policy_reject_rolls_back(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRUN_APPROVAL", "reject")
    result = run(spec({"approvers": ["bob"]}), db)
    assert result.status == "rolled_back"
    assert gate_row(db, result.run_id)["decision"] == "reject"
    assert effects() == ["prepare", "unprepare"]


def test_policy_per_gate_mapping(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    second_gate = {"message": "Publish?"}
    monkeypatch.setenv("AIRUN_APPROVAL", "review=approve, publish=approve")
    ok = run(spec({}, second=second_gate), db)
    assert ok.status == "completed"

    monkeypatch.setenv("AIRUN_APPROVAL", "review=approve,deploy.publish=reject")
    bad = run(spec({}, second=second_gate), db, new=True)
    assert bad.status == "rolled_back"
    assert gate_row(db, bad.run_id, "review")["decision"] == "approve"
    assert gate_row(db, bad.run_id, "publish")["decision"] == "reject"
    assert effects() == ["prepare", "ship", "prepare", "unprepare"]


def test_policy_from_the_settings_file(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(
        tmp_path,
        monkeypatch,
        {"approvals": {"default": "reject", "gates": {"deploy.review": "approve"}}},
    )
    result = run(spec({}, second={"message": "Publish?"}), db)
    assert result.status == "rolled_back"
    assert gate_row(db, result.run_id, "review")["actor"] == "policy:settings"
    assert gate_row(db, result.run_id, "review")["decision"] == "approve"
    assert gate_row(db, result.run_id, "publish")["decision"] == "reject"


def test_a_gate_mode_overrides_the_policy(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRUN_APPROVAL", "approve")
    result = run(spec({"mode": "suspend"}), db)
    assert result.status == "waiting"
    assert gate_row(db, result.run_id)["status"] == "open"


@pytest.mark.parametrize(
    "setting", [("AIRUN_APPROVAL_MODE", "policy"), ("AIRUN_APPROVAL", "other=approve")]
)
def test_no_policy_decision_fails_the_step_with_a_clear_message(
    db: Path, monkeypatch: pytest.MonkeyPatch, setting: tuple[str, str]
) -> None:
    monkeypatch.setenv(*setting)
    with pytest.raises(WorkflowFailed) as failed:
        Workflow.from_yaml(spec({"approvers": ["bob"]})).run(db=db, namespace=namespace())
    message = str(failed.value)
    assert "failed at step 'review'" in message
    assert "no policy decision for this gate" in message
    assert "AIRUN_APPROVAL" in message
    run_id = failed.value.run_id
    row = gate_row(db, run_id)
    assert row["status"] == "expired" and pd.isna(row["decision"])
    assert "ship" not in effects()


def test_following_the_no_policy_advice_lets_the_run_resume(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message says to set AIRUN_APPROVAL; doing so and resuming the (stopped) run decides
    the gate, instead of failing again on the closed, undecided gate."""
    monkeypatch.setenv("AIRUN_APPROVAL_MODE", "policy")
    text = spec({"approvers": ["bob"]}, on_failure="stop")
    first = run(text, db)
    assert first.status == "failed"
    assert "set AIRUN_APPROVAL=approve" in (first.error or "")

    monkeypatch.setenv("AIRUN_APPROVAL", "approve")
    second = run(text, db)
    assert second.run_id == first.run_id
    assert second.status == "completed", second.error
    assert gate_row(db, first.run_id)["decision"] == "approve"
    assert effects() == ["prepare", "ship"]


# -- wait mode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["cli", "api"])
def test_wait_mode_blocks_until_a_decision_arrives(db: Path, channel: str) -> None:
    text = spec({"approvers": ["bob"], "mode": "wait", "timeout": "10m", "on_timeout": "reject"})
    failures: list[BaseException] = []

    def decide_when_open() -> None:
        try:
            wait_until(
                lambda: (
                    (not isinstance(db, Path) or db.exists())
                    and not airun_nb.approvals(db=db, pending=True).empty
                ),
                "the gate to open",
            )
            run_id = str(airun_nb.approvals(db=db, pending=True)["run_id"].iloc[0])
            if channel == "cli":
                done = cli("approve", run_id, "review", "--by", "bob", "--db", str(db))
                assert done.returncode == 0, done.stderr
            else:
                airun_nb.approve(run_id, "review", by="bob", db=db)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    helper = threading.Thread(target=decide_when_open, daemon=True)
    helper.start()
    result = run(text, db)  # one call: returns only once the gate is decided
    helper.join(timeout=120)
    assert not failures, failures
    assert result.status == "completed"
    row = gate_row(db, result.run_id)
    assert (row["actor"], row["channel"]) == ("bob", channel)
    assert effects() == ["prepare", "ship"]
    assert events(db, result.run_id, "run_waiting") == []


def test_wait_mode_gives_up_at_the_deadline(db: Path) -> None:
    text = spec({"approvers": ["bob"], "mode": "wait", "timeout": "0.5s", "on_timeout": "reject"})
    result = run(text, db)
    assert result.status == "rolled_back"
    row = gate_row(db, result.run_id)
    assert (row["decision"], row["channel"]) == ("reject", "timeout")
    assert effects() == ["prepare", "unprepare"]


# -- notifications -----------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(  # type: ignore[attr-defined]
            {"path": self.path, "type": self.headers.get("Content-Type"), "body": json.loads(body)}
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_gets_the_gate_with_the_exact_cli_commands(
    db: Path, webhook: ThreadingHTTPServer
) -> None:
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hooks/gates"
    text = spec(
        {"approvers": ["bob"], "timeout": "1h", "show": "{{ steps.prepare.output }}", "notify": url}
    )
    first = run(text, db)
    assert first.status == "waiting"
    received = webhook.received  # type: ignore[attr-defined]
    assert len(received) == 1
    hit = received[0]
    assert hit["path"] == "/hooks/gates" and hit["type"] == "application/json"
    body = hit["body"]
    assert body["run_id"] == first.run_id
    assert body["workflow"] == "deploy"
    assert body["gate"] == "review"
    assert body["message"] == "Ship 3 rows of orders?"
    assert body["approvers"] == ["bob"]
    assert body["deadline"] is not None
    assert "orders" in body["preview"]
    assert body["commands"] == {
        "approve": f"airun approve {first.run_id} review",
        "reject": f"airun reject {first.run_id} review",
    }
    assert len(events(db, first.run_id, "notified")) == 1

    # the command in the notification works as given
    words = shlex.split(body["commands"]["approve"])
    assert words[0] == "airun"
    done = cli(*words[1:], "--by", "bob", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert run(text, db).status == "completed"
    assert len(received) == 1  # resuming does not notify again


def test_the_webhook_deadline_is_an_unambiguous_utc_timestamp(
    db: Path, webhook: ThreadingHTTPServer
) -> None:
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    first = run(spec({"approvers": ["bob"], "timeout": "2h", "notify": url}), db)
    (hit,) = webhook.received  # type: ignore[attr-defined]
    sent = pd.Timestamp(hit["body"]["deadline"])
    assert sent.tzinfo is not None, f"deadline {hit['body']['deadline']!r} names no time zone"
    assert sent == gate_row(db, first.run_id)["deadline"]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failing_webhook_is_recorded_and_not_fatal(db: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    first = run(spec({"approvers": ["bob"], "notify": url}), db)
    assert first.status == "waiting"
    failed = events(db, first.run_id, "notify_failed")
    assert len(failed) == 1
    assert failed[0]["step_id"] == "review"
    assert url in failed[0]["detail"]["error"]
    assert "refused" in failed[0]["detail"]["error"].lower()
    assert gate_row(db, first.run_id)["status"] == "open"


def test_a_python_function_can_be_the_notification(db: Path) -> None:
    got: list[dict[str, Any]] = []

    def on_gate(payload: dict[str, Any]) -> None:
        got.append(payload)

    def broken_hook(payload: dict[str, Any]) -> None:
        raise RuntimeError("pager is down")

    ns = namespace(on_gate=on_gate, broken_hook=broken_hook)
    first = run(spec({"approvers": ["bob"], "notify": "on_gate"}), db, ns)
    assert first.status == "waiting"
    assert len(got) == 1
    assert got[0]["run_id"] == first.run_id and got[0]["gate"] == "review"
    assert got[0]["commands"]["approve"] == f"airun approve {first.run_id} review"
    assert events(db, first.run_id, "notify_failed") == []

    # a real callable works too (Python API), and one that raises is recorded, never fatal
    direct: list[dict[str, Any]] = []
    doc = yaml.safe_load(spec({"approvers": ["bob"]}, name="direct"))
    doc["steps"][1]["approval"]["notify"] = [direct.append, "broken_hook"]
    second = Workflow.from_dict(doc).run(db=db, namespace=ns, raise_on_failure=False)
    assert second.status == "waiting"
    assert [p["workflow"] for p in direct] == ["direct"]
    failed = events(db, second.run_id, "notify_failed")
    assert len(failed) == 1 and "pager is down" in failed[0]["detail"]["error"]


# -- the approvals history ---------------------------------------------------------------------


def test_approvals_frame_has_utc_timestamps_and_a_waited_duration(db: Path) -> None:
    decided = run(spec({"approvers": ["bob"], "timeout": "1h"}), db)
    airun_nb.approve(decided.run_id, "review", by="bob", db=db)
    pending = run(spec({"approvers": ["bob"]}, name="other"), db)

    df = airun_nb.approvals(db=db)
    for col in ("opened_at", "deadline", "decided_at"):
        assert isinstance(df[col].dtype, pd.DatetimeTZDtype), (col, df[col].dtype)
        assert str(df[col].dt.tz) == "UTC"
    assert pd.api.types.is_timedelta64_dtype(df["waited"])
    rows = df.set_index("run_id")
    done, open_ = rows.loc[decided.run_id], rows.loc[pending.run_id]
    assert done["waited"] == done["decided_at"] - done["opened_at"]
    assert done["waited"] >= pd.Timedelta(0)
    assert pd.isna(open_["waited"]) and pd.isna(open_["decided_at"]) and pd.isna(open_["deadline"])
    now = pd.Timestamp.now(tz="UTC")
    assert abs(now - done["opened_at"]) < pd.Timedelta(minutes=10)  # really UTC, not local time
    assert airun_nb.approvals(db=db, pending=True)["run_id"].tolist() == [pending.run_id]
    assert airun_nb.approvals(decided.run_id, db=db)["gate_id"].tolist() == ["review"]


def test_cli_lists_open_gates_with_their_commands(db: Path) -> None:
    first = run(spec({"approvers": ["bob"]}), db)
    listed = cli("approvals", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    assert f"{first.run_id} review [open] deploy: Ship 3 rows of orders?" in listed.stdout
    assert "may decide: bob (not alice, who started the run)" in listed.stdout
    assert f"airun approve {first.run_id} review" in listed.stdout
    airun_nb.approve(first.run_id, "review", by="bob", db=db)
    assert "(no open gates)" in cli("approvals", "--db", str(db)).stdout
    everything = cli("approvals", "--all", "--db", str(db)).stdout
    assert "[approved]" in everything and "Approved by bob (via api)" in everything


# == the gate widget through a real IPython shell ==============================================

SETUP = """
from pathlib import Path

def _effect(what):
    with open("effects.log", "a") as fh:
        fh.write(what + "\\n")

def prepare():
    _effect("prepare")
    return {"rows": 3, "table": "orders"}

def unprepare():
    _effect("unprepare")

def ship(decision):
    _effect("ship")
    return {"shipped": True, "approved_by": decision["actor"], "channel": decision["channel"]}
"""

CELL = """%%workflow deploy
steps:
  - id: prepare
    call: prepare
    compensate: {call: unprepare}
  - id: review
    needs: [prepare]
    approval:
      message: "Ship {{ steps.prepare.output.rows }} rows?"
      show: "{{ steps.prepare.output }}"
      approvers: [bob]
  - id: ship
    needs: [review]
    call: ship
    with: {decision: "{{ steps.review.output }}"}
    output: shipped
"""


class Displayed:
    """Everything the shell displays, and the GateWidgets among it (by their model ids)."""

    def __init__(self, shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data: list[dict[str, Any]] = []
        pub = shell.display_pub
        original = pub.publish

        def publish(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.data.append(data)
            return original(data, *args, **kwargs)

        monkeypatch.setattr(pub, "publish", publish)

    def gates(self, run_id: str | None = None) -> list[Any]:
        from ipywidgets.widgets.widget import _instances

        from airun_nb.jupyter.widgets import GateWidget

        found = []
        for data in self.data:
            view = data.get("application/vnd.jupyter.widget-view+json")
            if not view:
                continue
            widget = _instances.get(view["model_id"])
            if isinstance(widget, GateWidget) and (run_id is None or widget.run_id == run_id):
                found.append(widget)
        return found


def test_magic_cell_ends_waiting_and_a_click_continues_the_run(
    ipython: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = Displayed(ipython, monkeypatch)
    assert ipython.run_cell(SETUP).success
    result = ipython.run_cell(CELL)
    assert result.success and result.error_in_exec is None, result.error_in_exec
    last = airun_nb.last_run()
    assert last is not None and last.status == "waiting"
    run_id = last.run_id
    assert run_status(db, run_id) == "waiting"
    widgets = shown.gates(run_id)
    assert len(widgets) == 1
    widget = widgets[0]
    assert widget.gate_id == "review"
    assert f"airun approve {run_id} review" in repr(widget)
    assert "Ship 3 rows?" in repr(widget)
    assert "shipped" not in ipython.user_ns

    monkeypatch.setenv("AIRUN_USER", "bob")  # an approver (alice launched the run)
    widget.comment.value = "fine"
    widget.approve_button.click()

    assert run_status(db, run_id) == "completed"
    row = gate_row(db, run_id)
    assert (row["decision"], row["actor"], row["channel"], row["comment"]) == (
        "approve",
        "bob",
        "widget",
        "fine",
    )
    assert ipython.user_ns["shipped"] == {
        "shipped": True,
        "approved_by": "bob",
        "channel": "widget",
    }
    assert effects() == ["prepare", "ship"]
    assert "Approved" in widget.status.value
    assert widget.approve_button.disabled and widget.reject_button.disabled


def test_a_refused_click_records_nothing_and_keeps_the_buttons(
    ipython: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = Displayed(ipython, monkeypatch)
    ipython.run_cell(SETUP)
    ipython.run_cell(CELL)
    run_id = airun_nb.last_run().run_id
    (widget,) = shown.gates(run_id)
    widget.approve_button.click()  # alice: the launcher, and not an approver
    assert "Refused" in widget.status.value and "alice may not decide" in widget.status.value
    assert not widget.approve_button.disabled and not widget.reject_button.disabled
    assert gate_row(db, run_id)["status"] == "open"
    assert events(db, run_id, "gate_decided") == []

    monkeypatch.setenv("AIRUN_USER", "bob")  # the same widget still works for an approver
    widget.reject_button.click()
    assert run_status(db, run_id) == "rolled_back"
    assert effects() == ["prepare", "unprepare"]


@pytest.fixture(autouse=True)
def _unwatch() -> Any:
    """Gate widgets drawn by one test stop being watched when it ends."""
    yield
    from airun_nb.jupyter.watcher import WATCHER

    WATCHER.clear()


def _wait(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_a_stale_widget_shows_the_decision_taken_elsewhere_and_records_nothing(
    ipython: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = Displayed(ipython, monkeypatch)
    ipython.run_cell(SETUP)
    ipython.run_cell(CELL)
    run_id = airun_nb.last_run().run_id
    (widget,) = shown.gates(run_id)

    done = cli("reject", run_id, "review", "--by", "bob", "-m", "not today", "--db", str(db))
    assert done.returncode == 0, done.stderr

    # The kernel's watcher sees the decision: the widget shows it and the run continues here
    # (a rejection rolls it back).
    _wait(lambda: widget.decided and run_status(db, run_id) == "rolled_back", "the watcher")
    # once the rollback is over the status line says so (not "rolling the run back" any more)
    _wait(lambda: "the run was rolled back" in widget.status.value, "the status line")
    assert (
        "<b>Rejected</b> by bob via cli: not today; the run was rolled back." in widget.status.value
    )
    assert widget.approve_button.disabled and widget.reject_button.disabled
    before = events(db, run_id)
    monkeypatch.setenv("AIRUN_USER", "bob")
    widget.approve_button.click()  # a late click records nothing
    row = gate_row(db, run_id)
    assert (row["decision"], row["channel"], row["comment"]) == ("reject", "cli", "not today")
    assert events(db, run_id) == before
    assert effects() == ["prepare", "unprepare"]


_RESTARTED = textwrap.dedent(
    """
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell
    from ipywidgets.widgets.widget import _instances
    from airun_nb.jupyter.widgets import GateWidget

    shell = InteractiveShell.instance()
    published = []
    original = shell.display_pub.publish
    def publish(data, *a, **k):
        published.append(data)
        return original(data, *a, **k)
    shell.display_pub.publish = publish

    shell.run_line_magic("load_ext", "airun_nb")
    assert shell.run_cell(sys.argv[1]).success
    shell.run_line_magic("workflow", "approvals")
    gates = [
        _instances[d["application/vnd.jupyter.widget-view+json"]["model_id"]]
        for d in published if "application/vnd.jupyter.widget-view+json" in d
    ]
    gates = [g for g in gates if isinstance(g, GateWidget)]
    report = {"gates": [[g.run_id, g.gate_id, repr(g)] for g in gates]}
    if gates:
        gates[0].approve_button.click()
        report["status"] = gates[0].status.value
        report["shipped"] = shell.user_ns.get("shipped")
    print("REPORT " + json.dumps(report))
    """
)


def test_workflow_approvals_redraws_open_gates_after_a_restart(
    ipython: Any, db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shown = Displayed(ipython, monkeypatch)
    ipython.run_cell(SETUP)
    ipython.run_cell(CELL)
    run_id = airun_nb.last_run().run_id
    (old_widget,) = shown.gates(run_id)

    # the kernel restarts: a new process, a new shell, nothing in memory but the store
    env = dict(os.environ, AIRUN_USER="bob")
    done = subprocess.run(
        [sys.executable, "-c", _RESTARTED, SETUP],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert [g[:2] for g in report["gates"]] == [[run_id, "review"]]
    assert f"airun approve {run_id} review" in report["gates"][0][2]
    assert "Approved" in report["status"]
    assert report["shipped"] == {"shipped": True, "approved_by": "bob", "channel": "widget"}
    assert run_status(db, run_id) == "completed"
    assert gate_row(db, run_id)["channel"] == "widget"
    assert effects() == ["prepare", "ship"]

    # the button drawn before the restart is stale now, and harmless
    _wait(lambda: old_widget.decided, "the watcher to show the decision on the old widget")
    assert "<b>Approved</b> by bob via widget" in old_widget.status.value
    before = events(db, run_id)
    monkeypatch.setenv("AIRUN_USER", "bob")
    old_widget.reject_button.click()
    assert events(db, run_id) == before
    assert effects() == ["prepare", "ship"]

    # with nothing open, the line magic says so
    ipython.run_line_magic("workflow", "approvals")
    assert shown.gates(run_id) == [old_widget]


FORM_CELL = """%%workflow promo
steps:
  - id: prepare
    call: prepare
    compensate: {call: unprepare}
  - id: review
    needs: [prepare]
    approval:
      message: "Discount {{ steps.prepare.output.rows }} rows?"
      quorum: 2
      fields:
        percent: {type: integer, required: true}
        region: {type: choice, choices: [eu, us]}
      options: [apply, hold]
  - id: apply
    needs: [review]
    when: "{{ steps.review.output.option == 'apply' }}"
    call: ship
    with: {decision: "{{ steps.review.output }}"}
    output: shipped
"""


def test_the_widget_shows_the_form_and_options_and_counts_a_quorum(
    ipython: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate widget draws one input a field and the options; a wrong type is refused on the
    widget and records nothing; bob's click is the first of two votes (the run stays waiting,
    the widget says "1 of 2 approvals"); carol's click on a second widget closes the gate, the
    header becomes the decision and the run continues down the chosen option's branch."""
    shown = Displayed(ipython, monkeypatch)
    assert ipython.run_cell(SETUP).success
    assert ipython.run_cell(FORM_CELL).success
    run_id = airun_nb.last_run().run_id
    (widget,) = shown.gates(run_id)
    assert set(widget.fields) == {"percent", "region"}
    assert widget.option is not None and list(widget.option.options) == ["apply", "hold"]
    text = repr(widget)
    assert "field percent (integer, required)" in text and "options: apply, hold" in text
    assert "0 of 2 approvals" in text

    monkeypatch.setenv("AIRUN_USER", "bob")
    widget.fields["percent"].value = "ten"
    widget.option.value = "apply"
    widget.approve_button.click()
    assert "field &#x27;percent&#x27; must be a whole number" in widget.status.value
    assert pd.isna(gate_row(db, run_id)["votes"])
    assert not widget.approve_button.disabled  # refused: the person may correct it

    widget.fields["percent"].value = "10"
    widget.fields["region"].value = "eu"
    widget.approve_button.click()
    assert "1 of 2 approvals" in widget.status.value and "1 of 2 approvals" in widget.header.value
    assert run_status(db, run_id) == "waiting" and "shipped" not in ipython.user_ns

    monkeypatch.setenv("AIRUN_USER", "carol")
    assert ipython.run_cell("%workflow approvals").success
    second = shown.gates(run_id)[-1]
    assert second is not widget
    second.approve_button.click()
    assert run_status(db, run_id) == "completed"
    assert "Approved" in second.header.value and "Approval needed" not in second.header.value
    assert "option <b>apply</b>" in second.status.value
    row = gate_row(db, run_id)
    assert (row["status"], row["option"]) == ("approved", "apply")
    assert json.loads(row["form"]) == {"percent": 10, "region": "eu"}
    out = airun_nb.steps(run_id, db=db).set_index("step_id")
    assert out.loc["apply", "status"] == "completed"


def test_slack_and_teams_webhooks_get_the_gate_in_their_formats(
    db: Path, webhook: ThreadingHTTPServer
) -> None:
    """``notify: {url, format: slack}`` posts a Slack Block Kit message and ``format: teams`` an
    Adaptive Card, each with the message, who may decide, the form, the options and the
    commands; a wrong format is refused when the workflow is read."""
    base = f"http://127.0.0.1:{webhook.server_address[1]}"
    gate = {
        "approvers": ["bob"],
        "fields": {"amount": {"type": "number", "required": True}},
        "options": ["ship", "hold"],
        "notify": [
            {"url": base + "/slack", "format": "slack"},
            {"url": base + "/teams", "format": "teams"},
        ],
    }
    first = run(spec(gate), db)
    assert first.status == "waiting"
    got = {hit["path"]: hit["body"] for hit in webhook.received}  # type: ignore[attr-defined]
    slack = got["/slack"]
    assert slack["text"] == "Approval needed: Ship 3 rows of orders?"
    facts = json.dumps(slack["blocks"])
    assert "bob (not alice, who started the run)" in facts
    assert "amount (number, required)" in facts and "ship / hold" in facts
    assert f"airun approve {first.run_id} review --set amount=..." in facts
    card = got["/teams"]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    titles = {f["title"]: f["value"] for f in card["content"]["body"][1]["facts"]}
    assert titles["Options"] == "ship / hold" and titles["May decide"].startswith("bob")
    assert len(events(db, first.run_id, "notified")) == 1

    with pytest.raises(airun_nb.SpecError) as bad:
        Workflow.from_yaml(spec({"notify": {"url": base, "format": "discord"}}))
    assert "notify format must be json, slack or teams" in str(bad.value)
