"""Service hardening, against a real ``airun serve`` on 127.0.0.1: logout ends the session on
the server, only the hosts the service was set up for are answered, no page can be framed,
failed logins are limited, token names are validated, and JSON that nests too deep is a one-line
400 with no traceback in the log. Each case asserts that the gate stayed undecided."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sec_support import airun, one_line

import airun_nb
from airun_nb import Workflow
from airun_nb.service.auth import LOGIN_FAILURES
from airun_nb.store.database import Store
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


def _start(db: Path) -> str:
    ns: dict[str, Any] = dict(NAMESPACE, collect=lambda payload: None)
    result = Workflow.from_yaml(gated_spec(notify="collect")).run(
        db=db, namespace=ns, raise_on_failure=False
    )
    assert result.status == "waiting"
    return result.run_id


def _csrf(page: httpx.Response) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, page.text[:300]
    return m.group(1)


def _login(c: httpx.Client, token: str) -> httpx.Response:
    form = c.get("/login")
    return c.post("/login", data={"csrf": _csrf(form), "token": token, "next": "/approvals"})


def _gate(db: Path, run_id: str) -> str:
    return str(airun_nb.approvals(run_id, db=db)["status"].iloc[0])


def test_a_session_cookie_copied_before_logout_no_longer_works(server: Server, env: Path) -> None:
    """Logging out ends the session on the server: the copied cookie neither shows the page
    nor decides the gate."""
    run_id = _start(env)
    bob = make_token(env, "bob")
    with server.client() as c:
        assert _login(c, bob).status_code == 303
        page = c.get("/approvals")
        assert page.status_code == 200
        copied = dict(c.cookies)
        csrf = _csrf(page)
        assert c.post("/logout", data={"csrf": csrf}).status_code == 303
    with server.client(cookies=copied) as thief:
        again = thief.get("/approvals")
        assert again.status_code == 303 and again.headers["location"].startswith("/login")
        decided = thief.post(
            f"/runs/{run_id}/gates/review/decide", data={"csrf": csrf, "decision": "approve"}
        )
        assert decided.status_code in (303, 401, 403)
        assert decided.headers.get("location", "/login").startswith("/login")
        api = thief.get("/v1/approvals")
        assert api.status_code == 401
    assert _gate(env, run_id) == "open"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example"])
def test_a_foreign_host_header_is_refused(server: Server, env: Path, host: str) -> None:
    """A request naming a host the service does not serve (DNS rebinding) gets a one-line 400
    before any route runs, even with a valid token."""
    run_id = _start(env)
    bob = make_token(env, "bob")
    with server.client(bob) as c:
        for method, path in (
            ("GET", "/v1/health"),
            ("POST", f"/v1/runs/{run_id}/gates/review/approve"),
        ):
            resp = c.request(method, path, headers={"Host": host}, json={})
            assert resp.status_code == 400
            assert "is not served here" in resp.json()["error"]
        assert c.get("/v1/health").status_code == 200  # the real address still works
    assert _gate(env, run_id) == "open"


def test_no_page_or_answer_can_be_framed(server: Server, env: Path) -> None:
    """Pages, API answers and errors all forbid framing."""
    with server.client() as c:
        for resp in (c.get("/login"), c.get("/v1/health"), c.get("/v1/approvals"), c.get("/nope")):
            assert resp.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]


def test_failed_logins_are_limited(server: Server, env: Path) -> None:
    """After LOGIN_FAILURES bad tokens from one address, further logins are refused with 429,
    even with the right token, through the login form and the API alike."""
    run_id = _start(env)
    bob = make_token(env, "bob")
    with server.client() as c:
        for _ in range(LOGIN_FAILURES):
            assert _login(c, bob[:-4] + "zzzz").status_code == 401
        refused = _login(c, bob)
        assert refused.status_code == 429
        assert "too many failed logins" in refused.text
        api = c.post(
            f"/v1/runs/{run_id}/gates/review/approve",
            headers={"Authorization": f"Bearer {bob}"},
            json={},
        )
        assert api.status_code == 429
        assert "too many failed logins" in api.json()["error"]
    assert _gate(env, run_id) == "open"


@pytest.mark.parametrize("name", ["bob\n", "bob\r\nX-Admin: yes", "bob\x1b[31m", "bob\t"])
def test_a_token_name_with_control_characters_is_refused(env: Path, name: str) -> None:
    """``airun token create`` refuses a name with control characters in one line; no token is
    made."""
    done = airun("token", "create", name, "--db", str(env))
    assert done.returncode != 0
    assert "is not valid" in one_line(done.stderr)
    store = Store.open(env)
    try:
        rows = store.query("SELECT count(*) FROM tokens")
    except Exception:
        rows = [(0,)]
    store.release()
    assert rows[0][0] == 0


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("[" * 100_000 + "]" * 100_000, "application/json"),
        ('{"comment": ' + "[" * 5_000 + "]" * 5_000 + "}", "application/json"),
        ("[" * 100_000, "text/plain"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, ""),
    ],
)
def test_deeply_nested_json_is_a_one_line_400(
    server: Server, env: Path, body: str, kind: str
) -> None:
    """Nesting too deep is refused in one line with a 4xx; the log holds no traceback and the
    gate stays undecided."""
    run_id = _start(env)
    bob = make_token(env, "bob")
    headers = {"Content-Type": kind} if kind else {}
    with server.client(bob) as c:
        for path in (f"/v1/runs/{run_id}/gates/review/approve", f"/v1/runs/{run_id}/cancel"):
            resp = c.post(path, content=body.encode(), headers=headers)
            assert 400 <= resp.status_code < 500, resp.text[:200]
            error = resp.json()["error"]
            assert "\n" not in error
        assert c.get("/v1/health").status_code == 200
    assert "Traceback" not in server.log.read_text()
    assert _gate(env, run_id) == "open"
