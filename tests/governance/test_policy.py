"""The policy: who may run which capability at which risk, and what happens when it says no.

Table tests of the evaluation (wildcards, roles, risk comparisons, most restrictive wins, the
default), the errors that name the offending rule, where the policy comes from (``%config
Workflow.policy``, ``AIRUN_POLICY``, the settings file, ``[tool.airun_nb]``), what a workflow's
own ``policy:`` may do (tighten, never loosen), and the engine's side: a denied step never runs
(counted by a side effect outside the store), ``require_approval`` inserts a gate
``<step>.approval`` that is decided like any gate.

Everything is real: policy files on disk, DuckDB stores and workspaces in ``tmp_path``, a real
IPython shell for ``%config``. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import random
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb import ApprovalError, Workflow, WorkflowFailed
from airun_nb.errors import SpecError
from airun_nb.governance import policy as policy_mod
from airun_nb.governance.policy import PolicyError
from support import ENV_VARS

POLICY = textwrap.dedent(
    """
    roles:
      lead: [alice]
      agent: [llm-bot, gpt-runner]
      analyst: [carol]
    default: allow
    rules:
      - name: agents-no-code
        principals: [role:agent]
        capabilities: [python.exec, fs.delete]
        decision: deny
      - name: risky-files
        principals: ["*"]
        capabilities: ["fs.*"]
        risk: ">= high"
        decision: require_approval
        approvers: [role:lead]
      - name: network
        principals: [role:analyst, dave]
        capabilities: ["http.*", shell.run]
        decision: require_approval
        approvers: [alice]
      - name: sql-review
        principals: ["*"]
        capabilities: ["sql.*"]
        risk: [medium, critical]
        decision: require_approval
      - name: agents-ask-first
        principals: [role:agent]
        capabilities: ["*"]
        decision: require_approval
        approvers: [role:lead]
      - name: no-exec-anywhere
        principals: [erin]
        capabilities: ["*.exec"]
        decision: deny
    """
)


# -- fixtures --------------------------------------------------------------------------------------
@dataclass
class Env:
    root: Path
    store: Path
    tmp: Path

    def policy_file(self, text: str, name: str = "policy.yaml") -> Path:
        p = self.tmp / name
        p.write_text(textwrap.dedent(text))
        return p


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    root = tmp_path / "ws"
    root.mkdir()
    store = tmp_path / "policy.duckdb"
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_DB", str(store))
    monkeypatch.chdir(root)
    policy_mod.configure(None)
    yield Env(root, store, tmp_path)
    policy_mod.configure(None)


class Counter:
    """Side effects outside the store: how many times each step body really ran."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]

    def ns(self) -> dict[str, Any]:
        def work(name: str) -> str:
            self.hit(name)
            return name

        return {"counter": self, "work": work}


def step_rows(run_id: str) -> dict[str, dict[str, Any]]:
    return {r["step_id"]: r for r in airun_nb.steps(run_id).to_dict("records")}


def verdict(policy: policy_mod.Policy, who: str, cap: str, risk: str) -> tuple[str, str | None]:
    v = policy.evaluate(who, cap, risk)
    return v.decision, v.rule


# -- the evaluation table ------------------------------------------------------------------------
CASES = [
    # principal, capability, risk -> decision, rule
    ("llm-bot", "python.exec", "high", "deny", "agents-no-code"),  # deny beats require_approval
    ("llm-bot", "fs.delete", "medium", "deny", "agents-no-code"),
    ("gpt-runner", "fs.delete", "medium", "deny", "agents-no-code"),  # any member of the role
    ("llm-bot", "fs.write", "medium", "require_approval", "agents-ask-first"),  # "*"
    ("llm-bot", "python.call", "medium", "require_approval", "agents-ask-first"),
    ("alice", "fs.write", "medium", "allow", None),  # the default
    ("alice", "fs.write", "high", "require_approval", "risky-files"),  # fs.* and >= high
    ("alice", "fs.delete", "critical", "require_approval", "risky-files"),
    ("alice", "fs.read", "low", "allow", None),
    ("alice", "fsx.write", "high", "allow", None),  # fs.* needs the dot
    ("carol", "http.request", "high", "require_approval", "network"),  # role
    ("dave", "shell.run", "high", "require_approval", "network"),  # user by name
    ("alice", "http.request", "high", "allow", None),
    ("alice", "sql.exec", "medium", "require_approval", "sql-review"),  # risk list
    ("alice", "sql.exec", "critical", "require_approval", "sql-review"),
    ("alice", "sql.exec", "high", "allow", None),  # not in the list
    ("alice", "sql.query", "low", "allow", None),
    ("erin", "sql.exec", "high", "deny", "no-exec-anywhere"),  # *.exec
    ("erin", "python.exec", "high", "deny", "no-exec-anywhere"),
    ("erin", "python.call", "medium", "allow", None),
    ("carol", "fs.write", "high", "require_approval", "risky-files"),
]


