"""foreach: one step per item of a list fixed when the run is planned."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import airun_nb
from airun_nb import SpecError, Workflow

FANOUT = """
params: {regions: [north, south, east]}
on_failure: stop
steps:
  - id: per_region
    foreach: "{{ params.regions }}"
    as: region
    call: summarize
    with: {region: "{{ region }}", position: "{{ index }}"}
  - id: total
    python: result = sum(r["n"] for r in steps.per_region.output)
"""


def _ns(calls: Counter, broken: set[str]) -> dict:
    def summarize(region: str, position: int) -> dict:
        calls[region] += 1
        if region in broken:
            raise RuntimeError(f"no data for {region}")
        return {"region": region, "n": len(region) + position}

    return {"summarize": summarize}


def test_each_item_is_a_step_and_the_group_collects_outputs_in_order(tmp_path: Path) -> None:
    calls: Counter = Counter()
    res = Workflow.from_yaml(FANOUT, name="fan").run(
        db=tmp_path / "s.duckdb", namespace=_ns(calls, set())
    )
    assert res.status == "completed"
    assert res.outputs["per_region"] == [
        {"region": "north", "n": 5},
        {"region": "south", "n": 6},
        {"region": "east", "n": 6},
    ]
    assert res.outputs["total"] == 17
    assert calls == Counter({"north": 1, "south": 1, "east": 1})
    steps = airun_nb.steps(res.run_id, db=tmp_path / "s.duckdb")
    assert list(steps.step_id) == [
        "per_region-0",
        "per_region-1",
        "per_region-2",
        "per_region",
        "total",
    ]


def test_params_decide_the_items(tmp_path: Path) -> None:
    calls: Counter = Counter()
    res = Workflow.from_yaml(FANOUT, name="fan").run(
        db=tmp_path / "s.duckdb", namespace=_ns(calls, set()), params={"regions": ["west"]}
    )
    assert res.outputs["per_region"] == [{"region": "west", "n": 4}]
    assert set(calls) == {"west"}


def test_resume_runs_only_the_items_that_did_not_finish(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    calls: Counter = Counter()
    with pytest.raises(airun_nb.WorkflowFailed) as info:
        Workflow.from_yaml(FANOUT, name="fan").run(db=db, namespace=_ns(calls, {"south"}))
    assert info.value.status == "failed"
    fixed = Workflow.from_yaml(FANOUT, name="fan").run(db=db, namespace=_ns(calls, set()))
    assert fixed.run_id == info.value.run_id and fixed.status == "completed"
    assert calls == Counter({"north": 1, "south": 2, "east": 1})  # finished items not re-run
    assert fixed.outputs["total"] == 17


def test_foreach_over_a_step_output_is_refused_at_parse_time() -> None:
    with pytest.raises(SpecError) as info:
        Workflow.from_yaml(
            "steps:\n  - id: a\n    python: result = [1]\n"
            "  - id: b\n    foreach: '{{ steps.a.output }}'\n    python: result = item\n",
            name="bad",
        )
    assert info.value.line == 5
    assert "params only" in str(info.value)


def test_foreach_needs_a_list(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a list"):
        Workflow.from_yaml(
            "params: {n: 3}\nsteps:\n  - id: b\n    foreach: '{{ params.n }}'\n    python: result = item\n",
            name="notalist",
        ).run(db=tmp_path / "s.duckdb")
    assert airun_nb.runs(db=tmp_path / "s.duckdb").empty  # refused before anything was written
