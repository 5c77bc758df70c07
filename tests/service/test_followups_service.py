"""`airun serve` watches the open gates: their reminders and escalation fire from the service,
and what the escalation added shows in the API's "may decide"; a delegate decides through it.

A real uvicorn process over a real DuckDB store; the test waits for the store to record what
the service did (never a sleep, never a timed assertion).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import airun_nb
from airun_nb import Workflow
from airun_nb.gates import delegation
from airun_nb.store.database import Store
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


def login(browser: httpx.Client, token: str) -> None:
    form = browser.get("/login", params={"next": "/"})
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    done = browser.post("/login", data={"csrf": csrf.group(1), "token": token, "next": "/"})
    assert done.status_code == 303


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


def test_a_delegate_sees_and_decides_the_gate_through_the_api_and_the_page(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After bob delegates to carol, carol's token lists bob's gate among those she may decide
    (saying for whom), her page shows the form with "You decide for bob", and her approval
    through the API is recorded for bob with her name beside it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("roles:\n  lead: [bob]\ndelegation:\n  allow: [role:lead]\n")
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_USER", "alice")
    run_id = (
        Workflow.from_yaml(spec(approvers=["role:lead"])).run(db=db, raise_on_failure=False).run_id
    )
    monkeypatch.setenv("AIRUN_USER", "bob")
    delegation.grant(Store.open(db), to="carol", until="2099-12-31")
    token = make_token(db, "carol")
    with running_server(db, tmp_path) as server:
        with server.client() as browser:
            login(browser, token)
            assert "You decide for bob (delegated)" in browser.get("/approvals").text
        with server.client(token) as client:
            listed = client.get("/v1/approvals").json()["approvals"]
            mine = [g for g in listed if g["run_id"] == run_id]
            assert mine and mine[0]["acting_for"] == "bob"
            answer = client.post(
                f"/v1/runs/{run_id}/gates/review/approve", json={"comment": "for bob"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["delegated"] == {"bob": "carol"}
        with server.client() as browser:
            login(browser, token)
            assert "Approved by carol for bob" in browser.get(f"/runs/{run_id}").text
    row = Store.open(db).gate_row(run_id, "review")
    assert row is not None and row["actor"] == "bob"
    vote = json.loads(row["votes"])[0]
    assert (vote["actor"], vote["delegate"], vote["channel"]) == ("bob", "carol", "api")
