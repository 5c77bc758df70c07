"""executor: dask runs call steps on a Dask cluster (a LocalCluster stands in for a real one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import airun_nb
from airun_nb import Workflow

distributed = pytest.importorskip("distributed")  # the `dask` extra; CI installs it


def test_no_cluster_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRUN_DASK_SCHEDULER", raising=False)
    try:
        distributed.get_client()
        pytest.fail("a Dask client is already running in this process")
    except ValueError:
        pass
    res = Workflow.from_yaml(
        "name: nocluster\nexecutor: dask\nsteps:\n  - id: a\n    call: os:getpid\n"
    ).run(db=tmp_path / "s.duckdb", raise_on_failure=False)
    assert res.status == "rolled_back"
    assert "no Dask client" in (res.error or "")
    assert "Traceback" not in (res.error or "")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_call_steps_run_on_the_cluster_and_the_kernel_writes_the_store(client, tmp_path: Path):
    db = tmp_path / "s.duckdb"
    res = Workflow.from_yaml(
        "name: remote\nexecutor: dask\nsteps:\n"
        "  - id: where\n    call: os:getpid\n"
        "  - id: local\n    python: result = __import__('os').getpid()\n"
    ).run(db=db)
    assert res.status == "completed"
    worker_pids = set(client.run(os.getpid).values())
    assert res.outputs["where"] in worker_pids  # ran in the worker process
    assert res.outputs["local"] == os.getpid()  # inline Python stays in the kernel
    steps = airun_nb.steps(res.run_id, db=db)
    assert dict(zip(steps.step_id, steps.status, strict=True)) == {
        "where": "completed",
        "local": "completed",
    }
    # The attempt rows were written by this process, the single writer of the store.
    assert set(airun_nb.attempts(res.run_id, db=db)["pid"]) == {os.getpid()}


def test_a_failing_remote_step_is_retried_and_fails_like_a_local_one(client, tmp_path: Path):
    res = Workflow.from_yaml(
        "name: remote_fail\nsteps:\n"
        "  - id: bad\n    call: json:loads\n    executor: dask\n    with: {s: '{bad'}\n"
        "    retry: {attempts: 2, initial: 0.01s}\n"
    ).run(db=tmp_path / "s.duckdb", raise_on_failure=False)
    assert res.status == "rolled_back"
    att = airun_nb.attempts(res.run_id, db=tmp_path / "s.duckdb")
    assert list(att["status"]) == ["failed", "failed"]
    assert att["error"].str.contains("JSONDecodeError").all()
