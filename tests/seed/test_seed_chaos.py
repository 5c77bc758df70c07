"""The old runtime's chaos test (scripts/chaos_rollback_test.py of the AI-First Runtime, kept in
oldrepo/): 100 runs of load_test_quick from 20 threads on one store, half of them failing at
the hash step. Per run: the failure was injected if and only if the run rolled back, and then
its written file is gone; otherwise the run completed and its file holds its own run id."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import airun_nb

FLOW = Path(__file__).parent / "files" / "chaos_quick.yaml"
TOTAL, THREADS, SEED = 100, 20, 1337


@pytest.mark.slow
def test_chaos_injected_iff_rolled_back_and_file_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old chaos test: injected ⇔ rolled back and file removed, for each of 100 runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIRUN_WORKSPACE", raising=False)
    monkeypatch.delenv("AIRUN_POLICY", raising=False)
    db = tmp_path / "chaos.duckdb"
    rnd = random.Random(SEED)
    injected = [rnd.random() < 0.5 for _ in range(TOTAL)]
    assert 30 < sum(injected) < 70  # the seed gives a real mix

    def one(i: int) -> tuple[int, str, str]:
        out = f"runs/c{i:04d}/out.txt"
        # the injected failure: the hash step is given a file that is not there
        params = {"run_id": f"chaos-{i}", "out_path": out}
        params["hash_path"] = f"runs/c{i:04d}/missing.txt" if injected[i] else out
        wf = airun_nb.Workflow.from_file(FLOW)
        result = wf.run(db=db, params=params, new=True, raise_on_failure=False)
        return i, result.status, result.run_id

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(one, range(TOTAL)))
    assert len({run_id for _, _, run_id in results}) == TOTAL
    for i, status, run_id in results:
        written = tmp_path / f"runs/c{i:04d}/out.txt"
        if injected[i]:
            assert status == "rolled_back", (i, run_id, status)
            assert not written.exists(), (i, run_id)
        else:
            assert status == "completed", (i, run_id, status)
            assert written.read_text().startswith(f"run_id=chaos-{i}\n")
    runs = airun_nb.runs(db=db)
    assert len(runs) == TOTAL
    assert (runs["status"] == "rolled_back").sum() == sum(injected)
