"""Forms, options, quorum and idempotent decisions through the REST API of a real `airun serve`.

Runs start in this process through the workflow API over a real DuckDB store in tmp_path; the
server is a separate uvicorn process over the same store, reached with httpx. Each test reads
back what the store recorded (the approvals, events and audit frames), not what the API said.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import airun_nb
from airun_nb import Workflow
from airun_nb.result import RunResult
from support.service import Server, make_token, running_server

USERS = ("alice", "bob", "carol", "dave", "erin", "lena", "cora")


def _effect(what: str) -> None:
    with open("effects.log", "a") as fh:
        fh.write(what + "\n")


def effects() -> list[str]:
    p = Path("effects.log")
    return p.read_text().split() if p.exists() else []


def prepare() -> dict[str, Any]:
    _effect("prepare")
    return {"rows": 3}


def unprepare() -> None:
    _effect("unprepare")


def ship(amount: Any, option: Any, by: Any) -> str:
    _effect(f"ship:{amount}:{option}:{'+'.join(by)}")
    return "shipped"


def hold() -> str:
    _effect("hold")
    return "held"


NAMESPACE = {"prepare": prepare, "unprepare": unprepare, "ship": ship, "hold": hold}


def spec(name: str, **approval: Any) -> str:
    """prepare (compensated) -> review (the gate) -> ship when option is ship, hold when hold."""
    gate = {
        "message": "Ship {{ steps.prepare.output.rows }} rows?",
        "fields": {
            "amount": {"type": "number", "required": True, "help": "EUR"},
            "ticket": {"type": "string"},
            "pin": {"type": "string", "secret": True},
        },
        "options": ["ship", "hold"],
        **approval,
    }
    doc = {
        "name": name,
        "steps": [
            {"id": "prepare", "call": "prepare", "compensate": {"call": "unprepare"}},
            {"id": "review", "needs": ["prepare"], "approval": gate},
            {
                "id": "ship",
                "needs": ["review"],
                "when": "{{ steps.review.output.option == 'ship' }}",
                "call": "ship",
                "with": {
                    "amount": "{{ steps.review.output.form.amount }}",
                    "option": "{{ steps.review.output.option }}",
                    "by": "{{ steps.review.output.by }}",
                },
            },
            {
                "id": "hold",
                "needs": ["review"],
                "when": "{{ steps.review.output.option == 'hold' }}",
                "call": "hold",
            },
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, Server, dict[str, str]]]:
    """One server for the module over one store, with roles from a settings file."""
    folder = tmp_path_factory.mktemp("decisions")
    db = folder / "d.duckdb"
    settings = folder / "settings.yaml"
    settings.write_text(
        yaml.safe_dump({"roles": {"lead": ["lena", "bob"], "compliance": ["cora"]}})
    )
    with running_server(db, folder, env={"AIRUN_CONFIG": str(settings)}) as srv:
        yield db, srv, {u: make_token(db, u) for u in USERS}


@pytest.fixture
def ctx(
    shared: tuple[Path, Server, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> tuple[Path, Server, dict[str, str], str]:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_LOCK_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    db = shared[0]
    monkeypatch.setenv("AIRUN_CONFIG", str(db.parent / "settings.yaml"))
    monkeypatch.setenv("AIRUN_DB", str(db))
    monkeypatch.setenv("AIRUN_USER", "alice")  # alice launches every run
    monkeypatch.chdir(tmp_path)
    return db, shared[1], shared[2], request.node.name.removeprefix("test_")[:40]


def start(db: Path, name: str, **approval: Any) -> RunResult:
    result = Workflow.from_yaml(spec(name, **approval)).run(
        db=db, namespace=NAMESPACE, raise_on_failure=False
    )
    assert result.status == "waiting"
    return result


def resume(db: Path, run_id: str) -> RunResult:
    return Workflow.from_run(run_id, db=db).run(
        db=db, namespace=NAMESPACE, resume=run_id, raise_on_failure=False
    )


def gate(db: Path, run_id: str) -> dict[str, Any]:
    rows = airun_nb.approvals(run_id, db=db).to_dict("records")
    assert len(rows) == 1
    row = rows[0]
    row["votes"] = json.loads(row["votes"]) if isinstance(row["votes"], str) else []
    return row


def human_audit(db: Path, run_id: str) -> list[dict[str, Any]]:
    df = airun_nb.audit(run_id, db=db)
    return df[df["kind"] == "human"].to_dict("records")


def kinds(db: Path, run_id: str) -> list[str]:
    return list(airun_nb.events(run_id, db=db)["kind"])


def error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    message = resp.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return str(message)


def url(run_id: str, verb: str = "approve") -> str:
    return f"/v1/runs/{run_id}/gates/review/{verb}"


# -- forms and options -------------------------------------------------------------------------


def test_a_valid_form_and_option_are_the_gates_output_and_pick_the_branch(ctx: Any) -> None:
    """The typed values and the option are recorded, the later step reads them through
    ``steps.review.output`` and only the chosen option's branch runs."""
    db, server, tokens, name = ctx
    run = start(db, name)
    with server.client(tokens["bob"]) as c:
        listed = [
            g for g in c.get("/v1/approvals").json()["approvals"] if g["run_id"] == run.run_id
        ]
        assert [f["name"] for f in listed[0]["fields"]] == ["amount", "ticket", "pin"]
        assert listed[0]["options"] == ["ship", "hold"]
        assert "--set amount=..." in listed[0]["commands"]["approve"]
        resp = c.post(
            url(run.run_id),
            json={"form": {"amount": "12.5", "ticket": "T-9"}, "option": "ship", "comment": "ok"},
        )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["decision"], out["option"], out["by"]) == ("approved", "ship", ["bob"])
    assert out["form"] == {"amount": 12.5, "ticket": "T-9", "pin": None}
    row = gate(db, run.run_id)
    assert (row["status"], row["option"]) == ("approved", "ship")
    assert [(v["actor"], v["channel"]) for v in row["votes"]] == [("bob", "api")]
    assert resume(db, run.run_id).status == "completed"
    assert effects() == ["prepare", "ship:12.5:ship:bob"]


