"""The approval service's REST API, against a real `airun serve` on 127.0.0.1.

Runs are started in this process through the workflow API (a real DuckDB store in tmp_path;
for the tests marked ``ON_BOTH``, a PostgreSQL database too);
the server is a separate process over the same store, reached with httpx. Tokens come from the
real `airun token` command.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import airun_nb
from airun_nb import Workflow
from airun_nb.result import RunResult
from support import AIRUN
from support.service import (
    NAMESPACE,
    Server,
    effects,
    gated_spec,
    make_token,
    running_server,
)


@dataclass
class Ctx:
    """The shared store and the workflow name this test's runs use (unique per test)."""

    db: Path
    name: str


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, Server, dict[str, str]]]:
    """One server for the module, over one store; one token per user. The store is a DuckDB
    file, or (for the tests marked ``ON_BOTH`` backends) a PostgreSQL database."""
    folder = tmp_path_factory.mktemp("service")
    db: Any = folder / "s.duckdb"
    server_url = None
    if getattr(request, "param", "duckdb") == "postgres":
        from support.postgres import create_database

        server_url = request.getfixturevalue("pg_server")
        db = create_database(server_url)
    try:
        with running_server(db, folder) as srv:
            users = ("alice", "bob", "carol", "dave", "erin", "ben")
            yield db, srv, {u: make_token(db, u) for u in users}
    finally:
        if server_url is not None:
            from support.postgres import drop_database

            drop_database(server_url, db)


# The representative tests that also run against a PostgreSQL team store (the rest of the
# module runs on the DuckDB file only, to keep the suite fast).
ON_BOTH = pytest.mark.parametrize("shared", ["duckdb", "postgres"], indirect=True)


