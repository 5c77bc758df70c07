"""Seed-dialect workflows run: the shared seed files' done-when checks, and the old runtime's
behaviour scenarios (atomic rollback, retries, PARALLEL partial failure, policy deny and
require-approval, the chaos run) written in the old dialect."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb import Workflow, WorkflowFailed
from airun_nb.capabilities import registry
from support.seed import SEED_DIALECT

SEED = Path(__file__).parent
SHARED = SEED_DIALECT  # the old runtime's real files


@pytest.fixture
def work(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workspace (cwd) for file capabilities, launched by 'tester'."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("AIRUN_USER", "tester")
    monkeypatch.delenv("AIRUN_POLICY", raising=False)
    # capabilities registered by a test are gone after it
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return ws


def _shared(name: str) -> Path:
    path = SHARED / name
    assert path.exists(), f"{path} is missing from the repository"
    return path


def _steps(result: Any) -> dict[str, Any]:
    df = result.steps
    return {r.step: r for r in df.itertuples()}


def test_load_test_quick_writes_and_hashes_its_file(work: Path, db: Path) -> None:
    result = Workflow.from_file(_shared("load-test_load_test_quick.yaml")).run(db=db)
    assert result.status == "completed"
    text = (work / "out.txt").read_text()
    assert text.startswith(f"run_id={result.run_id}\nts=20")  # {{run_id}} is the run's id
    digest = hashlib.sha256((work / "out.txt").read_bytes()).hexdigest()
    assert result["hash_file"]["checksum_sha256"] == digest


def test_load_test_paused_waits_is_approved_and_completes(work: Path, db: Path) -> None:
    wf = Workflow.from_file(_shared("load-test_load_test_paused.yaml"))
    first = wf.run(db=db)
    assert first.status == "waiting"
    assert (work / "before_pause.txt").read_text() == f"run_id={first.run_id}\n"
    assert not (work / "after_pause.txt").exists()
    airun_nb.approve(first.run_id, "approval_gate", by="reviewer", db=db)
    done = wf.run(db=db, resume=first.run_id)
    assert done.status == "completed"
    assert (work / "after_pause.txt").read_text() == "approved=true\n"


def test_aegis_demo_writes_three_files_with_the_run_id(work: Path, db: Path) -> None:
    result = Workflow.from_file(_shared("aegis-demo_aegis_financial_summary_ppt.yaml")).run(db=db)
    assert result.status == "completed"
    assert "Profit: 40" in (work / "demo" / "report.txt").read_text()
    summary = (work / "demo" / "summary.md").read_text()
    assert f"- workflow_id: {result.run_id}" in summary
    assert "Source: demo/report.txt" in summary
    assert "Summary file: demo/summary.md" in (work / "demo" / "output.pptx").read_text()


def test_customer_onboarding_waits_and_a_rejection_undoes_tenant_then_account(
    work: Path, db: Path
) -> None:
    calls: list[str] = []
    reg = airun_nb.register_capability
    reg("crm.create_account", lambda customer_name, tier: {"account_id": f"acc-{tier}"})
    reg("crm.delete_account", lambda account_id: calls.append(f"delete {account_id}"))
    reg("cloud.provision_tenant", lambda account_id, tier: {"tenant_id": f"t-{account_id}"})
    reg("cloud.deprovision_tenant", lambda tenant_id: calls.append(f"deprovision {tenant_id}"))
    reg("email.send", lambda **kw: {"sent": True}, risk="high")
    reg("audit.create_record", lambda **kw: {"record": 1})
    (work / "airun.yaml").write_text("roles: {sales_director: [dana]}\n")
    wf = Workflow.from_file(_shared("v3_customer_onboarding.yaml"))
    first = wf.run(db=db)
    assert first.status == "waiting"
    assert first["provision_resources"] == {"tenant_id": "t-acc-enterprise"}
    airun_nb.reject(first.run_id, "human_approval", by="dana", comment="not now", db=db)
    done = wf.run(db=db, resume=first.run_id)  # a person's rejection: no WorkflowFailed
    assert done.status == "rolled_back" and done.error == "Rejected by dana: not now"
    assert calls == ["deprovision t-acc-enterprise", "delete acc-enterprise"]


def test_customer_onboarding_approved_runs_to_its_audit_record(work: Path, db: Path) -> None:
    records: list[dict[str, Any]] = []
    reg = airun_nb.register_capability
    reg("crm.create_account", lambda customer_name, tier: {"account_id": "acc-1"})
    reg("crm.delete_account", lambda account_id: None)
    reg("cloud.provision_tenant", lambda account_id, tier: {"tenant_id": "t-1"})
    reg("cloud.deprovision_tenant", lambda tenant_id: None)
    reg("email.send", lambda to, template, variables: {"sent_to": to, **variables})
    reg("audit.create_record", lambda **kw: records.append(kw) or {"record": len(records)})
    (work / "airun.yaml").write_text("roles: {sales_director: [dana]}\n")
    wf = Workflow.from_file(_shared("v3_customer_onboarding.yaml"))
    first = wf.run(db=db)
    airun_nb.approve(first.run_id, "human_approval", by="dana", db=db)
    done = wf.run(db=db, resume=first.run_id)
    assert done.status == "completed"
    assert done["send_welcome_email"] == {
        "sent_to": "contact@acme.com",
        "account_id": "acc-1",
        "tenant_id": "t-1",
    }
    assert records == [
        {
            "event_type": "customer_onboarded",
            "customer_name": "Acme Corp",
            "account_id": "acc-1",
            "approved_by": "dana",
        }
    ]


def test_outside_capabilities_are_refused_before_the_run_with_how_to_register(
    work: Path, db: Path
) -> None:
    with pytest.raises(airun_nb.SpecError) as info:
        Workflow.from_file(_shared("web-research_web_research.yaml")).run(db=db)
    msg = str(info.value)
    assert "web.browser.navigate" in msg and "register_capability" in msg and "\n" not in msg
    assert airun_nb.runs(db=db).empty if db.exists() else True


def test_two_writes_roll_back_atomically(work: Path, db: Path) -> None:
    (work / "b.txt").write_text("old")
    wf = Workflow.from_file(SEED / "two_writes.yaml")
    with pytest.raises(WorkflowFailed) as info:
        wf.run(db=db)
    assert info.value.status == "rolled_back"
    assert not (work / "a.txt").exists()
    assert (work / "b.txt").read_text() == "old"


def test_global_compensations_run_after_every_step_compensation(work: Path, db: Path) -> None:
    order: list[str] = []
    airun_nb.register_capability("probe.fail", lambda: (_ for _ in ()).throw(RuntimeError("x")))
    airun_nb.register_capability("probe.note", lambda text: order.append(text))
    wf = Workflow.from_yaml(
        """
