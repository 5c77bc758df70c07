"""Complete mediation: every action passes the one mediator (airun_nb.governance.mediator).

Each test is one example of the review, run as the agent (`AIRUN_USER=llm-bot`, env identity)
under the agent policy of docs/security.md kept outside the workspace; each asserts the refusal
line and that nothing ran or was written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from sec_support import World, run_refused

import airun_nb
from airun_nb import Workflow
from airun_nb.errors import AirunError, WorkflowFailed
from airun_nb.governance import policy as policy_mod

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


@pytest.fixture
def agent(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The world, with the agent acting under the agent policy (a file outside the workspace)."""
    policy = world.root.parent / "agent-policy.yaml"
    policy.write_text(AGENT_POLICY)
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_USER", "llm-bot")
    monkeypatch.setenv("HOME", str(world.outside))
    policy_mod.configure(None)
    return world


class Hook:
    def __init__(self) -> None:
        self.hits: list[bytes] = []
        hits = self.hits

        class H(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                hits.append(self.rfile.read(size))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *a: object) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.srv.shutdown()


def _attempts(result: object, step: str) -> int:
    rows = airun_nb.steps(result.run_id)  # type: ignore[attr-defined]
    return int(rows.set_index("step_id").loc[step, "attempts"])


# -- call: ---------------------------------------------------------------------------------------


def test_call_reaches_no_module_the_settings_do_not_allow(agent: World) -> None:
    """`call: subprocess:getoutput` is refused before the module is imported: nothing runs."""
    snap = agent.snapshot()
    pwned = agent.outside / "pwned"
    _r, error = run_refused(
        agent,
        "name: sneaky\nsteps:\n  - id: run\n    call: 'subprocess:getoutput'\n"
        f"    with: {{cmd: 'touch {pwned}; id -un'}}\n",
    )
    assert "module subprocess is not among the modules the settings allow" in error
    assert "refused" in error
    assert not pwned.exists()
    agent.assert_unchanged(snap)


def test_call_does_not_walk_from_a_notebook_name_into_a_module(agent: World) -> None:
    """A notebook that imported `os` does not hand `os.system` to a workflow."""
    pwned = agent.outside / "pwned"
    wf = Workflow.from_yaml(
        f"name: via_ns\nsteps:\n  - id: run\n    call: os.system\n    with: {{command: 'touch {pwned}'}}\n"
    )
    with pytest.raises(AirunError, match="module os is not among the modules"):
        wf.run(namespace={"os": os})
    with pytest.raises(AirunError, match="starting with '_'"):
        Workflow.from_yaml(
            "name: dunder\nsteps:\n  - {id: run, call: helper.__globals__.get}\n"
        ).run(namespace={"helper": lambda: 1})
    assert not pwned.exists()


