"""`airun convert` keeps what a policy decides and what a workflow does, and `airun convert
--check` proves it: both forms are asked the same questions and every difference is a line."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml

from airun_nb.governance import policy
from support.seed import SEED_DIALECT
from support.seedcli import airun, last_json

SEED = Path(__file__).parent
FILES = SEED / "files"
SHAPES = FILES / "every_rule_shape.yaml"

# (principal, capability, risk) -> what the old runtime decided with every_rule_shape.yaml:
# the first matching rule decides, an ALLOW at high or critical risk needs an approval.
EXPECTED = {
    ("agent:writer", "io.fs.write_file", "low"): "allow",
    ("agent:writer", "fs.write", "medium"): "allow",
    ("agent:writer", "fs.write", "high"): "require_approval",
    ("agent:writer", "fs.delete", "medium"): "require_approval",
    ("agent:bot", "sys.exec.run", "low"): "require_approval",
    ("agent:bot", "io.fs.exists", "low"): "deny",
    ("agent:bot", "fs.read", "low"): "deny",
    ("agent:bot", "net.http.post", "high"): "deny",
    ("agent:bot", "net.http.get", "medium"): "allow",
    ("agent:bot", "net.http.get", "critical"): "require_approval",
    ("agent:bot", "text.regex.match", "low"): "deny",
    ("ops@example.com", "sys.exec.run", "low"): "allow",
    ("ops@example.com", "sys.exec.run", "high"): "require_approval",
    ("ops@example.com", "fs.read", "low"): "allow",
    ("alice", "fs.read", "low"): "deny",
    ("alice", "io.fs.read_file", "low"): "deny",
    ("bob", "fs.read", "low"): "allow",
    ("bob", "crm.create_account", "low"): "require_approval",
    ("user:bob", "fs.write", "critical"): "require_approval",
    ("bob", "fs.write", "medium"): "allow",
}


def _converted(tmp_path: Path, source: Path) -> Path:
    out = airun("convert", str(source), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    target = tmp_path / f"converted_{source.name}"
    target.write_text(out.stdout)
    return target


def test_every_rule_shape_decides_the_same_in_both_forms(tmp_path: Path) -> None:
    """The old semantics of every rule shape hold for the seed file and its converted form,
    and the converted file is native (``match: first``, lower-case decisions)."""
    converted = _converted(tmp_path, SHAPES)
    doc = yaml.safe_load(converted.read_text())
    assert doc["match"] == "first" and doc["default"] == "deny"
    assert all("principals" in r and "decision" in r for r in doc["rules"])
    for path in (SHAPES, converted):
        pol = policy.load_file(path)
        for (who, cap, risk), want in EXPECTED.items():
            got = pol.evaluate(who, cap, risk).decision
            assert got == want, f"{path.name}: {who} {cap} {risk}: {got}, expected {want}"


@pytest.mark.parametrize(
    "source",
    [
        SHAPES,
        SEED / "policy_v1.yaml",
        SEED / "policy_v2.yaml",
        SEED_DIALECT / "policies.yaml",
        SEED_DIALECT / "v3_policies.yaml",
        *sorted(p for p in SEED_DIALECT.glob("*.yaml") if "polic" not in p.name),
        SEED / "all_keys.yaml",
        SEED / "stdlib.yaml",
        SEED / "gate.yaml",
    ],
    ids=lambda p: p.name,
)
def test_convert_check_finds_no_difference(tmp_path: Path, source: Path) -> None:
    """Every old file and test fixture converts without a difference `--check` can find."""
    out = airun("convert", "--check", str(source), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "decides and renders as the original" in out.stdout


def test_convert_check_reports_an_edited_rule(tmp_path: Path) -> None:
    """A converted file whose rules were reordered by hand decides differently: `--check`
    names the principal, capability and risk, and exits 1."""
    converted = _converted(tmp_path, SHAPES)
    doc = yaml.safe_load(converted.read_text())
    doc["rules"].reverse()
    converted.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = airun("convert", "--check", str(SHAPES), str(converted), cwd=tmp_path)
    assert out.returncode == 1
    assert "alice running fs.read at low risk: the original says deny" in out.stdout


def test_native_principals_user_name_and_user_star_match_the_launcher(tmp_path: Path) -> None:
    """A native policy naming `user:tester` (or `user:*`) applies to the launcher `tester`."""
    flow = tmp_path / "w.yaml"
    flow.write_text(
        "name: w\nsteps:\n  - id: a\n    capability: fs.write\n"
        "    with: {path: a.txt, content: x}\n"
    )
    for who, code in (("user:tester", 0), ("user:*", 0), ("user:someone", 11)):
        pol = tmp_path / "p.yaml"
        pol.write_text(
            f"default: deny\nrules:\n  - principals: ['{who}']\n"
            "    capabilities: [fs.write]\n    decision: allow\n"
        )
        out = airun("exec", str(flow), "--json", cwd=tmp_path, AIRUN_POLICY=str(pol))
        assert out.returncode == code, (who, out.stdout, out.stderr)


def _run_under(tmp_path: Path, flow: Path, policy_file: Path) -> tuple[int, str]:
    ws = Path(tempfile.mkdtemp(prefix=f"ws_{policy_file.stem}_", dir=tmp_path))
    out = airun("exec", str(flow), "--json", cwd=ws, AIRUN_POLICY=str(policy_file))
    return out.returncode, str(last_json(out).get("status"))


def test_the_old_repositorys_cases_decide_the_same_converted(tmp_path: Path) -> None:
    """Running under the converted policy gives the same exit code and status as under the
    seed one: the old example policies, `user:* ALLOW` for the launcher, and the policy of
    docs/migrating.md with a high-risk `sys.exec.run` step (waiting for approval)."""
    shell = tmp_path / "shell.yaml"
    shell.write_text(
        "workflow_id: sh\nname: sh\nsteps:\n  - name: run\n"
        "    capability_name: sys.exec.run\n    inputs: {command: python3, args: ['-V']}\n"
    )
    write = tmp_path / "write.yaml"
    write.write_text(
        "workflow_id: wr\nname: wr\nsteps:\n  - name: w\n    capability_name: io.fs.write_file\n"
        "    inputs: {path: a.txt, content: x}\n"
    )
    launcher = tmp_path / "launcher.yaml"
    launcher.write_text(
        "default: DENY\nrules:\n  - principal: 'user:*'\n    capabilities: ['*']\n"
        "    action: ALLOW\n"
    )
    docs = tmp_path / "docs_policy.yaml"
    docs.write_text(
        (SEED.parents[1] / "docs" / "migrating.md").read_text().split("```yaml")[2].split("```")[0]
    )
    cases = [
        (SEED_DIALECT / "policies.yaml", write),
        (launcher, write),
        (docs, shell),
        (SEED_DIALECT / "v3_policies.yaml", write),
    ]
    for original, flow in cases:
        before = _run_under(tmp_path, flow, original)
        after = _run_under(tmp_path, flow, _converted(tmp_path, original))
        assert before == after, (original.name, before, after)
    assert _run_under(tmp_path, write, _converted(tmp_path, launcher)) == (0, "completed")
    assert _run_under(tmp_path, shell, _converted(tmp_path, docs))[0] == 30