@pytest.mark.parametrize(("who", "cap", "risk", "decision", "rule"), CASES)
def test_decision_table(who: str, cap: str, risk: str, decision: str, rule: str | None) -> None:
    policy = policy_mod.parse(POLICY)
    assert verdict(policy, who, cap, risk) == (decision, rule)


def test_most_restrictive_wins_whatever_the_order_of_the_rules() -> None:
    policy = policy_mod.parse(POLICY)
    expected = {(c[0], c[1], c[2]): (c[3], c[4]) for c in CASES}
    rng = random.Random(7)
    for _ in range(10):
        shuffled = policy_mod.Policy(
            policy.roles, policy.default, rng.sample(policy.rules, len(policy.rules))
        )
        for (who, cap, risk), want in expected.items():
            got = verdict(shuffled, who, cap, risk)
            assert got[0] == want[0], (who, cap, risk, got)


def test_two_rules_with_the_same_decision_keep_the_first_named() -> None:
    policy = policy_mod.parse(
        """
        rules:
          - {name: first, capabilities: ["fs.*"], decision: deny}
          - {name: second, capabilities: ["*"], decision: deny}
          - {name: loose, capabilities: ["*"], decision: require_approval}
        """
    )
    assert verdict(policy, "anyone", "fs.write", "medium") == ("deny", "first")
    assert verdict(policy, "anyone", "http.request", "high") == ("deny", "second")


@pytest.mark.parametrize("default", ["allow", "deny", "require_approval"])
def test_the_default_decides_when_no_rule_matches(default: str) -> None:
    policy = policy_mod.parse(
        f"""
        default: {default}
        rules:
          - {{name: reads, capabilities: [fs.read], decision: allow}}
        """
    )
    v = policy.evaluate("bob", "fs.write", "medium")
    assert (v.decision, v.rule) == (default, None)
    assert "the policy default" in v.reason
    assert verdict(policy, "bob", "fs.read", "low") == ("allow", "reads")


def test_no_policy_at_all_allows_everything() -> None:
    policy = policy_mod.Policy()
    assert verdict(policy, "llm-bot", "fs.delete", "critical") == ("allow", None)


@pytest.mark.parametrize(
    ("risk", "matching"),
    [
        (">= high", {"high", "critical"}),
        ("> medium", {"high", "critical"}),
        ("< high", {"low", "medium"}),
        ("<= low", {"low"}),
        ("== medium", {"medium"}),
        ("critical", {"critical"}),
        (["low", "critical"], {"low", "critical"}),
        ([">= critical", "<= low"], {"low", "critical"}),
    ],
)
def test_risk_comparisons(risk: Any, matching: set[str]) -> None:
    policy = policy_mod.parse(
        {"rules": [{"name": "r", "capabilities": ["*"], "risk": risk, "decision": "deny"}]}
    )
    denied = {
        lvl
        for lvl in ("low", "medium", "high", "critical")
        if verdict(policy, "u", "x.y", lvl)[0] == "deny"
    }
    assert denied == matching


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("*", ["fs.write", "python.exec", "my.own.cap"], []),
        ("fs.*", ["fs.write", "fs.delete"], ["fsx.write", "sql.exec", "xfs.write"]),
        ("*.exec", ["python.exec", "sql.exec"], ["python.call", "exec"]),
        ("fs.?ead", ["fs.read"], ["fs.write", "fs.rread"]),
        # the seed ids are aliases of the native names: a rule matches through them
        ("http.request", ["http.request", "net.http.request"], ["http.requests"]),
        ("io.fs.write_file", ["fs.write", "io.fs.write_file"], ["fs.read", "fs.delete"]),
        ("test-caps.*", ["test-caps.a"], ["test_caps.a"]),
    ],
)
def test_capability_wildcards(pattern: str, yes: list[str], no: list[str]) -> None:
    policy = policy_mod.parse(
        {"rules": [{"name": "r", "capabilities": [pattern], "decision": "deny"}]},
        check_capabilities=False,  # names of capabilities nobody registered
    )
    for cap in yes:
        assert verdict(policy, "u", cap, "low")[0] == "deny", cap
    for cap in no:
        assert verdict(policy, "u", cap, "low")[0] == "allow", cap