name: global_order
steps:
  - name: one
    capability_name: io.fs.write_file
    inputs: {path: one.txt, content: "1"}
    compensation: {capability_name: probe.note, inputs: {text: undo-one}}
  - name: two
    capability_name: probe.fail
    depends_on: [one]
    max_retries: 0
global_compensation_steps:
  - {step_name: g1, capability_name: probe.note, inputs: {text: global-1}}
  - {step_name: g2, capability_name: probe.note, inputs: {text: global-2}}
"""
    )
    with pytest.raises(WorkflowFailed):
        wf.run(db=db)
    assert order == ["undo-one", "global-1", "global-2"]


def _flaky(fail_times: int) -> tuple[str, list[int]]:
    seen: list[int] = []
    name = f"probe.flaky{fail_times}"

    def fn(tag: str) -> dict[str, Any]:
        seen.append(1)
        if len(seen) <= fail_times:
            raise ConnectionError(f"try {len(seen)} failed")
        return {"ok": tag}

    airun_nb.register_capability(name, fn)
    return name, seen


RETRY = """
name: retried
steps:
  - name: call
    agent_name: a
    capability_name: CAP
    inputs: {tag: x}
    retry_policy: {backoff: fixed, initial: 0.01}
"""


def test_default_three_attempts_succeed_on_the_third(work: Path, db: Path) -> None:
    name, seen = _flaky(2)
    # retry_policy sets the backoff only; the attempts are the dialect's default of three
    result = Workflow.from_yaml(RETRY.replace("CAP", name)).run(db=db)
    assert result.status == "completed" and len(seen) == 3
    assert _steps(result)["call"].attempts == 3


def test_retries_exhausted_fail_after_max_retries_attempts(work: Path, db: Path) -> None:
    name, seen = _flaky(10)
    text = RETRY.replace("CAP", name).replace("    inputs:", "    max_retries: 2\n    inputs:")
    text = text.replace("retry_policy: {backoff: fixed, initial: 0.01}", "")
    with pytest.raises(WorkflowFailed) as info:
        Workflow.from_yaml(text).run(db=db)
    assert len(seen) == 2
    assert "try 2 failed" in str(info.value)


def test_parallel_partial_failure_undoes_the_branch_that_finished(work: Path, db: Path) -> None:
    airun_nb.register_capability("probe.broken", lambda: (_ for _ in ()).throw(OSError("down")))
    wf = Workflow.from_yaml(
        """
