"""The seed (AI-First Runtime v3) workflow dialect: every old key translated before validation,
errors at the line the user wrote, refusals of what has no meaning here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airun_nb import SpecError
from airun_nb.spec import parser as spec
from airun_nb.spec.dialect import DEFAULT_ATTEMPTS

SEED = Path(__file__).parent


def _parse(name: str) -> spec.WorkflowSpec:
    return spec.parse((SEED / name).read_text())


def test_every_old_key_takes_effect_or_is_recorded() -> None:
    wf = _parse("all_keys.yaml")
    assert wf.seed_dialect
    assert wf.name == "all_keys" and wf.version == "2.1.0"
    assert wf.description == "every key of the old schema"
    assert wf.params == {"target": "out/a.txt"}
    assert wf.deadline == 120.0  # max_execution_time_seconds
    assert wf.on_failure == "rollback"  # enable_auto_rollback
    assert wf.metadata["owner"] == "ops@example.com" and wf.metadata["audit_level"] == "FULL"
    assert wf.dialect["workflow_id"] == "all_keys_pack"
    assert wf.dialect["step_timeouts"] == {"check": 10}  # an approval step's old step timeout
    assert wf.dialect["compensations"]["steps.0"] == {
        "step_name": "write",
        "description": "remove it again",
    }
    write, check, hsh, stamp = (wf.step(s) for s in ("write", "check", "hash", "stamp"))
    assert write.kind == "capability" and write.body == "io.fs.write_file"
    assert write.with_["path"] == "{{target}}"  # file_path is the old name of path
    assert write.agent == "writer" and write.risk == "medium" and write.timeout == 20.0
    assert write.description == "write the file"
    assert write.compensate == {"capability": "io.fs.delete", "with": {"path": "{{target}}"}}
    assert check.kind == "approval" and check.agent == "reviewer"
    assert check.body == {
        "message": "Keep {{target}}?",
        "approvers": ["role:leads"],
        "timeout": 1800,
    }
    assert check.needs == ["write"]
    # max_retries is the number of attempts; 0 means one; the agent's policy caps both
    assert write.retry.attempts == DEFAULT_ATTEMPTS == 3
    assert hsh.retry.attempts == 1
    assert stamp.retry.attempts == 4  # max_retries 5, the writer agent's policy says 4
    assert stamp.timeout == 50.0 and hsh.timeout == 50.0  # the agent's timeout_seconds


def test_global_compensation_steps_are_undone_after_every_step() -> None:
    wf = _parse("all_keys.yaml")
    marker = wf.steps[0]
    assert marker.id == "global_compensation_0" and marker.body == "workflow.marker"
    assert marker.compensate == {
        "capability": "io.fs.write_file",
        "with": {"path": "out/cleanup.txt", "content": "cleaned"},
    }
    # every other step runs after the marker, so a rollback undoes the marker last
    assert wf.step("write").needs == ["global_compensation_0"]


def test_pack_shape_takes_its_name_from_workflow_id_when_it_has_no_name() -> None:
    text = (SEED / "gate.yaml").read_text().replace("name: gated\n", "", 1)
    assert spec.parse(text).name == "gated"


def test_a_seed_file_is_named_by_its_name_not_the_file(tmp_path: Path) -> None:
    from airun_nb import Workflow

    path = tmp_path / "some_file.yaml"
    path.write_text((SEED / "gate.yaml").read_text())
    assert Workflow.from_file(path).name == "gated"


@pytest.mark.parametrize(
    ("step_type", "words"),
    [("CONDITION", "give the step it guards a 'when:'"), ("COMPENSATION", "compensation:")],
)
def test_condition_and_compensation_steps_are_refused_at_their_line(
    step_type: str, words: str
) -> None:
    text = (
        "name: w\nsteps:\n  - name: a\n    agent_name: x\n"
        f"    step_type: {step_type}\n    capability_name: io.fs.exists\n"
    )
    with pytest.raises(SpecError) as info:
        spec.parse(text)
    assert info.value.line == 5
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_an_error_points_at_the_key_as_written() -> None:
    text = (
        "name: w\nsteps:\n  - name: a\n    capability_name: io.fs.exists\n"
        "  - name: b\n    capability_name: io.fs.exists\n    depends_on: [zz]\n"
    )
    with pytest.raises(SpecError) as info:
        spec.parse(text)
    assert info.value.line == 7
    assert re.search(r"unknown step 'zz'", str(info.value))


def test_the_per_agent_policy_denies_a_capability_outside_its_list() -> None:
    text = (
        (SEED / "all_keys.yaml")
        .read_text()
        .replace(
            "allowed_capabilities: [io.fs.write_file, io.fs.hash_file, io.fs.delete, sys.info.*]",
            "allowed_capabilities: [io.fs.write_file, io.fs.delete]",
        )
    )
    wf = spec.parse(text)
    rules = wf.policy["rules"]  # type: ignore[index]
    denied = {(r["principals"][0], r["capabilities"][0], r["decision"]) for r in rules}
    assert denied == {
        ("agent:writer", "io.fs.hash_file", "deny"),
        ("agent:writer", "sys.info.get_time", "deny"),
    }


def test_an_environment_outside_allowed_environments_denies_the_agent() -> None:
    text = (SEED / "all_keys.yaml").read_text().replace("environment: staging", "environment: dev")
    rules = spec.parse(text).policy["rules"]  # type: ignore[index]
    assert {r["capabilities"][0] for r in rules} == {
        "fs.write",
        "io.fs.hash_file",
        "sys.info.get_time",
    }
    assert all("environment 'dev'" in r["name"] for r in rules)


def test_an_empty_policy_list_and_no_global_compensations_load() -> None:
    wf = spec.parse(
        "name: w\nsteps:\n  - name: a\n    agent_name: x\n    capability_name: io.fs.exists\n"
        "    inputs: {path: x}\npolicy: []\nglobal_compensation_steps: []\n"
    )
    assert wf.policy is None and [s.id for s in wf.steps] == ["a"]


def test_the_native_dialect_is_untouched() -> None:
    wf = spec.parse("name: w\nsteps:\n  - id: a\n    call: f\n")
    assert not wf.seed_dialect and wf.steps[0].retry.attempts == 1 and wf.dialect == {}


def test_every_shared_seed_workflow_parses() -> None:
    from support.seed import SEED_DIALECT as folder

    files = [p for p in sorted(folder.glob("*.yaml")) if "polic" not in p.name]
    assert len(files) == 7
    names = {spec.parse(p.read_text()).name for p in files}
    assert "customer_onboarding" in names and "load_test_quick" in names
