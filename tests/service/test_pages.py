"""The approval pages and signed gate links, against a real `airun serve` on 127.0.0.1.

A person logs in with a token (then holds a session cookie), forms carry a CSRF token, and a
notification's link finds the gate but still asks for a login. Browser clicks are tested in
tests/browser/test_approval_page.py; here the same pages are driven over HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import airun_nb
from airun_nb import Workflow
from airun_nb.gates import links as gatelinks
from support.service import NAMESPACE, Server, gated_spec, make_token, running_server


@pytest.fixture
def env(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG", "AIRUN_SERVICE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.chdir(tmp_path)
    return db


@pytest.fixture
def server(env: Path, tmp_path: Path) -> Iterator[Server]:
    with running_server(env, tmp_path) as srv:
        yield srv


def start(db: Path, sent: list[dict[str, Any]] | None = None, **approval: Any) -> str:
    ns = dict(NAMESPACE, collect=lambda payload: (sent if sent is not None else []).append(payload))
    result = Workflow.from_yaml(gated_spec(notify="collect", **approval)).run(
        db=db, namespace=ns, raise_on_failure=False
    )
    assert result.status == "waiting"
    return result.run_id


def csrf_of(page: httpx.Response) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, page.text[:500]
    return m.group(1)


def login(c: httpx.Client, token: str, next_url: str = "/") -> httpx.Response:
    form = c.get("/login", params={"next": next_url})
    return c.post("/login", data={"csrf": csrf_of(form), "token": token, "next": next_url})


def gate_status(db: Path, run_id: str) -> str:
    return str(airun_nb.approvals(run_id, db=db)["status"].iloc[0])


def test_a_token_login_then_a_form_decision_is_recorded_as_web(server: Server, env: Path) -> None:
    run_id = start(env)
    bob = make_token(env, "bob")
    with server.client() as c:
        first = c.get("/approvals")
        assert first.status_code == 303 and first.headers["location"].startswith("/login")
        bad = login(c, bob[:-3] + "abc")
        assert bad.status_code == 401 and "not valid" in bad.text
        assert login(c, bob).status_code == 303
        page = c.get("/approvals")
        assert page.status_code == 200
        assert "Ship 3 rows?" in page.text and f"/runs/{run_id}/gates/review/decide" in page.text
        done = c.post(
            f"/runs/{run_id}/gates/review/decide",
            data={"csrf": csrf_of(page), "decision": "approve", "comment": "fine by me"},
        )
        assert done.status_code == 303
        after = c.get(done.headers["location"])
        assert "Approved gate review" in after.text and "airun resume" in after.text
        assert "Approved by <b>bob</b>" in after.text and "via web" in after.text
    row = airun_nb.approvals(run_id, db=env).iloc[0]
    assert (row["actor"], row["channel"], row["comment"]) == ("bob", "web", "fine by me")


def test_a_form_post_without_the_csrf_token_is_refused_and_records_nothing(
    server: Server, env: Path
) -> None:
    run_id = start(env)
    with server.client() as c:
        login(c, make_token(env, "bob"))
        for data in ({"decision": "approve"}, {"decision": "approve", "csrf": "forged"}):
            resp = c.post(f"/runs/{run_id}/gates/review/decide", data=data)
            assert resp.status_code == 403 and "reload the page" in resp.text
        resp = c.post(f"/runs/{run_id}/cancel", data={"csrf": "forged"})
        assert resp.status_code == 403
    # a request from another site carries no session at all
    with server.client() as other:
        resp = other.post(f"/runs/{run_id}/gates/review/decide", data={"decision": "approve"})
        assert resp.status_code == 403
    assert gate_status(env, run_id) == "open"
    assert airun_nb.runs(db=env)["status"].tolist() == ["waiting"]


def test_the_launcher_sees_why_they_may_not_decide_and_a_revoked_session_ends(
    server: Server, env: Path
) -> None:
    run_id = start(env, approvers=["alice", "bob"])
    alice = make_token(env, "alice")
    with server.client() as c:
        login(c, alice)
        page = c.get(f"/runs/{run_id}")
        assert "four-eyes" in page.text and "/decide" not in page.text
        assert "Cancel this run" in page.text  # the launcher may cancel
        from airun_nb.service import tokens
        from airun_nb.store.database import Store

        tokens.revoke(Store.open(env), "alice")
        assert c.get(f"/runs/{run_id}").status_code == 303  # back to the login


def test_the_notification_link_finds_the_gate_after_a_login(server: Server, env: Path) -> None:
    sent: list[dict[str, Any]] = []
    run_id = start(env, sent, timeout="1h")
    link = sent[0]["link"]
    assert link.startswith(server.url + "/link/")
    assert sent[0]["commands"]["approve"] == f"airun approve {run_id} review"
    with server.client() as c:
        hop = c.get(link.removeprefix(server.url))
        assert hop.status_code == 303
        assert hop.headers["location"] == f"/runs/{run_id}/gates/review"
        gate_page = c.get(hop.headers["location"])
        assert gate_page.status_code == 303 and "/login?next=" in gate_page.headers["location"]
        login(c, make_token(env, "bob"), f"/runs/{run_id}/gates/review")
        shown = c.get(f"/runs/{run_id}/gates/review")
        assert "Ship 3 rows?" in shown.text and "Approve" in shown.text


def test_a_tampered_or_expired_link_is_refused(server: Server, env: Path) -> None:
    sent: list[dict[str, Any]] = []
    run_id = start(env, sent, timeout="1h")
    signed = sent[0]["link"].rsplit("/", 1)[1]
    flipped = signed[:-2] + ("A" if signed[-2] != "A" else "B") + signed[-1]
    secret = gatelinks.load_settings(env)["secret"]
    past = gatelinks.sign(secret, run_id, "review", deadline=1_000_000.0)
    forged = gatelinks.sign("not-the-secret", run_id, "review", deadline=4_000_000_000.0)
    with server.client() as c:
        for bad in (flipped, forged, "garbage"):
            resp = c.get(f"/link/{bad}")
            assert resp.status_code == 403 and "not valid" in resp.text
        resp = c.get(f"/link/{past}")
        assert resp.status_code == 410 and "expired at 1970-01-12" in resp.text


def test_a_link_expires_at_the_gates_deadline(env: Path) -> None:
    gatelinks.ensure_settings(env, "http://127.0.0.1:9")
    sent: list[dict[str, Any]] = []
    run_id = start(env, sent, timeout="1h")
    deadline = airun_nb.approvals(run_id, db=env)["deadline"].iloc[0].timestamp()
    secret = gatelinks.load_settings(env)["secret"]
    signed = sent[0]["link"].rsplit("/", 1)[1]
    assert gatelinks.verify(secret, signed, now=deadline - 1) == (run_id, "review")
    with pytest.raises(gatelinks.LinkError, match="expired"):
        gatelinks.verify(secret, signed, now=deadline + 0.01)


def test_without_a_service_the_notification_has_no_link(env: Path) -> None:
    sent: list[dict[str, Any]] = []
    start(env, sent)
    assert sent[0]["link"] is None


FORM_GATE: dict[str, Any] = {
    "fields": {
        "amount": {"type": "number", "required": True, "help": "EUR"},
        "pin": {"type": "string", "secret": True},
        "region": {"type": "choice", "choices": ["eu", "us"]},
    },
    "options": ["ship", "hold"],
    "quorum": 2,
}


def test_the_page_shows_the_form_takes_it_and_counts_votes(server: Server, env: Path) -> None:
    """The card shows who may decide, the typed inputs and the options; a wrong type comes back
    as one line and records nothing; posting the same form twice records one vote; the card
    says "1 of 2 approvals" until a second person approves, then "Approved by bob, carol"."""
    run_id = start(env, **FORM_GATE)
    with server.client() as c:
        login(c, make_token(env, "bob"))
        page = c.get(f"/runs/{run_id}/gates/review")
        text = page.text
        assert "Approval needed" in text
        assert "may decide: anyone but alice, who started the run; 2 distinct approvals" in text
        assert 'name="field.amount"' in text and 'type="number"' in text
        assert 'name="field.pin"' in text and 'type="password"' in text
        assert '<option value="eu"' in text and 'value="ship"' in text
        request_id = re.search(r'name="request_id" value="([0-9a-f]+)"', text)
        assert request_id
        base = {"csrf": csrf_of(page), "decision": "approve", "option": "ship"}
        bad = c.post(
            f"/runs/{run_id}/gates/review/decide",
            data={**base, "field.amount": "lots", "request_id": "a1"},
        )
        shown = c.get(bad.headers["location"]).text
        assert "field &#39;amount&#39; must be a number" in shown
        assert airun_nb.approvals(run_id, db=env)["votes"].isna().all()
        good = {
            **base,
            "field.amount": "12.5",
            "field.pin": "4321",
            "field.region": "eu",
            "request_id": request_id.group(1),
        }
        for _ in range(2):  # a double tap: the same form twice
            done = c.post(f"/runs/{run_id}/gates/review/decide", data=good)
            assert done.status_code == 303
        after = c.get(done.headers["location"]).text
        assert "1 of 2 approvals" in after and "Your vote on gate review" in after
        assert "bob already approved this gate" in after  # the form is gone for bob
    with server.client() as c:
        login(c, make_token(env, "carol"))
        page = c.get(f"/runs/{run_id}/gates/review")
        done = c.post(
            f"/runs/{run_id}/gates/review/decide",
            data={"csrf": csrf_of(page), "decision": "approve", "request_id": "c1"},
        )
        after = c.get(done.headers["location"]).text
        assert "Approved by bob, carol" in after and 'option <b class="option-chosen">ship' in after
        assert "4321" not in after and "***" in after
        run_page = c.get(f"/runs/{run_id}").text
        assert "approved, waiting to resume" in run_page
        assert "Cancel this run" not in run_page  # carol neither launched it nor is an admin
    row = airun_nb.approvals(run_id, db=env).iloc[0]
    votes = json.loads(row["votes"])
    assert [(v["actor"], v["channel"]) for v in votes] == [("bob", "web"), ("carol", "web")]


def test_a_rejected_run_reads_rejected_by_with_the_comment_not_failed(
    server: Server, env: Path
) -> None:
    """After a person's rejection and the rollback, the run page shows the gate's step as
    rejected with "Rejected by bob: <comment>" and the run as rolled back."""
    run_id = start(env)
    airun_nb.reject(run_id, "review", by="bob", comment="not this week", db=env)
    Workflow.from_run(run_id, db=env).run(
        db=env, namespace=dict(NAMESPACE, collect=print), resume=run_id
    )
    with server.client() as c:
        login(c, make_token(env, "bob"))
        page = c.get(f"/runs/{run_id}").text
    assert "rolled back" in page
    assert re.search(r'class="status s-rejected">rejected', page)
    assert 's-failed">failed' not in page
    assert "Rejected by bob: not this week" in page


def test_the_approvals_page_counts_gates_and_sorts_them_by_deadline(
    server: Server, env: Path
) -> None:
    """The heading counts the open gates; the gate due first comes first, with "due in ..."."""
    later = start(env, name="later", timeout="5h")
    sooner = start(env, name="sooner", timeout="2h")
    with server.client() as c:
        login(c, make_token(env, "bob"))
        text = c.get("/approvals").text
    assert re.search(r"id=.gate-count.>2<", text)
    assert text.index(f"gate-{sooner}-review") < text.index(f"gate-{later}-review")
    assert re.search(r"due in 1h 5\dm", text) and re.search(r"due in 4h 5\dm", text)


def test_after_a_decision_the_page_offers_the_next_gate_that_waits_for_you(
    server: Server, env: Path
) -> None:
    """A busy lead decides one of two open gates on the page: the confirmation links to the
    other one (the next that waits for them); deciding that one too says nothing else waits."""
    first = start(env)
    second = (
        Workflow.from_yaml(gated_spec(notify="collect"))
        .run(db=env, namespace=dict(NAMESPACE, collect=lambda payload: None), new=True)
        .run_id
    )
    assert second != first
    bob = make_token(env, "bob")
    with server.client() as c:
        login(c, bob)
        page = c.get("/approvals")
        done = c.post(
            f"/runs/{first}/gates/review/decide",
            data={"csrf": csrf_of(page), "decision": "approve"},
        )
        after = c.get(done.headers["location"])
        assert f'href="/runs/{second}/gates/review"' in after.text, after.text
        assert f"Next: gate review of run {second}" in after.text
        nxt = c.get(f"/runs/{second}/gates/review")
        done = c.post(
            f"/runs/{second}/gates/review/decide",
            data={"csrf": csrf_of(nxt), "decision": "reject", "comment": "not now"},
        )
        last = c.get(done.headers["location"])
        assert "Nothing else waits for you." in last.text and "Next: gate" not in last.text
    assert gate_status(env, first) == "approved" and gate_status(env, second) == "rejected"