name: fan_out
steps:
  - name: both
    step_type: PARALLEL
    parallel:
      - {name: good, capability_name: io.fs.write_file, inputs: {path: good.txt, content: g}}
      - {name: bad, capability_name: probe.broken, max_retries: 1}
enable_auto_rollback: true
"""
    )
    with pytest.raises(WorkflowFailed) as info:
        wf.run(db=db)
    assert info.value.status == "rolled_back"
    assert not (work / "good.txt").exists()


POLICY_FLOW = """
name: governed
steps:
  - name: write
    agent_name: AGENT
    capability_name: io.fs.write_file
    inputs: {path: w.txt, content: "w"}
  - name: act
    agent_name: AGENT
    capability_name: CAP
    depends_on: [write]
    inputs: {path: w.txt}
"""


def test_a_v1_policy_deny_for_the_agent_rolls_back(
    work: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_POLICY", str(SEED / "policy_v1.yaml"))
    text = POLICY_FLOW.replace("AGENT", "writer").replace("CAP", "io.fs.exists")
    with pytest.raises(WorkflowFailed) as info:
        Workflow.from_yaml(text).run(db=db)
    assert info.value.status == "rolled_back"
    assert "denied by the policy" in str(info.value) and "agent:writer" in str(info.value)
    assert not (work / "w.txt").exists()


def test_a_v1_require_approval_waits(work: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRUN_POLICY", str(SEED / "policy_v1.yaml"))
    text = POLICY_FLOW.replace("AGENT", "cleaner").replace("CAP", "io.fs.delete_file")
    text = text.replace("  - name: write\n    agent_name: cleaner", "  - name: write")
    result = Workflow.from_yaml(text).run(db=db)
    assert result.status == "waiting"
    assert (work / "w.txt").exists()  # the delete waits for its approval


def test_the_owner_is_a_principal_too(
    work: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_POLICY", str(SEED / "policy_v2.yaml"))
    text = POLICY_FLOW.replace("AGENT", "careful").replace("CAP", "io.fs.exists")
    assert Workflow.from_yaml(text).run(db=db).status == "waiting"  # agent:careful writes


def test_chaos_100_runs_20_threads_half_failing_match_per_run(work: Path, db: Path) -> None:
    airun_nb.register_capability(
        "probe.chaos", lambda fail: (_ for _ in ()).throw(RuntimeError("injected")) if fail else 1
    )
    wf = Workflow.from_yaml(
        """
name: chaos
initial_state: {n: 0, fail: false}
steps:
  - {name: first, capability_name: io.fs.write_file, inputs: {path: "c/{{n}}.a", content: "a"}}
  - {name: maybe, capability_name: probe.chaos, depends_on: [first], inputs: {fail: "{{fail}}"},
     max_retries: 1}
  - {name: last, capability_name: io.fs.write_file, depends_on: [maybe],
     inputs: {path: "c/{{n}}.b", content: "b"}}
"""
    )
    rng = random.Random(7)
    plan = {n: rng.random() < 0.5 for n in range(100)}
    outcome: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        for n in range(t, 100, 20):
            store = work.parent / f"chaos{t}.duckdb"
            try:
                outcome[n] = wf.run(db=store, params={"n": n, "fail": plan[n]}, new=True).status
            except WorkflowFailed as exc:
                outcome[n] = exc.status
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert 30 < sum(plan.values()) < 70
    for n, fail in plan.items():
        assert outcome[n] == ("rolled_back" if fail else "completed"), n
        assert (work / "c" / f"{n}.a").exists() is not fail, n
        assert (work / "c" / f"{n}.b").exists() is not fail, n