def test_call_reaches_the_modules_the_owner_allows(
    agent: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`call_modules` in the settings opens a module (and only that one) to `call:`."""
    (agent.root.parent / "settings.yaml").write_text("call_modules: [textwrap]\n")
    monkeypatch.setenv("AIRUN_CONFIG", str(agent.root.parent / "settings.yaml"))
    result = Workflow.from_yaml(
        "name: allowed\nsteps:\n  - id: ind\n    call: 'textwrap:indent'\n"
        "    with: {text: x, prefix: '> '}\n"
    ).run()
    assert result["ind"] == "> x"
    _r, error = run_refused(agent, "name: other\nsteps:\n  - {id: pid, call: 'os:getpid'}\n")
    assert "module os is not among" in error


# -- capabilities classed by what they do ----------------------------------------------------------


def test_a_pandas_formula_is_code_execution(agent: World) -> None:
    """`math.pandas.calculate` evaluates its formula: the policy sees python.exec and denies it."""
    pwned = agent.outside / "pwned"
    snap = agent.snapshot()
    formula = f'@json.codecs.builtins.__import__("os").system("touch {pwned}")'
    result, error = run_refused(
        agent,
        "name: calc\nsteps:\n  - id: calc\n    capability: math.pandas.calculate\n"
        "    with:\n      data: [{a: 1}]\n"
        f"      operations: [{{type: calculate, formula: '{formula}'}}]\n",
    )
    assert "denied by the policy" in error and "python.exec" in error
    assert _attempts(result, "calc") == 0
    assert not pwned.exists()
    agent.assert_unchanged(snap)


def test_sys_exec_run_is_shell_run(agent: World) -> None:
    """`sys.exec.run find . -delete` is a program run: `shell.run`'s deny covers it."""
    snap = agent.snapshot()
    result, error = run_refused(
        agent,
        "name: wipe\nsteps:\n  - id: wipe\n    capability: sys.exec.run\n"
        "    with: {command: find, args: ['.', '-delete']}\n",
    )
    assert "denied by the policy" in error and "shell.run" in error
    assert _attempts(result, "wipe") == 0
    agent.assert_unchanged(snap)


@pytest.mark.parametrize("cap", ["net.http.get", "net.http.post", "net.http.put"])
def test_old_http_ids_get_the_egress_checks(world: World, cap: str) -> None:
    """The seed's HTTP ids are http.request: the metadata address is refused before any byte."""
    _r, error = run_refused(
        world,
        f"name: meta\nsteps:\n  - id: get\n    capability: {cap}\n"
        "    with: {url: 'http://169.254.169.254/latest/meta-data/', timeout: 2}\n",
    )
    assert "169.254.169.254" in error and "refused" in error


def test_old_http_ids_stay_within_the_policys_hosts(
    world: World, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host outside the policy's `hosts:` is refused for `net.http.get` as for http.request."""
    policy = world.root.parent / "hosts.yaml"
    policy.write_text(
        "rules:\n  - {name: egress, principals: [llm-bot], capabilities: ['http.*'], "
        "decision: allow, hosts: [api.example.com]}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_USER", "llm-bot")
    _r, error = run_refused(
        world,
        f"name: out\nsteps:\n  - id: get\n    capability: net.http.get\n"
        f"    with: {{url: '{hook.url}', timeout: 5}}\n",
    )
    assert "not among the hosts the policy allows llm-bot" in error
    assert hook.hits == []


def test_an_http_deny_covers_the_old_ids(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule denying `http.*` denies `net.http.post`: an alias inherits the rule of its
    canonical capability."""
    policy = world.root.parent / "nohttp.yaml"
    policy.write_text(
        "rules:\n  - {name: no-http, principals: ['*'], capabilities: ['http.*'], decision: deny}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    _r, error = run_refused(
        world,
        "name: post\nsteps:\n  - id: post\n    capability: net.http.post\n"
        "    with: {url: 'http://127.0.0.1:9/', body: x}\n",
    )
    assert "denied by the policy (rule 'no-http'" in error


# -- compensations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "comp",
    [
        "{python: \"open('comp-ran', 'w').write('x')\"}",
        "{capability: shell.run, with: {command: 'touch comp-ran'}}",
        "{capability: sys.exec.run, with: {command: find, args: ['.', '-delete']}}",
    ],
)
def test_a_compensation_the_policy_denies_refuses_its_step(agent: World, comp: str) -> None:
    """A step whose compensation is denied is denied itself (0 attempts): its rollback could
    never run what the policy forbids."""
    snap = agent.snapshot()
    result, error = run_refused(
        agent,
        "name: comp\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\n"
        f"    compensate: {comp}\n  - id: boom\n    needs: [a]\n"
        "    capability: fs.read\n    with: {path: missing.txt}\n",
    )
    assert "denied by the policy" in error and "its compensation" in error
    assert _attempts(result, "a") == 0
    assert not (agent.root / "comp-ran").exists()
    agent.assert_unchanged(snap)


def test_a_compensation_is_checked_again_when_it_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compensation admitted under one policy is refused at rollback under a stricter one:
    the rollback fails with one line and the compensation's code never runs."""
    monkeypatch.setenv("AIRUN_USER", "llm-bot")
    done = Workflow.from_yaml(
        "name: later\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\n"
        "    compensate: {python: \"open('comp-ran', 'w').write('x')\"}\n"
    ).run()
    assert done.status == "completed"
    policy = world.root.parent / "strict.yaml"
    policy.write_text(
        "rules:\n  - {name: no-code, principals: [llm-bot], capabilities: [python.exec], "
        "decision: deny}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    with pytest.raises(WorkflowFailed) as failed:
        airun_nb.rollback(done.run_id)
    assert "\n" not in failed.value.message
    assert "its compensation is denied by the policy (rule 'no-code'" in failed.value.message
    assert airun_nb.runs().set_index("run_id").loc[done.run_id, "status"] == "rollback_failed"
    assert not (world.root / "comp-ran").exists()


# -- notify targets ------------------------------------------------------------------------------


def _gate(target: str) -> str:
    return (
        "name: gated\nsteps:\n  - id: review\n    approval:\n      message: go?\n"
        f"      notify: {json.dumps(target)}\n"
    )


def _notify_error(run_id: str) -> str:
    ev = airun_nb.events(run_id)
    rows = ev[ev["kind"] == "notify_failed"]
    assert len(rows) == 1, ev[["kind", "detail"]]
    return str(json.loads(rows.iloc[0]["detail"])["error"])


def test_a_notify_webhook_is_egress(agent: World, hook: Hook) -> None:
    """A gate's webhook is an http.request for the policy: the agent's is refused, nothing sent."""
    (agent.root / "data.txt").write_text("the owner's data\n")
    result = Workflow.from_yaml(_gate(hook.url)).run(raise_on_failure=False)
    assert result.status == "waiting"
    assert "refused by the policy" in _notify_error(result.run_id)
    assert hook.hits == []


def test_a_notify_webhook_gets_the_egress_checks(world: World) -> None:
    """Without a policy, a webhook still never reaches the metadata service."""
    result = Workflow.from_yaml(_gate("http://169.254.169.254/latest/")).run(raise_on_failure=False)
    assert result.status == "waiting"
    assert "metadata" in _notify_error(result.run_id)


@pytest.mark.parametrize("target", ["subprocess:getoutput", "sys:exit", "os.system"])
def test_a_notify_function_is_a_call(agent: World, target: str) -> None:
    """`notify: "module:function"` resolves like `call:`: a module the settings do not allow is
    refused, and the run is left waiting at its gate (not killed, not `running`)."""
    result = Workflow.from_yaml(_gate(target)).run(raise_on_failure=False)
    assert result.status == "waiting"
    assert "not among the modules the settings allow" in _notify_error(result.run_id)
    assert airun_nb.runs().set_index("run_id").loc[result.run_id, "status"] == "waiting"


def test_a_notify_function_obeys_a_python_call_deny(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook function as notify target is a python.call: a deny of it stops the call."""
    policy = world.root.parent / "nocall.yaml"
    policy.write_text(
        "rules:\n  - {name: no-call, principals: ['*'], capabilities: [python.call], "
        "decision: deny}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    told: list[object] = []
    result = Workflow.from_yaml(_gate("tell")).run(
        raise_on_failure=False, namespace={"tell": told.append}
    )
    assert result.status == "waiting"
    assert "rule 'no-call'" in _notify_error(result.run_id)
    assert told == []


# -- resume / fork under the launcher -----------------------------------------------------------


def _denying_policy(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = world.root.parent / "bot.yaml"
    policy.write_text(
        "roles: {agent: [llm-bot]}\nrules:\n"
        "  - {name: bot-no-code, principals: [role:agent], capabilities: [python.exec], "
        "decision: deny}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))


AGENT_FLOW = (
    "name: agentflow\nsteps:\n  - id: review\n    approval: {message: go?}\n"
    "  - id: act\n    needs: [review]\n    python: \"open('acted', 'w').write('x')\"\n"
)


def test_resuming_the_agents_run_checks_the_agent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice resuming the agent's run does not lend it her rights: its denied step stays denied."""
    _denying_policy(world, monkeypatch)
    monkeypatch.setenv("AIRUN_USER", "llm-bot")
    first = Workflow.from_yaml(AGENT_FLOW).run(raise_on_failure=False)
    assert first.status == "waiting"
    monkeypatch.setenv("AIRUN_USER", "alice")
    airun_nb.approve(first.run_id, "review", by="alice")
    again = Workflow.from_yaml(AGENT_FLOW).run(resume=first.run_id, raise_on_failure=False)
    assert "denied by the policy (rule 'bot-no-code'" in str(again.error)
    assert "llm-bot" in str(again.error)
    assert not (world.root / "acted").exists()


def test_forking_the_agents_run_checks_the_agent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice forking the agent's run from its denied step: the step is denied again."""
    _denying_policy(world, monkeypatch)
    monkeypatch.setenv("AIRUN_USER", "llm-bot")
    flow = "name: forkme\nsteps:\n  - {id: a, sql: SELECT 1 AS x}\n" + (
        "  - id: act\n    needs: [a]\n    python: \"open('acted', 'w').write('x')\"\n"
    )
    first = Workflow.from_yaml(flow).run(raise_on_failure=False)
    assert "denied by the policy" in str(first.error)
    monkeypatch.setenv("AIRUN_USER", "alice")
    forked = airun_nb.fork(first.run_id, "act", raise_on_failure=False)
    assert "denied by the policy (rule 'bot-no-code'" in str(forked.error)
    assert not (world.root / "acted").exists()


# -- foreach -------------------------------------------------------------------------------------


def test_every_foreach_child_is_mediated(agent: World) -> None:
    """Each expansion of a foreach is a step the mediator decides: every child is denied."""
    result, error = run_refused(
        agent,
        "name: many\nsteps:\n  - id: each\n    foreach: [a, b, c]\n"
        "    capability: shell.run\n    with: {command: 'touch {{ item }}'}\n",
    )
    assert "denied by the policy" in error
    steps = airun_nb.steps(result.run_id).set_index("step_id")
    assert (steps.loc[["each-0"], "attempts"] == 0).all()
    assert not any((agent.root / n).exists() for n in "abc")


def test_a_python_step_is_denied_to_the_agent(agent: World) -> None:
    """The plain case the others build on: a `python:` step of the agent is denied, nothing of
    it runs and the history is as it was."""
    snap = agent.snapshot()
    result, error = run_refused(
        agent, "name: x\nsteps:\n  - {id: s, python: \"open('ran', 'w').write('x')\"}\n"
    )
    assert "denied by the policy (rule 'agents-no-code'" in error
    assert _attempts(result, "s") == 0
    agent.assert_unchanged(snap)


def test_replaying_the_agents_run_checks_the_agent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`testing.replay` of the agent's run by alice runs its steps as the agent would: a step
    the policy now denies the agent is not run again for alice."""
    from airun_nb import testing

    monkeypatch.setenv("AIRUN_USER", "llm-bot")
    flow = "name: replayme\nsteps:\n  - id: act\n    python: \"open('acted', 'a').write('x')\"\n"
    first = Workflow.from_yaml(flow).run()  # no policy yet: it runs once
    assert (world.root / "acted").read_text() == "x"
    _denying_policy(world, monkeypatch)
    monkeypatch.setenv("AIRUN_USER", "alice")
    report = testing.replay(first.run_id).set_index("step")
    assert "denied by the policy (rule 'bot-no-code'" in str(report.loc["act", "error"])
    assert (world.root / "acted").read_text() == "x"