def test_the_hold_option_takes_the_other_branch(ctx: Any) -> None:
    """Choosing ``hold`` skips the ``ship`` step and runs ``hold``."""
    db, server, tokens, name = ctx
    run = start(db, name)
    with server.client(tokens["carol"]) as c:
        resp = c.post(url(run.run_id), json={"form": {"amount": 1}, "option": "hold"})
    assert resp.status_code == 200, resp.text
    done = resume(db, run.run_id)
    assert done.status == "completed"
    assert effects() == ["prepare", "hold"]
    statuses = dict(airun_nb.steps(run.run_id, db=db)[["step_id", "status"]].values.tolist())
    assert statuses["ship"] == "skipped" and statuses["hold"] == "completed"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"form": {"amount": "a lot"}, "option": "ship"}, "field 'amount' must be a number"),
        ({"form": {"ticket": "T-1"}, "option": "ship"}, "field 'amount' is required"),
        ({"form": {"amount": 3}}, "choose an option: ship, hold"),
        ({"form": {"amount": 3}, "option": "later"}, "option must be one of ship, hold"),
        ({"form": {"amount": 3, "colour": "red"}, "option": "ship"}, "has no field 'colour'"),
        ({"form": "amount=3", "option": "ship"}, "form must be an object"),
    ],
)
def test_a_bad_form_is_one_line_and_nothing_is_recorded(
    ctx: Any, body: dict[str, Any], says: str
) -> None:
    """Wrong type, missing required field, missing or unknown option, unknown field: 400 with
    one line naming the problem; the gate stays open with no vote, event or audit row."""
    db, server, tokens, name = ctx
    run = start(db, name)
    with server.client(tokens["bob"]) as c:
        assert says in error(c.post(url(run.run_id), json=body), 400)
    row = gate(db, run.run_id)
    assert row["status"] == "open" and row["votes"] == []
    assert human_audit(db, run.run_id) == []
    assert "gate_voted" not in kinds(db, run.run_id) and "gate_decided" not in kinds(db, run.run_id)