@pytest.fixture
def env(
    shared: tuple[Path, Server, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Ctx:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG", "AIRUN_LOCK_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_DB", str(shared[0]))
    monkeypatch.setenv("AIRUN_USER", "alice")  # alice launches every run
    monkeypatch.chdir(tmp_path)  # effects.log of this test's runs
    return Ctx(shared[0], request.node.name.removeprefix("test_")[:40])


@pytest.fixture
def server(shared: tuple[Path, Server, dict[str, str]]) -> Server:
    return shared[1]


@pytest.fixture
def tokens(shared: tuple[Path, Server, dict[str, str]]) -> dict[str, str]:
    return shared[2]


def start(ctx: Ctx, name: str | None = None, **approval: Any) -> RunResult:
    result = Workflow.from_yaml(gated_spec(name or ctx.name, **approval)).run(
        db=ctx.db, namespace=NAMESPACE, raise_on_failure=False
    )
    assert result.status == "waiting"
    return result


def resume(ctx: Ctx, run_id: str) -> RunResult:
    return Workflow.from_run(run_id, db=ctx.db).run(
        db=ctx.db, namespace=NAMESPACE, resume=run_id, raise_on_failure=False
    )


def gate_row(db: Path, run_id: str) -> dict[str, Any]:
    rows = airun_nb.approvals(run_id, db=db).to_dict("records")
    assert len(rows) == 1
    return rows[0]


def human_audit(db: Path, run_id: str) -> list[dict[str, Any]]:
    df = airun_nb.audit(run_id, db=db)
    return df[df["kind"] == "human"].to_dict("records")


def open_for(c: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """The caller's decidable open gates of one run, from GET /v1/approvals."""
    return [g for g in c.get("/v1/approvals").json()["approvals"] if g["run_id"] == run_id]


def one_line_error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    message = resp.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    assert "Traceback" not in message
    return message


# -- authentication -------------------------------------------------------------------------------


def test_no_wrong_or_revoked_token_is_401_and_a_valid_one_reads(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    run = start(env)
    with server.client() as anon:
        assert "Bearer" in anon.get("/v1/runs").headers["www-authenticate"]
        assert "authentication required" in one_line_error(anon.get("/v1/runs"), 401)
        one_line_error(anon.post(f"/v1/runs/{run.run_id}/gates/review/approve"), 401)
        assert anon.get("/v1/health").json()["status"] == "ok"
    wrong = tokens["ben"][:-4] + "xxxx"
    with server.client(wrong) as c:
        assert "not valid" in one_line_error(c.get("/v1/runs"), 401)
    with server.client("not-even-a-token") as c:
        one_line_error(c.get("/v1/runs"), 401)
    with server.client(tokens["ben"]) as c:
        listed = c.get("/v1/runs", params={"workflow": env.name}).json()["runs"]
        assert [r["run_id"] for r in listed] == [run.run_id]
        assert listed[0]["status"] == "waiting" and listed[0]["open_gates"] == 1
    subprocess.run([*AIRUN, "token", "revoke", "ben", "--db", str(env.db)], check=True, timeout=120)
    with server.client(tokens["ben"]) as c:
        one_line_error(c.get("/v1/runs"), 401)
        one_line_error(c.post(f"/v1/runs/{run.run_id}/gates/review/approve"), 401)
    assert gate_row(env.db, run.run_id)["status"] == "open"


def test_a_viewer_token_reads_but_may_not_decide(server: Server, env: Ctx) -> None:
    run = start(env)
    viewer = make_token(env.db, "vera", role="viewer")
    with server.client(viewer) as c:
        assert c.get(f"/v1/runs/{run.run_id}").status_code == 200
        assert "may only read" in one_line_error(
            c.post(f"/v1/runs/{run.run_id}/gates/review/approve"), 403
        )
    assert gate_row(env.db, run.run_id)["status"] == "open"


# -- decisions ------------------------------------------------------------------------------------


@ON_BOTH
def test_approve_through_the_api_then_the_run_resumes_to_the_end(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    run = start(env, approvers=["bob"])
    with server.client(tokens["bob"]) as c:
        pending = open_for(c, run.run_id)
        assert [g["gate_id"] for g in pending] == ["review"]
        assert pending[0]["message"] == "Ship 3 rows?" and pending[0]["may_decide"]
        resp = c.post(
            f"/v1/runs/{run.run_id}/gates/review/approve", json={"comment": "looks right"}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["decision"] == "approved" and resp.json()["by"] == ["bob"]
        assert open_for(c, run.run_id) == []
    row = gate_row(env.db, run.run_id)
    assert (row["actor"], row["channel"], row["comment"]) == ("bob", "api", "looks right")
    audit = human_audit(env.db, run.run_id)
    assert [(a["principal"], a["decision"]) for a in audit] == [("bob", "approve")]
    assert json.loads(audit[0]["arguments"])["channel"] == "api"
    assert resume(env, run.run_id).status == "completed"
    assert effects() == ["prepare", "ship"]


def test_reject_through_the_api_rolls_the_run_back_when_it_resumes(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    run = start(env)
    with server.client(tokens["carol"]) as c:
        resp = c.post(f"/v1/runs/{run.run_id}/gates/review/reject", json={"comment": "no"})
        assert resp.status_code == 200 and resp.json()["decision"] == "rejected"
        detail = c.get(f"/v1/runs/{run.run_id}").json()
    assert detail["gates"][0]["status"] == "rejected"
    assert {s["step_id"] for s in detail["steps"]} == {"prepare", "review", "ship"}
    assert resume(env, run.run_id).status == "rolled_back"
    assert effects() == ["prepare", "unprepare"]


def test_a_non_approver_is_refused_and_nothing_is_recorded(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    run = start(env, approvers=["bob"])
    with server.client(tokens["carol"]) as c:
        assert open_for(c, run.run_id) == []
        msg = one_line_error(c.post(f"/v1/runs/{run.run_id}/gates/review/approve"), 403)
        assert "carol may not decide" in msg and "bob" in msg
    assert gate_row(env.db, run.run_id)["status"] == "open"
    assert human_audit(env.db, run.run_id) == []


@ON_BOTH
def test_four_eyes_goes_by_the_token_not_by_a_claimed_name(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    run = start(env, approvers=["alice", "bob"])  # alice is listed, but she launched it
    with server.client(tokens["alice"]) as c:
        assert "four-eyes" in one_line_error(
            c.post(f"/v1/runs/{run.run_id}/gates/review/approve"), 403
        )
        assert open_for(c, run.run_id) == []
    with server.client(tokens["bob"]) as c:
        # the body cannot claim another identity
        assert "unknown field 'by'" in one_line_error(
            c.post(f"/v1/runs/{run.run_id}/gates/review/approve", json={"by": "carol"}), 400
        )
        assert c.post(f"/v1/runs/{run.run_id}/gates/review/approve").status_code == 200
    assert gate_row(env.db, run.run_id)["actor"] == "bob"


@ON_BOTH
def test_four_clients_approving_at_once_record_exactly_one_decision(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    run = start(env, approvers=["bob", "carol", "dave", "erin"])
    barrier = threading.Barrier(4)
    results: dict[str, httpx.Response] = {}

    def click(user: str) -> None:
        with server.client(tokens[user]) as c:
            barrier.wait()
            results[user] = c.post(
                f"/v1/runs/{run.run_id}/gates/review/approve", json={"comment": user}
            )

    threads = [threading.Thread(target=click, args=(u,)) for u in ("bob", "carol", "dave", "erin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409, 409, 409], {u: r.text for u, r in results.items()}
    winner = next(u for u, r in results.items() if r.status_code == 200)
    for user, resp in results.items():
        if user != winner:
            assert f"already approved by {winner}" in one_line_error(resp, 409)
    row = gate_row(env.db, run.run_id)
    assert (row["actor"], row["comment"]) == (winner, winner)
    assert [a["principal"] for a in human_audit(env.db, run.run_id)] == [winner]
    decided = airun_nb.events(run.run_id, db=env.db)
    assert (decided["kind"] == "gate_decided").sum() == 1


# -- the event stream -----------------------------------------------------------------------------


def test_the_event_stream_delivers_a_runs_transitions_in_order(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    seen: list[dict[str, Any]] = []
    target: list[str] = []  # the run whose run_completed ends the listening
    ready = threading.Event()
    done = threading.Event()

    def listen() -> None:
        with (
            server.client(tokens["bob"]) as c,
            # from the store's first event: nothing the run does can fall before the cursor
            c.stream("GET", "/v1/events?after=0", timeout=httpx.Timeout(60, read=60)) as resp,
        ):
            assert resp.headers["content-type"].startswith("text/event-stream")
            ready.set()
            event = None
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "transition":
                    seen.append(json.loads(line.split(":", 1)[1]))
                    if seen[-1]["kind"] == "run_completed" and seen[-1]["run_id"] in target:
                        done.set()
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(30), "the stream did not open"
    run = start(env)
    target.append(run.run_id)
    with server.client(tokens["bob"]) as c:
        assert c.post(f"/v1/runs/{run.run_id}/gates/review/approve").status_code == 200
    assert resume(env, run.run_id).status == "completed"
    assert done.wait(30), f"run_completed never arrived; saw {[e['kind'] for e in seen]}"
    kinds = [e["kind"] for e in seen if e["run_id"] == run.run_id]
    expected = [
        "run_started",
        "gate_opened",
        "run_waiting",
        "gate_decided",
        "run_resumed",
        "run_completed",
    ]
    assert [k for k in kinds if k in expected] == expected
    mine = [e for e in seen if e["run_id"] == run.run_id]  # the stream began at the first event
    stamps = [e["ts"] for e in mine]
    assert stamps == sorted(stamps)
    decided = next(e for e in mine if e["kind"] == "gate_decided")
    assert decided["step_id"] == "review" and decided["detail"]["actor"] == "bob"


# -- cancel ---------------------------------------------------------------------------------------


@ON_BOTH
def test_cancel_through_the_api_ends_one_run_and_closes_its_gate(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    doomed = start(env)
    kept = start(env, name=env.name + "_kept")
    with server.client(tokens["bob"]) as c:
        assert "only its launcher" in one_line_error(
            c.post(f"/v1/runs/{doomed.run_id}/cancel"), 403
        )
    with server.client(tokens["alice"]) as c:
        resp = c.post(f"/v1/runs/{doomed.run_id}/cancel", json={"comment": "not needed"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["gates_closed"] == ["review"]
        assert "already cancelled" in one_line_error(
            c.post(f"/v1/runs/{doomed.run_id}/cancel"), 409
        )
        statuses = {
            r["run_id"]: r["status"]
            for name in (env.name, env.name + "_kept")
            for r in c.get("/v1/runs", params={"workflow": name}).json()["runs"]
        }
        cancelled = c.get("/v1/runs", params={"status": "cancelled", "workflow": env.name})
        assert [r["run_id"] for r in cancelled.json()["runs"]] == [doomed.run_id]
    assert statuses == {doomed.run_id: "cancelled", kept.run_id: "waiting"}
    assert gate_row(env.db, doomed.run_id)["status"] == "cancelled"
    assert gate_row(env.db, kept.run_id)["status"] == "open"
    with server.client(tokens["bob"]) as c:
        assert c.post(f"/v1/runs/{doomed.run_id}/gates/review/approve").status_code == 409
    audit = airun_nb.audit(doomed.run_id, db=env.db)
    row = audit[audit["capability"] == "cancel"].iloc[0]
    assert (row["principal"], json.loads(row["arguments"])["channel"]) == ("alice", "api")


# -- bad input ------------------------------------------------------------------------------------


def test_bad_input_gets_one_line_errors_and_records_nothing(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    run = start(env)
    before = len(airun_nb.events(db=env.db)), len(airun_nb.audit(db=env.db))
    url = f"/v1/runs/{run.run_id}/gates/review/approve"
    with server.client(tokens["bob"]) as c:
        assert "no run 'r-nope'" in one_line_error(
            c.post("/v1/runs/r-nope/gates/review/approve"), 404
        )
        assert "no gate 'ship2'" in one_line_error(
            c.post(f"/v1/runs/{run.run_id}/gates/ship2/approve"), 404
        )
        one_line_error(c.get("/v1/runs/r-nope"), 404)
        one_line_error(c.post("/v1/runs/r-nope/cancel"), 404)
        big = c.post(url, json={"comment": "x" * 1_000_000})
        assert "at most" in one_line_error(big, 413)
        long_comment = c.post(url, json={"comment": "x" * 5000})
        assert "5000 characters" in one_line_error(long_comment, 413)
        bad = c.post(
            url, content=b'{"comment": "unfinished', headers={"content-type": "application/json"}
        )
        assert "malformed JSON" in one_line_error(bad, 400)
        assert "must be an object" in one_line_error(c.post(url, json=["approve"]), 400)
        assert "comment must be text" in one_line_error(c.post(url, json={"comment": 5}), 400)
        assert "not a run status" in one_line_error(
            c.get("/v1/runs", params={"status": "done"}), 400
        )
        assert "ISO 8601" in one_line_error(c.get("/v1/runs", params={"since": "yesterday"}), 400)
        one_line_error(c.get("/v1/runs", params={"limit": "many"}), 400)
    assert gate_row(env.db, run.run_id)["status"] == "open"
    assert (len(airun_nb.events(db=env.db)), len(airun_nb.audit(db=env.db))) == before


def test_the_openapi_document_lists_the_versioned_api(server: Server) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    assert doc["info"]["title"] == "airun_nb approvals"
    paths = set(doc["paths"])
    assert {
        "/v1/health",
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/approvals",
        "/v1/runs/{run_id}/gates/{gate_id}/approve",
        "/v1/runs/{run_id}/gates/{gate_id}/reject",
        "/v1/runs/{run_id}/cancel",
        "/v1/events",
    } <= paths
    assert "bearer" in json.dumps(doc["components"]["securitySchemes"]).lower()
    assert httpx.get(server.url + "/docs").status_code == 200


def test_cancel_with_rollback_through_the_api_undoes_the_run_in_the_service(
    server: Server, env: Ctx, tokens: dict[str, str]
) -> None:
    doc = {
        "name": env.name,
        "steps": [
            {
                "id": "prepare",
                "python": "open('effects.log', 'a').write('prepare\\n')\nresult = 1",
                "compensate": {"python": "open(params['log'], 'a').write('unprepare\\n')"},
            },
            {"id": "review", "needs": ["prepare"], "approval": {"message": "go?"}},
        ],
        "params": {"log": str(Path.cwd() / "effects.log")},
    }
    run = Workflow.from_dict(doc).run(db=env.db)
    assert run.status == "waiting"
    with server.client(tokens["alice"]) as c:
        resp = c.post(f"/v1/runs/{run.run_id}/cancel", json={"rollback": True})
        assert resp.status_code == 200, resp.text
        assert resp.json()["rolled_back"] is True
        assert "rollback must be true or false" in one_line_error(
            c.post(f"/v1/runs/{run.run_id}/cancel", json={"rollback": "yes"}), 400
        )
    assert effects() == ["prepare", "unprepare"]  # undone by the service's process
    assert airun_nb.runs(db=env.db).set_index("run_id").loc[run.run_id, "status"] == "cancelled"