def test_principals_star_names_and_roles() -> None:
    policy = policy_mod.parse(
        """
        roles: {ops: [olga, oscar]}
        rules:
          - {name: everyone, principals: ["*"], capabilities: [a.x], decision: deny}
          - {name: by-name, principals: [bob], capabilities: [b.x], decision: deny}
          - {name: by-role, principals: [role:ops], capabilities: [c.x], decision: deny}
        """,
        check_capabilities=False,
    )
    assert verdict(policy, "zed", "a.x", "low") == ("deny", "everyone")
    assert verdict(policy, "bob", "b.x", "low") == ("deny", "by-name")
    assert verdict(policy, "zed", "b.x", "low") == ("allow", None)
    assert verdict(policy, "oscar", "c.x", "low") == ("deny", "by-role")
    assert verdict(policy, "bob", "c.x", "low") == ("allow", None)
    assert policy.roles_of("olga") == {"ops"}


# -- errors name the rule --------------------------------------------------------------------------
def test_an_unknown_role_in_principals_names_the_rule() -> None:
    with pytest.raises(PolicyError) as exc:
        policy_mod.parse(
            """
            roles: {lead: [alice]}
            rules:
              - {name: fine, principals: [role:lead], capabilities: ["*"], decision: allow}
              - {name: ghostly, principals: [role:ghosts], capabilities: ["*"], decision: deny}
            """
        )
    assert "rule 'ghostly'" in exc.value.message
    assert "unknown role 'ghosts'" in exc.value.message


def test_an_unknown_role_in_approvers_names_the_rule() -> None:
    with pytest.raises(PolicyError, match=r"rule 'ask'.*unknown role 'bosses' in approvers"):
        policy_mod.parse(
            """
            rules:
              - {name: ask, capabilities: ["*"], decision: require_approval, approvers: [role:bosses]}
            """
        )


@pytest.mark.parametrize("pattern", ["fs/*", "fs.**", "fs write", "fs.[a-z]", "rm -rf", "fs.*;"])
def test_a_malformed_capability_pattern_names_the_rule(pattern: str) -> None:
    doc = {
        "rules": [
            {"name": "ok", "capabilities": ["fs.*"], "decision": "deny"},
            {"name": "broken-pattern", "capabilities": ["sql.*", pattern], "decision": "deny"},
        ]
    }
    with pytest.raises(PolicyError) as exc:
        policy_mod.parse(doc)
    assert "rule 'broken-pattern'" in exc.value.message
    assert "malformed capability pattern" in exc.value.message
    assert repr(pattern) in exc.value.message


