"""The mechanism test: random workflows of every step kind, capability id (canonical and old),
compensation, notify target and foreach, run under the agent policy of docs/security.md, each in
a child process with a Python audit hook (tests/security/audit_child.py). The policy denies
``python.exec`` and ``shell.run`` to the agent and gates everything of high risk and all egress
behind an approval nobody gives, so the only effects it allows are files written inside the
workspace by medium-risk capabilities. Any process started, step code executed,
socket connected or file written outside the workspace is an event the policy did not allow,
and fails the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import ENV_VARS

CHILD = Path(__file__).with_name("audit_child.py")
REPO = Path(__file__).resolve().parents[2]

AGENT_POLICY = """
roles:
  agent: [llm-bot]
rules:
  - name: agents-no-code
    principals: [role:agent]
    capabilities: [python.exec, shell.run]
    decision: deny
  - name: agents-ask-for-risky
    principals: [role:agent]
    capabilities: ["*"]
    risk: ">= high"
    decision: require_approval
    approvers: [alice]
  - name: agent-egress
    principals: [role:agent]
    capabilities: [http.request]
    decision: require_approval
    approvers: [alice]
    hosts: [api.example.com, "*.internal.example.com"]
"""

FORMULA = '@json.codecs.builtins.__import__("os").system("true")'


def _actions(url: str) -> list[dict[str, Any]]:
    """Every way of acting a step body can take (without ``id``)."""
    return [
        {"call": "ok"},
        {"call": "subprocess:getoutput", "with": {"cmd": "true"}},
        {"call": "subprocess.getoutput", "with": {"cmd": "true"}},
        {"call": "subprocess:check_output", "with": {"args": ["true"]}},
        {"python": "import os\nos.system('true')\nresult = 1"},
        {"sql": "SELECT 42 AS answer"},
        {"capability": "fs.write", "with": {"path": "out.txt", "content": "x"}},
        {"capability": "io.fs.read_file", "with": {"path": "data.txt"}},
        {"capability": "shell.run", "with": {"command": "true"}},
        {"capability": "sys.shell.run", "with": {"command": ["true"]}},
        {"capability": "io.shell.run", "with": {"command": "true"}},
        {"capability": "sys.exec.run", "with": {"command": "find", "args": [".", "-name", "zz"]}},
        {"capability": "http.request", "with": {"url": url, "timeout": 5}},
        {"capability": "net.http.request", "with": {"url": url, "timeout": 5}},
        {"capability": "net.http.get", "with": {"url": url, "timeout": 5}},
        {"capability": "net.http.post", "with": {"url": url, "body": "x", "timeout": 5}},
        {"capability": "net.http.put", "with": {"url": url, "body": "x", "timeout": 5}},
        {
            "capability": "math.pandas.calculate",
            "with": {"data": [{"a": 1}], "operations": [{"type": "calculate", "formula": FORMULA}]},
        },
        {"capability": "text.regex.match", "with": {"pattern": "a+", "text": "aaa"}},
        {
            "capability": "text.template.render",
            "with": {"template": "{{x}}", "variables": {"x": 1}},
        },
        {"capability": "data.json.parse", "with": {"json_string": "[1]"}},
    ]


def _compensations(url: str) -> list[dict[str, Any] | None]:
    return [
        None,
        {"python": "import os\nos.system('true')"},
        {"call": "subprocess:getoutput", "with": {"cmd": "true"}},
        {"call": "ok"},
        {"capability": "shell.run", "with": {"command": "true"}},
        {"capability": "sys.exec.run", "with": {"command": "find", "args": [".", "-name", "zz"]}},
        {"capability": "net.http.post", "with": {"url": url, "body": "x", "timeout": 5}},
        {"sql": "SELECT 1"},
    ]


def _notify_targets(url: str) -> list[Any]:
    return [url, "subprocess:Popen", "subprocess.getoutput", "ok", [url, "os:system"]]


@st.composite
def workflows(draw: st.DrawFn, url: str, name: str = "attack") -> str:
    actions = _actions(url)
    steps: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 4))):
        step = {"id": f"s{i}", **draw(st.sampled_from(actions))}
        comp = draw(st.sampled_from(_compensations(url)))
        if comp is not None:
            step["compensate"] = comp
        if draw(st.booleans()) and draw(st.booleans()):
            step["foreach"] = ["a", "b"]
        steps.append(step)
    if draw(st.booleans()):  # a gate whose notify target is untrusted text too
        target = draw(st.sampled_from(_notify_targets(url)))
        steps.append({"id": "gate", "approval": {"message": "go?", "notify": target}})
    elif draw(st.booleans()):  # a failure at the end: the run rolls back its compensations
        steps.append({"id": "boom", "capability": "fs.read", "with": {"path": "missing.txt"}})
    return yaml.safe_dump({"name": name, "steps": steps}, sort_keys=False)


class _Server:
    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class H(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *a: object) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the examples' workspaces go (pytest's own temporary folders, cleaned by it)."""
    return tmp_path_factory.mktemp("mechanism")


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.srv.shutdown()


