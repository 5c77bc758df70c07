"""The seed runtime's policy files (v1 and v2 shapes) load and mean what they meant: first match
wins, risk escalation, old ids through the alias table, agent and e-mail principals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airun_nb.governance import policy
from support.seed import SEED_DIALECT

SEED = Path(__file__).parent
SHARED = SEED_DIALECT  # the old runtime's real files


def _decide(p: policy.Policy, who: str, cap: str, risk: str = "medium") -> str:
    return p.evaluate(who, cap, risk).decision


def test_v1_first_match_wins_with_old_ids_and_any_case() -> None:
    p = policy.load_file(SEED / "policy_v1.yaml")
    assert p.first_match is not None and p.default == "deny"
    assert _decide(p, "agent:writer", "io.fs.write_file") == "allow"
    assert _decide(p, "agent:writer", "fs.write") == "allow"  # the native name of the same id
    assert _decide(p, "agent:writer", "fs.delete") == "require_approval"  # rule 2 before rule 3
    assert _decide(p, "agent:writer", "io.fs.exists") == "deny"  # rule 3: io.fs.*, lower case
    assert _decide(p, "ops@example.com", "sys.exec.run", "low") == "allow"  # e-mail principal
    assert _decide(p, "alice", "fs.read", "low") == "allow"  # the launcher is user:alice
    assert _decide(p, "agent:nobody", "fs.read", "low") == "deny"  # the default


def test_allow_of_a_high_risk_step_becomes_require_approval() -> None:
    p = policy.load_file(SEED / "policy_v1.yaml")
    assert _decide(p, "alice", "net.http.post", "high") == "require_approval"
    assert _decide(p, "alice", "net.http.post", "critical") == "require_approval"


def test_v2_when_capability_and_risk_level() -> None:
    p = policy.load_file(SEED / "policy_v2.yaml")
    assert p.default == "allow"
    assert _decide(p, "agent:bot", "net.http.post", "high") == "deny"
    assert _decide(p, "agent:bot", "net.http.get", "medium") == "allow"  # risk_level differs
    assert _decide(p, "agent:careful", "fs.write") == "require_approval"
    assert _decide(p, "agent:other", "fs.write") == "allow"


def test_a_workflow_can_only_tighten_a_seed_policy() -> None:
    p = policy.load_file(SEED / "policy_v1.yaml")
    rules = {
        "rules": [
            {"principals": ["agent:writer"], "capabilities": ["fs.write"], "decision": "deny"}
        ]
    }
    tight = p.tightened(rules)
    assert _decide(tight, "agent:writer", "fs.write") == "deny"
    assert _decide(tight, "alice", "fs.read", "low") == "allow"
    with pytest.raises(policy.PolicyError):
        p.tightened({"rules": [{"principals": ["*"], "capabilities": ["*"], "decision": "allow"}]})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("default: MAYBE\nrules: []\n", "default must be ALLOW, DENY or REQUIRE_APPROVAL"),
        (
            "default: DENY\nrules:\n  - {principal: 'agent:a', capabilities: [x], action: GO}\n",
            "rule #1: action must be",
        ),
        ("default: DENY\nrules:\n  - {capabilities: [x], action: ALLOW}\n", "'principal'"),
        (
            "default: DENY\nrules:\n  - {when: {capability: x, colour: red}, principal: a, "
            "decision: DENY}\n",
            "'when' takes capability and risk_level",
        ),
        (
            "default: DENY\nrules:\n  - {principal: a, capabilities: [x], action: ALLOW, "
            "priority: 3}\n",
            "unknown key(s) priority",
        ),
    ],
)
def test_bad_seed_policies_say_what_and_where(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(policy.PolicyError) as info:
        policy.load_file(path)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["policies.yaml", "v3_policies.yaml"])
def test_the_shared_policy_files_load_and_decide(name: str) -> None:
    path = SHARED / name
    assert path.exists(), f"{path} is missing from the repository"
    p = policy.load_file(path)
    assert p.default == "deny"
    assert _decide(p, "agent:data_processor", "io.fs.write_file") == "allow"
    assert _decide(p, "agent:data_processor", "io.fs.read_file", "low") == "allow"
    assert _decide(p, "bob", "fs.read", "low") == "allow"  # user:* -> *
    assert _decide(p, "agent:stranger", "fs.read", "low") == "deny"
    assert p.first_match.unmatched  # rules for capabilities this runtime does not have are kept


def test_the_pdf_capability_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pdfplumber'] = None\n"  # as if the extra were not installed
        "import airun_nb\n"
        "wf = airun_nb.Workflow.from_yaml('name: p\\nsteps:\\n  - {name: x, capability_name: "
        "io.pdf.extract_table, max_retries: 0, inputs: {pdf_path: a.pdf}}\\n')\n"
        "try:\n    wf.run(db='s.duckdb')\nexcept airun_nb.WorkflowFailed as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert "io.pdf.extract_table needs pdfplumber: pip install 'airun_nb[pdf]'" in out.stdout