def test_an_unnamed_rule_is_named_by_its_position() -> None:
    with pytest.raises(PolicyError, match=r"rule '#2'.*unknown role 'nobody'"):
        policy_mod.parse(
            """
            rules:
              - {capabilities: ["*"], decision: allow}
              - {principals: [role:nobody], capabilities: ["*"], decision: deny}
            """
        )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"decision": "maybe"}, "decision must be one of"),
        ({"decision": "deny", "risk": "very high"}, "risk must be levels"),
        (
            {"decision": "deny", "approvers": ["alice"]},
            "'approvers' only goes with require_approval",
        ),
        ({"decision": "deny", "whom": ["x"]}, "unknown key(s) whom"),
        (
            {"decision": "deny", "capabilities": "fs.write", "principals": [""]},
            "'principals' must be",
        ),
    ],
)
def test_other_rule_errors_name_the_rule(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        policy_mod.parse({"rules": [{"name": "the-rule", **rule}]})
    assert "rule 'the-rule'" in exc.value.message
    assert message in exc.value.message


def test_policy_level_errors() -> None:
    with pytest.raises(PolicyError, match="default must be one of"):
        policy_mod.parse("default: perhaps\n")
    with pytest.raises(PolicyError, match="unknown key"):
        policy_mod.parse("rulez: []\n")
    with pytest.raises(PolicyError, match=r"line \d+ invalid YAML"):
        policy_mod.parse("rules:\n  - {name: x, decision: deny\n")


def test_configure_refuses_a_bad_file_at_once(env: Env) -> None:
    bad = env.policy_file(
        """
        rules:
          - {name: typo, capabilities: ["fs..*/"], decision: deny}
        """
    )
    with pytest.raises(PolicyError, match="rule 'typo'"):
        policy_mod.configure(bad)
    with pytest.raises(PolicyError, match="cannot read the policy"):
        policy_mod.configure(env.tmp / "missing.yaml")


# -- where the policy comes from -----------------------------------------------------------------
DENY_WRITES = """
roles: {writers: [nobody]}
rules:
  - {name: RULE, principals: ["*"], capabilities: [fs.write], decision: deny}
"""

WRITE_WF = """
name: NAME
steps:
  - id: write
    capability: fs.write
    with: {path: out.txt, content: hello}
"""


def run_write(name: str) -> tuple[airun_nb.RunResult, str | None]:
    r = Workflow.from_yaml(WRITE_WF.replace("NAME", name)).run(raise_on_failure=False)
    audit = airun_nb.audit(r.run_id)
    rule = audit[audit["kind"] == "policy"]["rule"].tolist()
    return r, (rule[0] if rule and isinstance(rule[0], str) else None)


def test_policy_from_airun_policy(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRUN_POLICY", str(env.policy_file(DENY_WRITES.replace("RULE", "from-env")))
    )
    r, rule = run_write("env_policy")
    assert r.status == "rolled_back"
    assert rule == "from-env"
    assert not (env.root / "out.txt").exists()


def test_policy_path_in_the_settings_is_relative_to_the_settings_file(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = env.tmp / "conf"
    conf_dir.mkdir()
    (conf_dir / "pol.yaml").write_text(DENY_WRITES.replace("RULE", "from-settings-file"))
    (conf_dir / "airun-settings.yaml").write_text("policy: pol.yaml\n")
    monkeypatch.setenv("AIRUN_CONFIG", str(conf_dir / "airun-settings.yaml"))
    r, rule = run_write("settings_policy")
    assert (r.status, rule) == ("rolled_back", "from-settings-file")


def test_policy_inline_in_airun_yaml(env: Env) -> None:
    (env.root / "airun.yaml").write_text(
        "policy:\n  rules:\n    - {name: inline, capabilities: [fs.write], decision: deny}\n"
    )
    r, rule = run_write("inline_policy")
    assert (r.status, rule) == ("rolled_back", "inline")


def test_policy_from_pyproject_tool_table(env: Env) -> None:
    (env.tmp / "pol.yaml").write_text(DENY_WRITES.replace("RULE", "from-pyproject"))
    (env.tmp / "pyproject.toml").write_text('[tool.airun_nb]\npolicy = "pol.yaml"\n')
    sub = env.root / "deeper"
    sub.mkdir()
    os.chdir(sub)  # the nearest pyproject.toml is found in a parent (monkeypatch restores cwd)
    r, rule = run_write("pyproject_policy")
    assert (r.status, rule) == ("rolled_back", "from-pyproject")


def test_settings_roles_count_in_the_policy(env: Env) -> None:
    """Roles defined in the settings file are accepted by the policy, so they must apply."""
    (env.root / "airun.yaml").write_text(
        textwrap.dedent(
            """
            roles: {agent: [llm-bot]}
            policy:
              rules:
                - {name: agents-no-code, principals: [role:agent], capabilities: [python.exec], decision: deny}
            """
        )
    )
    policy = policy_mod.current()
    assert verdict(policy, "llm-bot", "python.exec", "high") == ("deny", "agents-no-code")


@pytest.fixture
def shell(ipython: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AIRUN_DB", str(env.store))
    monkeypatch.chdir(env.root)
    yield ipython
    ipython.run_line_magic("config", "Workflow.policy = None")
    policy_mod.configure(None)


def test_config_workflow_policy_sets_the_kernels_policy_over_airun_policy(
    shell: Any, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRUN_POLICY", str(env.policy_file(DENY_WRITES.replace("RULE", "env"), "env.yaml"))
    )
    kernel_policy = env.policy_file(DENY_WRITES.replace("RULE", "kernel"), "kernel.yaml")
    shell.run_line_magic("config", f'Workflow.policy = "{kernel_policy}"')
    r, rule = run_write("config_policy")
    assert (r.status, rule) == ("rolled_back", "kernel")
    shell.run_line_magic("config", "Workflow.policy = None")
    r, rule = run_write("config_policy_off")
    assert rule == "env"  # back to AIRUN_POLICY


def test_config_workflow_policy_relative_path_in_a_cell(shell: Any, env: Env) -> None:
    (env.root / "policy.yaml").write_text(DENY_WRITES.replace("RULE", "relative"))
    shell.run_cell('%config Workflow.policy = "policy.yaml"')
    result = shell.run_cell(
        WRITE_WF.replace("NAME", "magic_policy").replace(
            "name: magic_policy\n", "%%workflow magic_policy\n"
        )
    )
    assert isinstance(result.error_in_exec, WorkflowFailed)
    assert "denied by the policy" in str(result.error_in_exec)
    assert "rule 'relative'" in str(result.error_in_exec)
    assert not (env.root / "out.txt").exists()


def test_a_bad_policy_set_with_config_fails_closed(shell: Any, env: Env) -> None:
    """IPython only logs errors raised while applying %config: the kernel must not carry on
    as if no policy were set (everything allowed)."""
    bad = env.policy_file(
        """
        rules:
          - {name: deny-writes, capabilities: ["fs/write"], decision: deny}
        """
    )
    shell.run_line_magic("config", f'Workflow.policy = "{bad}"')
    with pytest.raises(PolicyError, match="rule 'deny-writes'"):
        Workflow.from_yaml(WRITE_WF.replace("NAME", "after_bad_config")).run()
    assert not (env.root / "out.txt").exists()


def test_a_malformed_policy_stops_the_run_before_anything_happens(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRUN_POLICY",
        str(env.policy_file("rules:\n  - {name: oops, capabilities: ['fs/*'], decision: deny}\n")),
    )
    with pytest.raises(PolicyError, match="rule 'oops'"):
        Workflow.from_yaml(WRITE_WF.replace("NAME", "bad_policy")).run()
    assert not (env.root / "out.txt").exists()
    assert _no_runs()


# -- a workflow's own policy: tighten only -----------------------------------------------------------
def test_a_workflow_may_tighten_the_policy(env: Env) -> None:
    counter = Counter()
    wf = Workflow.from_yaml(
        """
name: tightened
policy:
  rules:
    - name: no-code-in-this-workflow
      capabilities: [python.call]
      decision: deny
steps:
  - id: go
    call: work
    with: {name: go}
"""
    )
    r = wf.run(namespace=counter.ns(), raise_on_failure=False)
    row = step_rows(r.run_id)["go"]
    assert row["status"] == "failed"
    assert "rule 'no-code-in-this-workflow'" in row["error"]
    assert counter.counts == {}


def test_a_workflow_allow_rule_is_refused_naming_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRUN_POLICY",
        str(
            env.policy_file(
                "rules:\n  - {name: no-writes, capabilities: [fs.write], decision: deny}\n"
            )
        ),
    )
    with pytest.raises(SpecError) as exc:  # refused when the workflow is parsed
        Workflow.from_yaml(
            """
name: loosening
policy:
  rules:
    - {name: let-me-write, capabilities: [fs.write], decision: allow}
steps:
  - id: write
    capability: fs.write
    with: {path: out.txt, content: x}
"""
        )
    assert "rule 'let-me-write'" in exc.value.message
    assert "only tighten" in exc.value.message
    assert not (env.root / "out.txt").exists()
    assert _no_runs()


def test_a_workflow_cannot_loosen_the_default(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRUN_POLICY", str(env.policy_file("default: require_approval\n")))
    wf = Workflow.from_yaml(
        """
name: loosen_default
policy: {default: allow}
steps:
  - id: write
    capability: fs.write
    with: {path: out.txt, content: x}
"""
    )
    with pytest.raises(PolicyError, match="would loosen"):
        wf.run()
    assert not (env.root / "out.txt").exists()


def test_a_workflow_may_tighten_the_default(env: Env) -> None:
    wf = Workflow.from_yaml(
        """
name: tighten_default
policy: {default: deny}
steps:
  - id: write
    capability: fs.write
    with: {path: out.txt, content: x}
"""
    )
    r = wf.run(raise_on_failure=False)
    assert "the policy default" in step_rows(r.run_id)["write"]["error"]
    assert not (env.root / "out.txt").exists()


def test_a_workflow_rule_may_use_the_roles_of_the_policy(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_POLICY", str(env.policy_file(POLICY)))
    wf = Workflow.from_yaml(
        """
name: role_from_policy
policy:
  rules:
    - {name: agents-no-writes, principals: [role:agent], capabilities: [fs.write], decision: deny}
steps:
  - id: write
    capability: fs.write
    with: {path: out.txt, content: x}
"""
    )
    r = wf.run(principal="llm-bot", raise_on_failure=False)
    assert "rule 'agents-no-writes'" in step_rows(r.run_id)["write"]["error"]
    assert not (env.root / "out.txt").exists()


# -- principals and agents ---------------------------------------------------------------------------
AGENT_WF = """
name: agent_job
steps:
  - id: report
    capability: fs.write
    with: {path: report.txt, content: "weekly report"}
  - id: tidy_code
    needs: [report]
    python: |
      counter.hit("tidy_code")
      import os
      os.remove("raw.csv")
      result = "removed by code"
  - id: purge
    needs: [report]
    capability: fs.delete
    with: {path: raw.csv}
"""


AGENT_POLICY = """
roles: {lead: [alice], agent: [llm-bot]}
default: allow
rules:
  - name: agents-no-code
    principals: [role:agent]
    capabilities: [python.exec, fs.delete]
    decision: deny
  - name: risky-files
    principals: ["*"]
    capabilities: ["fs.*"]
    risk: ">= high"
    decision: require_approval
    approvers: [role:lead]
"""


@pytest.fixture
def agent_policy(env: Env, monkeypatch: pytest.MonkeyPatch) -> Path:
    p = env.policy_file(AGENT_POLICY)
    monkeypatch.setenv("AIRUN_POLICY", str(p))
    (env.root / "raw.csv").write_text("id\n1\n")
    return p


def test_an_agent_is_denied_python_exec_and_fs_delete(env: Env, agent_policy: Path) -> None:
    counter = Counter()
    wf = Workflow.from_yaml(AGENT_WF)
    with pytest.raises(WorkflowFailed) as exc:
        wf.run(principal="llm-bot", namespace=counter.ns())
    assert "denied by the policy" in str(exc.value)
    assert counter.counts == {}  # python.exec never ran
    assert (env.root / "raw.csv").read_text() == "id\n1\n"  # fs.delete never ran
    assert not (env.root / "report.txt").exists()  # the allowed write was rolled back
    rows = step_rows(exc.value.run_id)
    for sid, cap in (("tidy_code", "python.exec"), ("purge", "fs.delete")):
        assert rows[sid]["status"] == "failed"
        assert rows[sid]["attempts"] == 0
        assert f"rule 'agents-no-code': deny {cap}" in rows[sid]["error"]
        assert "llm-bot" in rows[sid]["error"]
    assert airun_nb.runs()["status"].tolist() == ["rolled_back"]
    assert airun_nb.runs()["launched_by"].tolist() == ["llm-bot"]
    audit = airun_nb.audit(exc.value.run_id)
    denials = audit[audit["decision"] == "deny"]
    assert sorted(denials["step_id"]) == ["purge", "tidy_code"]
    assert set(denials["principal"]) == {"llm-bot"}
    assert set(denials["rule"]) == {"agents-no-code"}
    assert not ((audit["kind"] == "step") & (audit["step_id"] == "tidy_code")).any()


def test_airun_user_is_the_principal(
    env: Env, agent_policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_USER", "llm-bot")
    counter = Counter()
    wf = Workflow.from_yaml(
        """
name: by_env_user
steps:
  - id: code
    python: |
      counter.hit("code")
"""
    )
    r = wf.run(namespace=counter.ns(), raise_on_failure=False)
    assert "deny python.exec" in step_rows(r.run_id)["code"]["error"]
    assert counter.counts == {}


def test_principal_argument_wins_over_airun_user(
    env: Env, agent_policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_USER", "alice")
    counter = Counter()
    wf = Workflow.from_yaml(
        """
name: by_arg
steps:
  - id: code
    python: |
      counter.hit("code")
"""
    )
    r = wf.run(principal="llm-bot", namespace=counter.ns(), raise_on_failure=False)
    assert r.status == "rolled_back"
    assert counter.counts == {}
    again = wf.run(new=True, namespace=counter.ns())  # alice, from AIRUN_USER
    assert again.status == "completed"
    assert counter.counts == {"code": 1}


def test_step_kinds_are_capabilities_for_the_policy(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRUN_POLICY",
        str(
            env.policy_file(
                """
                rules:
                  - {name: no-calls, principals: [bob], capabilities: [python.call], decision: deny}
                  - {name: no-queries, principals: [carol], capabilities: [sql.query], decision: deny}
                  - {name: no-inline, principals: [dave], capabilities: [python.exec], decision: deny}
                """
            )
        ),
    )
    counter = Counter()
    wf = Workflow.from_yaml(
        """
name: kinds
on_failure: stop
steps:
  - id: a_call
    call: work
    with: {name: a_call}
  - id: a_query
    needs: [a_call]
    sql: select 42 as answer
  - id: inline
    needs: [a_query]
    python: |
      counter.hit("inline")
"""
    )
    expected = {"bob": "a_call", "carol": "a_query", "dave": "inline"}
    for who, denied in expected.items():
        counter.counts.clear()
        r = wf.run(principal=who, new=True, namespace=counter.ns(), raise_on_failure=False)
        rows = step_rows(r.run_id)
        assert rows[denied]["status"] == "failed", who
        assert "denied by the policy" in rows[denied]["error"]
        assert denied not in counter.counts
    audit = airun_nb.audit()
    policy_rows = audit[audit["kind"] == "policy"]
    caps = dict(zip(policy_rows["step_id"], policy_rows["capability"], strict=False))
    assert caps == {"a_call": "python.call", "a_query": "sql.query", "inline": "python.exec"}


def test_a_denied_step_with_on_failure_stop_keeps_earlier_effects(
    env: Env, agent_policy: Path
) -> None:
    counter = Counter()
    policy_mod.configure(
        env.policy_file(
            "roles: {agent: [llm-bot]}\nrules:\n"
            "  - {name: agents-no-code, principals: [role:agent], capabilities: [python.exec], decision: deny}\n",
            "stop.yaml",
        )
    )
    wf = Workflow.from_yaml(
        AGENT_WF.replace("name: agent_job", "name: agent_stop\non_failure: stop")
    )
    r = wf.run(principal="llm-bot", namespace=counter.ns(), raise_on_failure=False)
    assert r.status == "failed"
    assert (env.root / "report.txt").read_text() == "weekly report"
    assert counter.counts == {}


def test_a_declared_step_risk_is_what_the_policy_sees(env: Env, agent_policy: Path) -> None:
    wf = Workflow.from_yaml(
        """
name: risky
steps:
  - id: write
    capability: fs.write
    risk: critical
    with: {path: out.txt, content: x}
"""
    )
    r = wf.run(principal="alice")
    assert r.status == "waiting"  # fs.* at >= high needs a lead's approval
    assert airun_nb.approvals(r.run_id)["gate_id"].tolist() == ["write.approval"]
    audit = airun_nb.audit(r.run_id)
    assert audit["risk"].tolist() == ["critical"]


# -- require_approval: an inserted gate ----------------------------------------------------------------
APPROVAL_WF = """
name: needs_ok
steps:
  - id: prep
    capability: fs.mkdir
    with: {path: staging}
  - id: net
    needs: [prep]
    call: work
    with: {name: net}
    risk: high
  - id: after
    needs: [net]
    call: work
    with: {name: after}
"""


@pytest.fixture
def approval_policy(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRUN_POLICY",
        str(
            env.policy_file(
                """
                roles: {lead: [alice, lena]}
                rules:
                  - name: risky-code
                    principals: ["*"]
                    capabilities: [python.call]
                    risk: ">= high"
                    decision: require_approval
                    approvers: [role:lead]
                """
            )
        ),
    )


def test_require_approval_inserts_a_gate_and_an_approval_lets_the_step_run(
    env: Env, approval_policy: None
) -> None:
    counter = Counter()
    wf = Workflow.from_yaml(APPROVAL_WF)
    r = wf.run(principal="bob", namespace=counter.ns())
    assert r.status == "waiting"
    assert counter.counts == {}  # neither the gated step nor what follows ran
    assert (env.root / "staging").is_dir()  # what came before did
    gates = airun_nb.approvals(r.run_id)
    assert gates["gate_id"].tolist() == ["net.approval"]
    gate = gates.iloc[0]
    assert gate["status"] == "open"
    assert json.loads(gate["approvers"]) == ["role:lead"]
    assert "rule 'risky-code'" in gate["message"] and "python.call" in gate["message"]
    assert gate["launched_by"] == "bob"
    assert step_rows(r.run_id)["net"]["status"] == "waiting"

    with pytest.raises(ApprovalError, match=r"four-eyes|may not decide"):
        airun_nb.approve(r.run_id, "net.approval", by="bob")  # the launcher
    with pytest.raises(ApprovalError, match=re.escape("role:lead (alice, lena)")):
        airun_nb.approve(r.run_id, "net.approval", by="mallory")  # not a lead
    airun_nb.approve(r.run_id, "net.approval", by="lena", comment="looks fine")

    done = wf.run(principal="bob", namespace=counter.ns())
    assert done.run_id == r.run_id
    assert done.status == "completed"
    assert counter.counts == {"net": 1, "after": 1}
    gate = airun_nb.approvals(r.run_id).iloc[0]
    assert (gate["status"], gate["actor"], gate["channel"]) == ("approved", "lena", "api")


def test_require_approval_rejected_rolls_the_run_back(env: Env, approval_policy: None) -> None:
    counter = Counter()
    wf = Workflow.from_yaml(APPROVAL_WF)
    r = wf.run(principal="bob", namespace=counter.ns())
    assert r.status == "waiting"
    airun_nb.reject(r.run_id, "net.approval", by="alice", comment="not today")
    done = wf.run(principal="bob", namespace=counter.ns())  # a decision, not a failure
    assert done.status == "rolled_back" and done.error == "Rejected by alice: not today"
    assert counter.counts == {}
    assert not (env.root / "staging").exists()  # prep was undone
    runs = airun_nb.runs()
    assert runs["status"].tolist() == ["rolled_back"]
    rows = step_rows(r.run_id)
    assert rows["net"]["status"] == "failed"
    assert rows["prep"]["comp_status"] == "done"


def test_require_approval_decided_headless_by_airun_approval(
    env: Env, approval_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_APPROVAL", "approve")
    counter = Counter()
    r = Workflow.from_yaml(APPROVAL_WF).run(principal="bob", namespace=counter.ns())
    assert r.status == "completed"
    assert counter.counts == {"net": 1, "after": 1}
    gate = airun_nb.approvals(r.run_id).iloc[0]
    assert (gate["gate_id"], gate["channel"], gate["decision"]) == (
        "net.approval",
        "policy",
        "approve",
    )


def test_require_approval_rejected_headless_never_runs_the_step(
    env: Env, approval_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_APPROVAL", "net.approval=reject")
    counter = Counter()
    with pytest.raises(WorkflowFailed):
        Workflow.from_yaml(APPROVAL_WF).run(principal="bob", namespace=counter.ns())
    assert counter.counts == {}
    assert not (env.root / "staging").exists()


def test_the_default_require_approval_gates_every_step(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_POLICY", str(env.policy_file("default: require_approval\n")))
    counter = Counter()
    wf = Workflow.from_yaml(
        """
name: all_gated
steps:
  - id: one
    call: work
    with: {name: one}
"""
    )
    r = wf.run(principal="bob", namespace=counter.ns())
    assert r.status == "waiting"
    assert airun_nb.approvals(r.run_id)["approvers"].isna().all()  # anyone but the launcher
    airun_nb.approve(r.run_id, "one.approval", by="carol")
    assert wf.run(principal="bob", namespace=counter.ns()).status == "completed"
    assert counter.counts == {"one": 1}


def _no_runs() -> bool:
    """Nothing was recorded: the store was never made (reading it does not make it) or is empty."""
    from airun_nb.settings.environment import resolve_db

    return not resolve_db(None).exists() or airun_nb.runs().empty
