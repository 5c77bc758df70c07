"""A workflow's own ``policy:`` only narrows where ``http.request`` and webhooks may go.

A workflow may add deny / require_approval rules, and such a rule may list ``hosts:``. Those
hosts used to be added to the configured ones: a rule that never decides the request (its risk
bound does not match the step's raised risk) could still widen the hosts to ``*``. Traffic
goes to a loopback server only; the refusal is proved by the server never being hit.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sec_support import World, run_refused

from airun_nb.governance import policy as policy_mod


@pytest.fixture
def hits() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_workflow_rule_cannot_widen_the_allowed_hosts(
    world: World, hits: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner lets the agent reach ``localhost`` only; the workflow raises its step's risk
    to critical and adds a deny rule bounded to ``<= high`` listing ``hosts: ['*']``: the
    request to 127.0.0.1 is refused and never sent."""
    url, seen = hits
    policy = world.root.parent / "hosts.yaml"
    policy.write_text(
        "rules:\n  - {name: agent-egress, principals: [agent], capabilities: [http.request],"
        " decision: allow, hosts: [localhost]}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_USER", "agent")
    text = (
        "name: widen\n"
        "policy:\n  rules:\n"
        "    - {name: sneak, principals: ['*'], capabilities: [http.request], decision: deny,"
        " risk: '<= high', hosts: ['*']}\n"
        "steps:\n  - id: get\n    capability: http.request\n    risk: critical\n"
        f"    with: {{url: '{url}/leak', timeout: 2}}\n"
    )
    _r, error = run_refused(world, text)
    assert "not among the hosts the policy allows" in error, error
    assert seen == []


_PATTERN = st.one_of(
    st.sampled_from(["*", "?", "*.test", "a*", "[a-z]*", "127.0.0.1", "*.*", "evil.test", "x"]),
    st.text(alphabet="ab.*?[]!-", min_size=1, max_size=6),
)
_HOST = st.text(alphabet="ab.-x", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    configured=st.one_of(st.none(), st.lists(_PATTERN, max_size=3)),
    narrower=st.lists(_PATTERN, max_size=3),
    host=st.one_of(_HOST, st.sampled_from(["evil.test", "127.0.0.1", "a", "ab.test"])),
)
def test_narrowing_never_allows_a_host_the_configured_rules_refuse(
    configured: list[str] | None, narrower: list[str], host: str
) -> None:
    """For any configured host patterns and any workflow patterns: a host the narrowed list
    allows is allowed by the configured list and by the workflow's list."""
    import fnmatch

    narrowed = policy_mod.narrow_hosts(configured, narrower)
    if any(fnmatch.fnmatchcase(host, p) for p in narrowed):
        assert configured is None or any(fnmatch.fnmatchcase(host, p) for p in configured)
        assert any(fnmatch.fnmatchcase(host, p) for p in narrower)
