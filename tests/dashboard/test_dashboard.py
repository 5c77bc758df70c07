"""The terminal dashboard, driven by Textual's headless pilot over a real store.

Runs are real (workflow API, DuckDB in tmp_path); keys are pressed through the pilot exactly as a
person would type them.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb import Workflow
from airun_nb.dashboard.app import Dashboard
from airun_nb.store.database import Store
from support.service import NAMESPACE, effects, gated_spec


@pytest.fixture(autouse=True)
def env(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.chdir(tmp_path)
    return db


def waiting(db: Path, name: str, **approval: Any) -> str:
    r = Workflow.from_yaml(gated_spec(name, **approval)).run(
        db=db, namespace=NAMESPACE, raise_on_failure=False
    )
    assert r.status == "waiting"
    return r.run_id


def completed(db: Path, name: str) -> str:
    return (
        Workflow.from_yaml(f"name: {name}\nsteps:\n  - id: a\n    python: 'result = 1'\n")
        .run(db=db)
        .run_id
    )


PY_STEPS = {
    "name": "py_gated",
    "steps": [
        {
            "id": "prepare",
            "python": "open('effects.log', 'a').write('prepare\\n')\nresult = 1",
            "compensate": {"python": "open('effects.log', 'a').write('unprepare\\n')"},
        },
        {"id": "review", "needs": ["prepare"], "approval": {"message": "go?"}},
    ],
}


def sync(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async pilot test to its end in a fresh event loop."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))  # type: ignore[arg-type]

    return wrapper


def rows(app: Dashboard, table: str) -> list[list[str]]:
    t = app.query_one(table)
    return [[str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]


def status(db: Path, run_id: str) -> str:
    df = airun_nb.runs(db=db)
    return str(df.loc[df["run_id"] == run_id, "status"].iloc[0])


@sync
async def test_the_status_filter_matches_real_statuses(env: Path) -> None:
    wait_id = waiting(env, "deploy")
    done_id = completed(env, "report")
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(160, 50)) as pilot:
        assert {r[0] for r in rows(app, "#runs")} == {wait_id, done_id}
        await pilot.press("f")  # pending
        assert rows(app, "#runs") == []
        await pilot.press("f", "f")  # running, then waiting
        assert [(r[0], r[2]) for r in rows(app, "#runs")] == [(wait_id, "waiting for approval")]
        await pilot.press("f")  # completed
        assert [(r[0], r[2]) for r in rows(app, "#runs")] == [(done_id, "completed")]
        await pilot.press("F", "F", "F", "F")  # back to all
        assert len(rows(app, "#runs")) == 2


@sync
async def test_enter_opens_a_run_with_its_steps_and_attempts(env: Path) -> None:
    run_id = waiting(env, "deploy")
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("enter")
        steps = rows(app, "#steps")
        assert [(s[0], s[2]) for s in steps] == [
            ("prepare", "completed"),
            ("review", "waiting"),
            ("ship", "pending"),
        ]
        assert [(a[0], a[3]) for a in rows(app, "#attempts")] == [("prepare", "completed")]
        assert run_id in str(app.query_one("#detail-title").render())


@sync
async def test_a_gate_highlight_handled_as_the_dashboard_closes_is_no_error(env: Path) -> None:
    """A highlight of the gates' table still queued when the dashboard tears its screen down
    (seen on a busy machine: the dashboard stopped with NoMatches '#gates') is dropped; while
    the dashboard is up, a highlight shows the gate's detail."""
    from textual.widgets import DataTable

    run_id = waiting(env, "deploy")
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(160, 50)):
        gates = app.query_one("#gates", DataTable)
        key = gates.coordinate_to_cell_key(gates.cursor_coordinate).row_key
        app.on_data_table_row_highlighted(DataTable.RowHighlighted(gates, 0, key))
        assert run_id in str(app.query_one("#gate-detail").render())
    app.on_data_table_row_highlighted(DataTable.RowHighlighted(gates, 0, key))


@sync
async def test_approve_a_gate_with_a_comment(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = waiting(env, "deploy")
    monkeypatch.setenv("AIRUN_USER", "bob")  # the approver at the terminal
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(160, 50)) as pilot:
        assert rows(app, "#gates")[0][:2] == [run_id, "review"]
        assert rows(app, "#gates")[0][-1] == "may decide"
        await pilot.press("g", "a")
        await pilot.press(*"ok to ship")
        await pilot.press("enter")
        await pilot.pause()
        assert rows(app, "#gates") == []
        assert "approved gate review" in str(app.query_one("#message").render())
    gate = airun_nb.approvals(run_id, db=env).iloc[0]
    assert (gate["status"], gate["actor"], gate["channel"], gate["comment"]) == (
        "approved",
        "bob",
        "dashboard",
        "ok to ship",
    )
    audit = airun_nb.audit(run_id, db=env)
    assert (
        json.loads(audit[audit["kind"] == "human"]["arguments"].iloc[0])["channel"] == "dashboard"
    )
    resumed = Workflow.from_run(run_id, db=env).run(db=env, namespace=NAMESPACE, resume=run_id)
    assert resumed.status == "completed"


