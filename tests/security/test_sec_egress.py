"""Egress: http.request never reaches link-local / cloud metadata addresses, and stays within
the policy's ``hosts:``; template values in a shell.run string are shell-quoted."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from sec_support import World, run_refused

from airun_nb import Workflow


class Server:
    def __init__(self, redirect_to: str | None = None) -> None:
        self.hits: list[str] = []
        hits, target = self.hits, redirect_to

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                if target and self.path == "/go":
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: object) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(redirect_to="http://169.254.169.254/latest/meta-data/")
    yield s
    s.srv.shutdown()


def _get(url: str) -> str:
    return (
        "name: egress\nsteps:\n  - id: get\n    capability: http.request\n"
        f"    with: {{url: '{url}', timeout: 2}}\n"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://169.254.169.254./",
    ],
)
def test_metadata_and_link_local_addresses_are_refused(world: World, url: str) -> None:
    snap = world.snapshot()
    _r, error = run_refused(world, _get(url))
    assert "refused" in error
    assert "metadata" in error or "link-local" in error
    world.assert_unchanged(snap)


def test_a_redirect_to_the_metadata_service_is_refused(world: World, server: Server) -> None:
    _r, error = run_refused(world, _get(server.url + "/go"))
    assert "169.254.169.254" in error and "refused" in error
    assert server.hits == ["/go"]


def test_policy_hosts_limit_where_a_principal_may_go(
    world: World, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = world.root.parent / "hosts.yaml"
    policy.write_text(
        "rules:\n  - {name: agent-egress, principals: [agent], capabilities: [http.request],"
        " decision: allow, hosts: [127.0.0.1]}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_USER", "agent")
    Workflow.from_yaml(_get(server.url + "/fine")).run()
    assert server.hits == ["/fine"]
    other = server.url.replace("127.0.0.1", "localhost") + "/other"
    _r, error = run_refused(world, _get(other))
    assert "host localhost is not among the hosts the policy allows agent" in error
    assert server.hits == ["/fine"]
    monkeypatch.setenv("AIRUN_USER", "human")  # the rule names the agent only
    Workflow.from_yaml(_get(other)).run()
    assert server.hits == ["/fine", "/other"]


@pytest.mark.parametrize(
    "value",
    [
        "x; touch pwned.txt",
        "$(touch pwned.txt)",
        "`touch pwned.txt`",
        "x && touch pwned.txt",
        "x | tee pwned.txt",
        "'; touch pwned.txt; '",
        "x\ntouch pwned.txt",
    ],
)
def test_a_template_value_in_a_shell_string_is_one_quoted_word(world: World, value: str) -> None:
    wf = Workflow.from_yaml(
        "name: sh\nparams: {name: x}\nsteps:\n  - id: sh\n    capability: shell.run\n"
        "    with: {command: 'printf %s {{ params.name }} > said.txt'}\n"
    )
    wf.run(params={"name": value})
    assert not (world.root / "pwned.txt").exists(), "the value ran as shell code"
    assert (world.root / "said.txt").read_text() == value


def test_a_shell_compensation_quotes_its_template_values(world: World) -> None:
    wf = Workflow.from_yaml(
        """
name: shcomp
params: {name: "x; touch pwned.txt"}
steps:
  - id: make
    capability: fs.write
    with: {path: made.txt, content: "{{ params.name }}"}
    compensate:
      capability: shell.run
      with: {command: "printf %s {{ params.name }} > undone.txt"}
  - id: boom
    needs: [make]
    python: raise RuntimeError("later step failed")
"""
    )
    r = wf.run(raise_on_failure=False)
    assert r.status == "rolled_back"
    assert not (world.root / "pwned.txt").exists()
    assert (world.root / "undone.txt").read_text() == "x; touch pwned.txt"
