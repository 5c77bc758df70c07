"""`airun serve` watches the open gates: their reminders and escalation fire from the service,
and what the escalation added shows in the API's "may decide".

A real uvicorn process over a real DuckDB store; the test waits for the store to record what
the service did (never a sleep, never a timed assertion).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import yaml

import airun_nb
from airun_nb import Workflow
from support.service import make_token, running_server

SAFETY = 120.0


def spec(**approval: Any) -> str:
    doc = {
        "name": "payout",
        "steps": [
            {"id": "review", "approval": {"message": "Pay out?", **approval}},
            {"id": "pay", "needs": ["review"], "python": "result = 'paid'"},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def wait_for_event(db: Path, run_id: str, kind: str) -> list[dict[str, Any]]:
    limit = time.monotonic() + SAFETY
    tick = threading.Event()
    while True:
        df = airun_nb.events(run_id, db=db)
        found = df[df["kind"] == kind].to_dict("records")
        if found:
            return found
        assert time.monotonic() < limit, f"the service never recorded {kind}"
        tick.wait(0.2)  # a poll of the store


def test_the_service_escalates_an_open_gate_and_the_api_shows_who_may_decide(
    db: Path, tmp_path: Path
) -> None:
    """With only `airun serve` watching, ``escalate: {after: 1s, to: carol}`` is recorded by
    the service; the API's gate then lists carol among those who may decide, and carol's
    approval through the API closes the gate."""
    result = Workflow.from_yaml(
        spec(approvers=["bob"], escalate={"after": "1s", "to": "carol"}, remind="1s")
    ).run(db=db, raise_on_failure=False)
    assert result.status == "waiting"
    run_id = result.run_id
    with running_server(db, tmp_path) as server:
        escalated = wait_for_event(db, run_id, "gate_escalated")
        assert json.loads(escalated[0]["detail"])["to"] == ["carol"]
        wait_for_event(db, run_id, "gate_reminded")
        with server.client(make_token(db, "carol")) as client:
            gates = client.get("/v1/approvals").json()["approvals"]
            mine = [g for g in gates if g["run_id"] == run_id]
            assert mine, gates
            assert "carol" in mine[0]["approvers"]
            assert "escalated to carol" in mine[0]["who_may_decide"]
            answer = client.post(f"/v1/runs/{run_id}/gates/review/approve", json={})
            assert answer.status_code == 200, answer.text
    row = airun_nb.approvals(run_id, db=db).to_dict("records")[0]
    assert row["status"] == "approved" and row["actor"] == "carol"
