"""A gate's follow-ups, written by the workflow, cannot spam or let the wrong person decide.

``approval.remind`` and ``approval.escalate`` come from untrusted workflow text. A tiny period
must not turn a gate into a stream of notifications (at most ``MAX_REMINDERS``, whatever the
period and however long the gate stays open), and an escalation that names the run's launcher
must not let the launcher decide a four-eyes gate. Real DuckDB stores; follow-ups are measured
on the store's clock, so a gate that "has been open for hours" is one whose recorded opening
lies hours back (written through the one writer), never a wait.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sec_support import World

from airun_nb import Workflow
from airun_nb.errors import AirunError
from airun_nb.gates import followup
from airun_nb.gates import gate as gate_mod
from airun_nb.spec.approval import MAX_REMINDERS, MIN_FOLLOW_UP, ApprovalError, parse_config
from airun_nb.store import transitions
from airun_nb.store.database import Store


def _spec(approval: dict[str, Any]) -> str:
    doc = {
        "name": "payout",
        "steps": [
            {"id": "review", "approval": {"message": "Pay out?", **approval}},
            {"id": "pay", "needs": ["review"], "python": "result = 'paid'"},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _open_since(db: Path, approval: dict[str, Any], seconds: float) -> tuple[Store, str]:
    """Start the workflow (its gate opens) and record the gate as open for ``seconds``."""
    result = Workflow.from_yaml(_spec(approval)).run(db=db, raise_on_failure=False)
    assert result.status == "waiting"
    store = Store.open(db)
    with store.session("backdating the gate"):
        row = store.gate_row(result.run_id, "review")
        assert row is not None
        opened = gate_mod._epoch(row["opened_at"]) - seconds
        transitions.commit(store, [gate_mod._record({**row, "opened_at": opened})])
    return store, result.run_id


def _reminders(store: Store, run_id: str) -> list[int]:
    found = store.gate_events(run_id, "review", (followup.REMINDED,))
    return [int(json.loads(e["detail"])["period"]) for e in found]


def test_reminders_stop_at_the_cap_however_short_the_period(world: World) -> None:
    """A gate with ``remind: 1s`` open for a day: the watcher records one reminder (the
    latest period, capped at MAX_REMINDERS) and then has nothing left to send; sweeping again
    sends nothing."""
    store, run_id = _open_since(world.store, {"remind": "1s"}, 86_400)
    first = followup.sweep(store)
    assert [f.period for f in first.fired if f.kind == "reminder"] == [MAX_REMINDERS]
    assert first.next_due is None
    again = followup.sweep(store)
    assert again.fired == [] and again.next_due is None
    assert _reminders(store, run_id) == [MAX_REMINDERS]


def test_an_escalation_to_the_launcher_does_not_let_them_decide(world: World) -> None:
    """``escalate: {to: <the launcher>}`` on a gate with approvers: after the escalation the
    launcher is still refused (four-eyes), the gate stays open and no decision is recorded."""
    result = Workflow.from_yaml(_spec({"approvers": ["alice"]})).run(raise_on_failure=False)
    launcher = Store.open(world.store).gate_row(result.run_id, "review")["launched_by"]  # type: ignore[index]
    store, run_id = _open_since(
        world.store,
        {"approvers": ["alice"], "escalate": {"after": "1s", "to": [launcher, "role:nobody"]}},
        3_600,
    )
    fired = followup.sweep(store).fired
    assert [f.kind for f in fired] == ["escalation"]
    with pytest.raises(ApprovalError):
        gate_mod.decide(
            store, run_id, "review", "approve", actor=launcher, channel="cli", recorded_by=launcher
        )
    row = store.gate_row(run_id, "review")
    assert row is not None and row["status"] == "open" and not row.get("votes")


_HOSTILE = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["0s", "1ms", "10ms", "0.5s", "-1h", "1e-9s", "1s", "nan", "inf", "{{ 1 }}"]),
    st.none(),
)
_WHO = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["mallory", "role:admin", "role:", "*", "", " mallory "]),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
    database=None,
)
@given(
    remind=_HOSTILE,
    after=_HOSTILE,
    to=st.one_of(_WHO, st.lists(_WHO, max_size=4), st.integers()),
    approvers=st.lists(_WHO, min_size=1, max_size=3),
)
def test_hostile_follow_up_fields_never_let_the_launcher_decide(
    remind: Any, after: Any, to: Any, approvers: list[str]
) -> None:
    """Whatever a workflow writes in ``remind``, ``escalate.after``, ``escalate.to`` and
    ``approvers``: the gate is refused in one line, or its periods are at least the floor, and
    once escalated its launcher ("mallory") still cannot decide it (four-eyes)."""
    body: dict[str, Any] = {"approvers": approvers, "remind": remind}
    body["escalate"] = {"after": after, "to": to}
    try:
        conf = parse_config(body, step="review")
    except AirunError as exc:
        assert "\n" not in exc.message.strip()
        return
    assert conf.remind is None or conf.remind >= MIN_FOLLOW_UP
    assert conf.escalate_after is None or conf.escalate_after >= MIN_FOLLOW_UP
    settings_ = gate_mod._settings(conf)
    spec = json.loads(settings_["form_spec"] or "{}")
    spec["escalated"] = conf.escalate_to
    row = {
        **settings_,
        "run_id": "r-1",
        "gate_id": "review",
        "launched_by": "mallory",
        "form_spec": json.dumps(spec),
    }
    with pytest.raises(ApprovalError):
        gate_mod.check_actor(row, "mallory")