def test_a_secret_field_is_checked_and_never_stored(ctx: Any) -> None:
    """A secret field's value is validated, then kept nowhere: the output, the vote, the
    events and the audit trail show *** and the store files do not contain it."""
    db, server, tokens, name = ctx
    run = start(db, name)
    secret = "pin-7f3a9c2e51"
    with server.client(tokens["bob"]) as c:
        resp = c.post(
            url(run.run_id), json={"form": {"amount": 2, "pin": secret}, "option": "ship"}
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["form"]["pin"] == "***"
    row = gate(db, run.run_id)
    assert json.loads(row["form"])["pin"] == "***" and row["votes"][0]["form"]["pin"] == "***"
    every = json.dumps(
        [
            airun_nb.events(run.run_id, db=db).astype(str).to_dict("records"),
            airun_nb.audit(run.run_id, db=db).astype(str).to_dict("records"),
            airun_nb.approvals(run.run_id, db=db).astype(str).to_dict("records"),
        ]
    )
    assert secret not in every
    for path in db.parent.iterdir():
        if path.is_file() and path.name.startswith(db.name):
            assert secret.encode() not in path.read_bytes(), path


# -- quorum -------------------------------------------------------------------------------------


def test_four_clients_voting_at_once_on_a_quorum_of_two_count_exactly_two(ctx: Any) -> None:
    """Four approvers click at the same moment on a gate that needs two: exactly two votes are
    counted (one answers "1 of 2", one closes the gate), the other two get 409."""
    db, server, tokens, name = ctx
    run = start(db, name, quorum=2, approvers=["bob", "carol", "dave", "erin"])
    barrier = threading.Barrier(4)
    results: dict[str, httpx.Response] = {}

    def vote(user: str) -> None:
        with server.client(tokens[user]) as c:
            barrier.wait()
            results[user] = c.post(
                url(run.run_id), json={"form": {"amount": 5}, "option": "ship", "comment": user}
            )

    threads = [threading.Thread(target=vote, args=(u,)) for u in ("bob", "carol", "dave", "erin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 200, 409, 409], {u: r.text for u, r in results.items()}
    counted = [u for u, r in results.items() if r.status_code == 200]
    answers = sorted(str(results[u].json()["status"]) for u in counted)
    assert answers == ["approved", "open"]
    for user, resp in results.items():
        if user not in counted:
            assert "already approved" in error(resp, 409)
    row = gate(db, run.run_id)
    assert row["status"] == "approved"
    assert sorted(v["actor"] for v in row["votes"]) == sorted(counted)
    assert sorted(a["principal"] for a in human_audit(db, run.run_id)) == sorted(counted)
    assert kinds(db, run.run_id).count("gate_voted") == 1
    assert kinds(db, run.run_id).count("gate_decided") == 1
    assert resume(db, run.run_id).status == "completed"
    by = [v["actor"] for v in row["votes"]]
    assert effects() == ["prepare", f"ship:5:ship:{'+'.join(by)}"]


def test_a_quorum_gate_stays_open_with_its_count_and_one_person_counts_once(ctx: Any) -> None:
    """The first approval leaves the gate open, saying "1 of 2 approvals" on the API; the same
    person again is refused (409) and not counted; a second person closes it."""
    db, server, tokens, name = ctx
    run = start(db, name, quorum=2)
    with server.client(tokens["bob"]) as bob:
        first = bob.post(url(run.run_id), json={"form": {"amount": 9}, "option": "ship"})
        assert first.status_code == 200 and first.json()["status"] == "open"
        assert first.json()["progress"] == "1 of 2 approvals"
        again = error(bob.post(url(run.run_id), json={"option": "ship"}), 409)
        assert "bob already approved" in again and "each person counts once" in again
        detail = bob.get(f"/v1/runs/{run.run_id}").json()
    assert detail["gates"][0]["progress"] == "1 of 2 approvals"
    assert detail["state"] == "waiting for approval"
    assert "2 distinct approvals needed" in detail["gates"][0]["who_may_decide"]
    assert len(gate(db, run.run_id)["votes"]) == 1
    with server.client(tokens["carol"]) as carol:
        # a later approver may leave the form out; a different option is refused
        assert "approve that option or reject" in error(
            carol.post(url(run.run_id), json={"option": "hold"}), 400
        )
        closed = carol.post(url(run.run_id), json={})
        assert closed.status_code == 200, closed.text
        assert closed.json()["by"] == ["bob", "carol"] and closed.json()["form"]["amount"] == 9
        detail = carol.get(f"/v1/runs/{run.run_id}").json()
    assert detail["state"] == "approved, waiting to resume"
    assert "airun resume" in detail["resumed_by"]


def test_one_rejection_closes_a_quorum_gate_and_the_run_rolls_back(ctx: Any) -> None:
    """After one approval of two, a rejection closes the gate as rejected (by the rejecter, with
    their comment); resuming rolls the run back."""
    db, server, tokens, name = ctx
    run = start(db, name, quorum=2)
    with server.client(tokens["bob"]) as c:
        assert (
            c.post(url(run.run_id), json={"form": {"amount": 1}, "option": "ship"}).json()["status"]
            == "open"
        )
    with server.client(tokens["carol"]) as c:
        resp = c.post(url(run.run_id, "reject"), json={"comment": "numbers are off"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["decision"], resp.json()["by"]) == ("rejected", ["carol"])
    row = gate(db, run.run_id)
    assert (row["status"], row["actor"], row["comment"]) == ("rejected", "carol", "numbers are off")
    assert resume(db, run.run_id).status == "rolled_back"
    assert effects() == ["prepare", "unprepare"]


def test_reject_quorum_needs_that_many_rejections(ctx: Any) -> None:
    """With ``reject_quorum: 2`` one rejection is only a vote; the second closes the gate."""
    db, server, tokens, name = ctx
    run = start(db, name, quorum=2, reject_quorum=2)
    with server.client(tokens["bob"]) as c:
        first = c.post(url(run.run_id, "reject"), json={"comment": "no"})
        assert first.json()["status"] == "open"
        assert "1 of 2 rejections" in first.json()["progress"]
    with server.client(tokens["carol"]) as c:
        assert c.post(url(run.run_id, "reject")).json()["status"] == "rejected"
    assert gate(db, run.run_id)["status"] == "rejected"


def test_require_per_group_counts_each_person_for_one_group(ctx: Any) -> None:
    """``require: {role:lead: 1, role:compliance: 1}``: two leads do not make it; a lead and
    compliance do. Someone in neither group may not vote."""
    db, server, tokens, name = ctx
    run = start(db, name, require={"role:lead": 1, "role:compliance": 1})
    with server.client(tokens["erin"]) as c:
        assert "erin may not decide" in error(c.post(url(run.run_id), json={}), 403)
    with server.client(tokens["lena"]) as c:
        resp = c.post(url(run.run_id), json={"form": {"amount": 4}, "option": "ship"})
        assert resp.json()["progress"] == "1 of 2 approvals (still needs role:compliance)"
    with server.client(tokens["bob"]) as c:  # a second lead counts, but compliance is missing
        resp = c.post(url(run.run_id), json={})
        assert resp.json()["status"] == "open", resp.text
    with server.client(tokens["cora"]) as c:
        resp = c.post(url(run.run_id), json={})
        assert resp.json()["status"] == "approved", resp.text
    assert [v["actor"] for v in gate(db, run.run_id)["votes"]] == ["lena", "bob", "cora"]


# -- idempotent decisions -----------------------------------------------------------------------


def test_a_retried_request_returns_the_first_answer_not_409(ctx: Any) -> None:
    """The same request id again (a client retrying after a lost response) gets 200 with the
    first answer and records nothing new; another request by the same person gets 409."""
    db, server, tokens, name = ctx
    run = start(db, name)
    body = {"form": {"amount": 3}, "option": "ship", "request_id": "req-1"}
    with server.client(tokens["bob"]) as c:
        first = c.post(url(run.run_id), json=body)
        retry = c.post(url(run.run_id), json=body)
        other = c.post(url(run.run_id), json={**body, "request_id": "req-2"})
    assert first.status_code == 200 and retry.status_code == 200, retry.text
    assert retry.json()["repeated"] is True
    assert {k: v for k, v in retry.json().items() if k != "repeated"} == first.json()
    assert "already approved by bob" in error(other, 409)
    with server.client(tokens["carol"]) as c:  # someone else's request id is not a key
        assert "already used by bob" in error(c.post(url(run.run_id), json=body), 403)
    assert len(gate(db, run.run_id)["votes"]) == 1
    assert kinds(db, run.run_id).count("gate_decided") == 1
    assert len(human_audit(db, run.run_id)) == 1