@sync
async def test_a_refused_decision_says_why_and_records_nothing(env: Path) -> None:
    # alice launched it, and alice is at the terminal
    run_id = waiting(env, "deploy", approvers=["alice", "bob"])
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(160, 50)) as pilot:
        assert rows(app, "#gates")[0][-1].startswith(f"alice started run {run_id}")
        await pilot.press("g", "a", "enter")
        await pilot.pause()
        assert "four-eyes" in str(app.query_one("#message").render())
    assert airun_nb.approvals(run_id, db=env)["status"].tolist() == ["open"]


@sync
async def test_cancel_one_run_after_confirming_while_another_stays_untouched(env: Path) -> None:
    first = waiting(env, "deploy")
    second = waiting(env, "other")
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(160, 50)) as pilot:
        ids = [r[0] for r in rows(app, "#runs")]
        target = ids[0]
        await pilot.press("c", "n")  # declined: nothing happens
        await pilot.pause()
        assert status(env, target) == "waiting"
        await pilot.press("c")
        assert target in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await pilot.pause()
        assert [r[2] for r in rows(app, "#runs") if r[0] == target] == ["cancelled"]
    untouched = second if target == first else first
    assert status(env, target) == "cancelled"
    assert status(env, untouched) == "waiting"
    assert airun_nb.approvals(untouched, db=env)["status"].tolist() == ["open"]
    assert airun_nb.approvals(target, db=env)["channel"].tolist() == ["dashboard"]


@sync
async def test_roll_back_one_run_after_confirming(env: Path) -> None:
    keep = waiting(env, "other")
    # The dashboard has no notebook: the undo it runs must be importable (inline Python here).
    undo = Workflow.from_dict(PY_STEPS).run(db=env).run_id
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(160, 50)) as pilot:
        ids = [r[0] for r in rows(app, "#runs")]
        await pilot.press(*(["down"] * ids.index(undo)))
        await pilot.press("b")
        assert "Roll back run " + undo in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await pilot.pause()
    assert status(env, undo) == "cancelled" and status(env, keep) == "waiting"
    assert effects() == ["prepare", "prepare", "unprepare"]  # only the selected run was undone
    assert airun_nb.approvals(keep, db=env)["status"].tolist() == ["open"]


FORM_GATE = {
    "fields": {
        "amount": {"type": "number", "required": True},
        "pin": {"type": "string", "secret": True},
    },
    "options": ["ship", "hold"],
    "quorum": 2,
}


@sync
async def test_at_80x24_a_quorum_gate_shows_its_form_and_counts_votes(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In an 80x24 terminal the gate under the cursor shows its message, form and options; a
    wrong type is refused in one line with nothing recorded; bob's vote leaves the gate open at
    "1 of 2 approvals"; carol's closes it with bob's form and option."""
    run_id = waiting(env, "deploy", **FORM_GATE)
    monkeypatch.setenv("AIRUN_USER", "bob")
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        detail = str(app.query_one("#gate-detail").render())
        assert "Ship 3 rows?" in detail
        assert "form: amount (number, required), pin (string)" in detail
        assert "options: ship / hold" in detail
        assert "may decide: anyone but alice, who started the run; 2 distinct approvals needed" in (
            detail
        )
        shown = app.query_one("#gate-detail").region  # on screen, not scrolled away
        assert shown.height >= 4 and shown.bottom <= 24

        await pilot.press("a")  # the form: amount, pin, option, comment
        await pilot.pause()
        hints = [str(w.render()) for w in app.screen.query(".hint")]
        assert hints == ["amount (number, required)", "pin (string)", "option: ship / hold"]
        assert all(w.region.bottom <= 24 for w in app.screen.query("Input"))
        await pilot.press(*"lots", "enter", "enter", *"ship", "enter", "enter")
        await pilot.pause()
        assert "field 'amount' must be a number" in str(app.query_one("#message").render())
        assert airun_nb.approvals(run_id, db=env)["votes"].isna().all()

        await pilot.press("a", *"12", "enter", *"0000", "enter", *"ship", "enter", "enter")
        await pilot.pause()
        assert "1 of 2 approvals" in str(app.query_one("#message").render())
        assert rows(app, "#gates")[0][3] == "1 of 2 approvals"
    monkeypatch.setenv("AIRUN_USER", "carol")
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("g", "a", "enter", "enter", "enter", "enter")
        await pilot.pause()
        assert "with option ship" in str(app.query_one("#message").render())
        await pilot.press("s", "enter")
        await pilot.pause()
        assert "approved, waiting to resume" in str(app.query_one("#detail-title").render())
    gate = airun_nb.approvals(run_id, db=env).iloc[0]
    assert (gate["status"], gate["option"]) == ("approved", "ship")
    assert json.loads(gate["form"]) == {"amount": 12, "pin": "***"}
    votes = json.loads(gate["votes"])
    assert [(v["actor"], v["channel"]) for v in votes] == [
        ("bob", "dashboard"),
        ("carol", "dashboard"),
    ]


@sync
async def test_a_human_rejection_shows_as_rejected_not_failed(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After bob rejects and the run rolls back, the run's gate step reads "rejected" and the
    title says who rejected it and why."""
    run_id = waiting(env, "deploy")
    airun_nb.reject(run_id, "review", by="bob", comment="not now", db=env)
    Workflow.from_run(run_id, db=env).run(db=env, namespace=NAMESPACE, resume=run_id)
    app = Dashboard(Store.open(env))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        steps = {s[0]: s[2] for s in rows(app, "#steps")}
        assert steps["review"] == "rejected"
        title = str(app.query_one("#detail-title").render())
        assert "rolled back" in title and "Rejected by bob: not now" in title
