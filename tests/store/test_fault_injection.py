"""Fault injection: whatever raises inside a run, the run ends in a recorded state.

Each seeded point makes one thing raise once, in turn: the k-th store write (``record`` /
``record_many``), the k-th template render or condition, the k-th step call, or the k-th
compensation of a rollback. Each time the run must end terminal or resumable (never left
``running``), with the error text, and a resume (or a second rollback) must reach exactly what
an uninterrupted run reaches. Real store files; the faults are the only thing patched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airun_nb import Workflow, rollback
from airun_nb.errors import AirunError
from airun_nb.spec import templates
from airun_nb.store.database import Store

WORKFLOW = """
name: injected
on_failure: stop
params: {base: 3}
steps:
  - id: a
    call: add
    with: {x: "{{ params.base }}", y: 1}
    compensate: {call: undo, with: {name: a}}
  - id: b
    needs: [a]
    call: add
    with: {x: "{{ steps.a.output }}", y: 10}
    compensate: {call: undo, with: {name: b}}
  - id: c
    needs: [a]
    when: "{{ steps.a.output > 0 }}"
    call: add
    with: {x: "{{ steps.a.output }}", y: 100}
  - id: d
    needs: [b, c]
    call: add
    with: {x: "{{ steps.b.output }}", y: "{{ steps.c.output }}"}
"""
END = {"running", "pending"}  # statuses a run must never be left in after its process moved on
RESUMABLE = {"failed", "interrupted", "waiting"}


class Boom(Exception):
    """The injected fault."""


class Faults:
    """Counts calls of each kind and raises once, at the chosen one."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.target: tuple[str, int] | None = None
        self.fired = False

    def hit(self, kind: str) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if self.target == (kind, n) and not self.fired:
            self.fired = True
            raise Boom(f"injected {kind} fault #{n}")


def _wrap(faults: Faults, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        faults.hit(kind)
        return fn(*args, **kwargs)

    return wrapped


def _wrap_writes(faults: Faults, root: Path, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Counts the writes to this test's stores only: a store another test of the same process
    left open (its keeper, a gate watcher) may write at any moment and must not take the
    fault meant for the run under test."""

    def wrapped(store: Store, *args: Any, **kwargs: Any) -> Any:
        if Path(store.path).is_relative_to(root):
            faults.hit("store write")
        return fn(store, *args, **kwargs)

    return wrapped


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Faults:
    f = Faults()
    monkeypatch.setattr(Store, "record", _wrap_writes(f, tmp_path.resolve(), Store.record))
    monkeypatch.setattr(
        Store, "record_many", _wrap_writes(f, tmp_path.resolve(), Store.record_many)
    )
    monkeypatch.setattr(templates, "render", _wrap(f, "template", templates.render))
    monkeypatch.setattr(
        templates, "evaluate_condition", _wrap(f, "template", templates.evaluate_condition)
    )
    return f


def _namespace(faults: Faults, undone: list[str]) -> dict[str, Any]:
    def add(x: Any, y: Any) -> int:
        faults.hit("call")
        return int(x) + int(y)

    def undo(name: str) -> None:
        faults.hit("compensation")
        undone.append(name)

    return {"add": add, "undo": undo}


def _status(db: Path, run_id: str) -> tuple[str, str | None]:
    row = Store.open(db).query("SELECT status, error FROM runs WHERE run_id = ?", [run_id])[0]
    return str(row[0]), row[1]


def test_fault_sweep(tmp_path: Path, faults: Faults) -> None:
    undone: list[str] = []
    ns = _namespace(faults, undone)
    ref = Workflow.from_yaml(WORKFLOW).run(db=tmp_path / "ref.duckdb", namespace=ns)
    expected = ref.outputs["d"]
    totals = dict(faults.counts)
    points = [(kind, k) for kind, n in totals.items() for k in range(1, n + 1)]
    rng = random.Random(8)
    chosen = points + [rng.choice(points) for _ in range(max(0, 200 - len(points)))]
    assert len(chosen) >= 200 and {"store write", "template", "call"} <= set(totals)
    db = tmp_path / "s.duckdb"  # one store: each point starts a new run in it
    for target in chosen:
        faults.counts, faults.target, faults.fired = {}, target, False
        wf = Workflow.from_yaml(WORKFLOW)
        try:
            result = wf.run(db=db, namespace=ns, raise_on_failure=False, new=True)
            run_id = result.run_id
        except AirunError as exc:  # a fault while planning, before the run is recorded
            assert "injected" in exc.message, (target, exc.message)
            run_id = None
        assert faults.fired, target
        if run_id is not None:
            status, error = _status(db, run_id)
            assert status not in END, (target, status)
            if status != "completed":
                assert status in RESUMABLE and "injected" in (error or ""), (target, status)
        faults.target = None
        again = Workflow.from_yaml(WORKFLOW).run(db=db, namespace=ns)
        assert again.status == "completed" and again.outputs["d"] == expected, target
        if run_id is not None:
            assert again.run_id == run_id, target  # resumed, not started anew


def test_compensation_fault_sweep(tmp_path: Path, faults: Faults) -> None:
    points = [("compensation", 1), ("compensation", 2)] + [("store write", k) for k in (1, 2, 3, 4)]
    for point, k in points:
        undone: list[str] = []
        ns = _namespace(faults, undone)
        db = tmp_path / f"c{k}-{point.replace(' ', '')}.duckdb"
        run = Workflow.from_yaml(WORKFLOW).run(db=db, namespace=ns)
        faults.counts = {}
        faults.target, faults.fired = (point, k), False
        try:
            rollback(run.run_id, db=db, namespace=ns)
        except (AirunError, Boom):
            status, error = _status(db, run.run_id)
            faults.target = None
            if status == "completed":  # the claim itself was the write that failed
                rollback(run.run_id, db=db, namespace=ns)
            else:
                assert status == "rollback_failed" and "injected" in (error or ""), status
                # Resuming by name continues the rollback.
                done = Workflow.from_yaml(WORKFLOW).run(db=db, namespace=ns, resume=run.run_id)
                assert done.status == "rolled_back"
        else:
            assert point == "compensation"  # a failed compensation is retried
        assert faults.fired and _status(db, run.run_id)[0] == "rolled_back"
        # Each compensation took effect once.
        assert sorted(undone) == ["a", "b"], (k, point, undone)