def run_under_agent_policy(
    parent: Path, *texts: str, policy_text: str = AGENT_POLICY
) -> tuple[Path, list[dict[str, Any]]]:
    """Run workflows in one child process under the agent policy, one after the other in a
    fresh workspace under ``parent``; (the workspace, one report per workflow)."""
    base = Path(tempfile.mkdtemp(prefix="mech-", dir=parent))
    root = base / "ws"
    root.mkdir()
    (root / "data.txt").write_text("precious data\n")
    policy = base / "policy.yaml"  # outside the workspace
    policy.write_text(policy_text)
    files = []
    for i, text in enumerate(texts):
        files.append(base / f"attack{i}.yaml")
        files[-1].write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and not k.startswith("AIRUN")}
    env.update(
        AIRUN_IDENTITY="env",
        AIRUN_USER="llm-bot",
        AIRUN_POLICY=str(policy),
        AIRUN_DB=str(root / "airun.duckdb"),
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [sys.executable, str(CHILD), *map(str, files)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root.resolve(), json.loads(proc.stdout.strip().splitlines()[-1])


def violations(root: Path, report: dict[str, Any]) -> list[list[str]]:
    """The events the agent policy did not allow: anything but a file written in the workspace
    (or a python step's code compiled, which only checks its syntax when the run is planned)."""
    bad = []
    for event, detail in report["events"]:
        if event == "open" and (detail == str(root) or detail.startswith(str(root) + os.sep)):
            continue
        if event == "compile":
            continue
        bad.append([event, detail])
    return bad


@pytest.mark.timeout(900)  # a safety net: each example is a child process on a busy machine
@settings(
    max_examples=int(os.environ.get("AIRUN_MECHANISM_EXAMPLES", "8")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,  # nothing written beside the tests
)
@given(data=st.data())
def test_no_workflow_acts_beyond_the_agent_policy(
    server: _Server, scratch: Path, data: st.DataObject
) -> None:
    """Whatever random workflows do, under the agent policy nothing runs a process, executes
    step code, opens a socket or writes outside the workspace."""
    count = data.draw(st.integers(1, 4), label="workflows")
    texts = [
        data.draw(workflows(server.url, f"attack{i}"), label=f"workflow {i}") for i in range(count)
    ]
    hits = len(server.hits)
    root, reports = run_under_agent_policy(scratch, *texts)
    for text, report in zip(texts, reports, strict=True):
        bad = violations(root, report)
        assert not bad, (
            f"events the policy did not allow: {bad}\nstatus: {report['status']}\n{text}"
        )
    assert len(server.hits) == hits, f"the workflows reached the network\n{texts}"


def test_the_oracle_sees_what_it_must(tmp_path: Path) -> None:
    """The hook and the oracle are not blind: under the agent policy a workflow of allowed
    actions is clean; under a policy that allows code, a python step's process is seen."""
    root, (report,) = run_under_agent_policy(
        tmp_path,
        "name: clean\nsteps:\n  - {id: a, call: ok}\n  - {id: b, sql: SELECT 1}\n"
        "  - id: c\n    capability: fs.write\n    with: {path: out.txt, content: x}\n",
    )
    assert report["status"] == "completed", report
    assert violations(root, report) == []
    assert (root / "out.txt").read_text() == "x"
    root, (report,) = run_under_agent_policy(
        tmp_path,
        "name: code\nsteps:\n  - {id: a, python: \"import os\\nos.system('true')\"}\n",
        policy_text="default: allow\n",
    )
    assert report["status"] == "completed", report
    assert [e for e, _ in report["events"] if e != "open"] == ["compile", "exec", "os.system"]
    assert [e for e, _ in violations(root, report)] == ["exec", "os.system"]
