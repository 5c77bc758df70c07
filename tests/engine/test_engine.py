"""The engine: DAG order, concurrency, retries, timeouts, skips, failure, resume, outputs."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import airun_nb
from airun_nb import RunInterrupted, Workflow, WorkflowFailed
from airun_nb.errors import ResumeWarning


class Point:
    """A value that is neither a DataFrame nor JSON: stored through the pickle fallback."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.fixture
def db(store_db: Any) -> Any:
    """Every test here runs on both backends: the DuckDB file and a PostgreSQL database."""
    return store_db


def wf(text: str) -> Workflow:
    return Workflow.from_yaml(text)


def step_rows(db: Path, run_id: str) -> dict[str, dict[str, Any]]:
    df = airun_nb.steps(run_id, db=db)
    return {r["step_id"]: r for r in df.to_dict("records")}


def attempt_rows(db: Path, run_id: str, step_id: str) -> list[tuple[int, str]]:
    df = airun_nb.attempts(run_id, db=db)
    df = df[(df["step_id"] == step_id) & (df["phase"] == "execute")].sort_values("attempt")
    return list(zip(df["attempt"].astype(int), df["status"], strict=True))


def run_status(db: Path, run_id: str) -> str:
    df = airun_nb.runs(db=db)
    return str(df.loc[df["run_id"] == run_id, "status"].iloc[0])


# -- ordering and concurrency ------------------------------------------------------------------


def test_dag_order_is_respected(db: Path) -> None:
    log: list[tuple[str, str]] = []
    lock = threading.Lock()

    def make(name: str):
        def fn():
            with lock:
                log.append(("start", name))
            with lock:
                log.append(("end", name))
            return name

        return fn

    ns = {n: make(n) for n in "abcde"}
    spec = wf(
        """
name: diamond
steps:
  - id: d
    call: d
    needs: [b, c]
  - id: b
    call: b
    needs: [a]
  - id: c
    call: c
    needs: [a]
  - id: a
    call: a
  - id: e
    call: e
    needs: [d]
"""
    )
    res = spec.run(db=db, namespace=ns)
    assert res.status == "completed"
    pos = {ev: i for i, ev in enumerate(log)}
    for step in spec.spec.steps:
        for need in step.needs:
            assert pos[("end", need)] < pos[("start", step.id)], (need, step.id, log)
    assert sorted(res.executed) == list("abcde")


BARRIER_WF = """
name: together
max_parallel: {mp}
on_failure: stop
steps:
  - id: left
    call: left
  - id: right
    call: right
"""


def test_independent_steps_run_concurrently(db: Path) -> None:
    barrier = threading.Barrier(
        2, timeout=120
    )  # a safety net: both threads arrive unless one waits for the other

    def left():
        barrier.wait()
        return "L"

    def right():
        barrier.wait()
        return "R"

    res = wf(BARRIER_WF.format(mp=4)).run(db=db, namespace={"left": left, "right": right})
    assert res.status == "completed"
    assert res.outputs["left"] == "L" and res.outputs["right"] == "R"


def test_max_parallel_one_runs_steps_one_at_a_time(db: Path) -> None:
    barrier = threading.Barrier(2, timeout=0.5)

    def left():
        barrier.wait()
        return "L"

    def right():
        barrier.wait()
        return "R"

    with pytest.raises(WorkflowFailed) as info:
        wf(BARRIER_WF.format(mp=1)).run(db=db, namespace={"left": left, "right": right})
    assert "BrokenBarrierError" in str(info.value)
    assert run_status(db, info.value.run_id) == "failed"


# -- retries and timeouts ----------------------------------------------------------------------


def test_retry_with_backoff_then_success(db: Path) -> None:
    calls = Counter()

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError(f"try {calls['flaky']}")
        return "ok"

    res = wf(
        "name: r\nsteps:\n  - id: flaky\n    call: flaky\n"
        "    retry: {attempts: 3, initial: 0.01s}\n"
    ).run(db=db, namespace={"flaky": flaky})
    assert res.status == "completed"
    assert res.outputs["flaky"] == "ok"
    assert calls["flaky"] == 3
    assert attempt_rows(db, res.run_id, "flaky") == [(1, "failed"), (2, "failed"), (3, "completed")]
    att = airun_nb.attempts(res.run_id, db=db).sort_values("attempt")
    assert "try 1" in att["error"].iloc[0] and "try 2" in att["error"].iloc[1]
    assert step_rows(db, res.run_id)["flaky"]["attempts"] == 3
    # Exponential backoff from 0.01 s: the waits recorded are 0.01 then 0.02.
    ev = airun_nb.events(res.run_id, db=db)
    delays = [json.loads(d)["delay"] for d in ev[ev["kind"] == "step_retry"]["detail"]]
    assert delays == pytest.approx([0.01, 0.02])


def test_retries_exhausted_fail_the_step(db: Path) -> None:
    calls = Counter()

    def broken():
        calls["n"] += 1
        raise ValueError("always")

    with pytest.raises(WorkflowFailed) as info:
        wf(
            "name: r\non_failure: stop\nsteps:\n  - id: broken\n    call: broken\n"
            "    retry: {attempts: 2, initial: 0.01s}\n"
        ).run(db=db, namespace={"broken": broken})
    assert calls["n"] == 2
    assert attempt_rows(db, info.value.run_id, "broken") == [(1, "failed"), (2, "failed")]


RETRY_ON = """
name: on
on_failure: stop
steps:
  - id: s
    call: s
    retry: {attempts: 3, initial: 0.01s, "on": [LookupError]}
"""


def test_retry_on_does_not_retry_other_exceptions(db: Path) -> None:
    calls = Counter()

    def s():
        calls["n"] += 1
        raise TypeError("not retryable")

    with pytest.raises(WorkflowFailed) as info:
        wf(RETRY_ON).run(db=db, namespace={"s": s})
    assert calls["n"] == 1
    assert "TypeError" in str(info.value)
    assert attempt_rows(db, info.value.run_id, "s") == [(1, "failed")]


def test_retry_on_retries_listed_exception_and_its_subclasses(db: Path) -> None:
    calls = Counter()

    def s():
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("missing")  # a LookupError
        return calls["n"]

    res = wf(RETRY_ON).run(db=db, namespace={"s": s})
    assert res.status == "completed"
    assert calls["n"] == 2
    assert attempt_rows(db, res.run_id, "s") == [(1, "failed"), (2, "completed")]


def test_timeout_fails_the_step(db: Path) -> None:
    release = threading.Event()

    def slow():
        release.wait(5)
        return "late"

    try:
        with pytest.raises(WorkflowFailed) as info:
            wf(
                "name: t\non_failure: stop\nsteps:\n  - id: slow\n    call: slow\n    timeout: 0.2s\n"
            ).run(db=db, namespace={"slow": slow})
    finally:
        release.set()
    assert "timed out" in str(info.value)
    assert "'slow'" in str(info.value)
    row = step_rows(db, info.value.run_id)["slow"]
    assert row["status"] == "failed"
    assert "timed out" in row["error"]


# -- when, failure ------------------------------------------------------------------------------


def test_when_false_skips_the_step_and_its_dependents(db: Path) -> None:
    calls = Counter()

    def f(name):
        calls[name] += 1
        return name

    res = wf(
        """
name: skip
params: {go: false}
steps:
  - id: a
    call: f
    with: {name: a}
  - id: b
    call: f
    with: {name: b}
    needs: [a]
    when: params.go
  - id: c
    call: f
    with: {name: c}
    needs: [b]
  - id: d
    call: f
    with: {name: d}
    needs: [a]
"""
    ).run(db=db, namespace={"f": f})
    assert res.status == "completed"
    assert calls == Counter({"a": 1, "d": 1})
    rows = step_rows(db, res.run_id)
    assert {k: v["status"] for k, v in rows.items()} == {
        "a": "completed",
        "b": "skipped",
        "c": "skipped",
        "d": "completed",
    }
    assert "false" in rows["b"]["reason"]
    assert "'b'" in rows["c"]["reason"]


FAILING = """
name: pipeline
on_failure: stop
steps:
  - id: extract
    call: extract
  - id: transform
    call: transform
    with: {x: "{{ steps.extract.output }}"}
  - id: load
    call: load
    with: {x: "{{ steps.transform.output }}"}
"""


def _failing_ns(calls: Counter, state: dict[str, bool]) -> dict[str, Any]:
    def extract():
        calls["extract"] += 1
        return 10

    def transform(x):
        calls["transform"] += 1
        if state["broken"]:
            raise RuntimeError("bad transform")
        return x * 2

    def load(x):
        calls["load"] += 1
        return {"loaded": x}

    return {"extract": extract, "transform": transform, "load": load}


def test_failure_stops_the_run(db: Path) -> None:
    calls = Counter()
    ns = _failing_ns(calls, {"broken": True})
    with pytest.raises(WorkflowFailed) as info:
        wf(FAILING).run(db=db, namespace=ns)
    err = info.value
    assert "'transform'" in str(err) and "bad transform" in str(err)
    assert err.status == "failed"
    assert run_status(db, err.run_id) == "failed"
    assert calls == Counter({"extract": 1, "transform": 1})
    rows = step_rows(db, err.run_id)
    assert rows["extract"]["status"] == "completed"
    assert rows["transform"]["status"] == "failed"
    assert rows["load"]["status"] == "pending"
    runs = airun_nb.runs(db=db)
    assert runs.loc[0, "failed_step"] == "transform"


def test_failure_by_default_rolls_the_run_back(db: Path) -> None:
    calls = Counter()
    ns = _failing_ns(calls, {"broken": True})
    with pytest.raises(WorkflowFailed) as info:
        wf(FAILING.replace("on_failure: stop\n", "")).run(db=db, namespace=ns)
    assert "'transform'" in str(info.value)
    assert info.value.status == "rolled_back"
    assert run_status(db, info.value.run_id) == "rolled_back"
    assert calls["load"] == 0


def test_fixed_function_resumes_the_failed_run(db: Path) -> None:
    calls = Counter()
    state = {"broken": True}
    ns = _failing_ns(calls, state)
    with pytest.raises(WorkflowFailed) as info:
        wf(FAILING).run(db=db, namespace=ns)
    first = info.value.run_id

    state["broken"] = False
    res = wf(FAILING).run(db=db, namespace=ns)
    assert res.run_id == first
    assert res.status == "completed"
    assert calls == Counter({"extract": 1, "transform": 2, "load": 1})
    assert res.replayed == ["extract"]
    assert res.outputs["load"] == {"loaded": 20}
    assert attempt_rows(db, first, "transform") == [(1, "failed"), (2, "completed")]
    assert step_rows(db, first)["transform"]["attempts"] == 2
    assert step_rows(db, first)["extract"]["attempts"] == 1
    assert len(airun_nb.runs(db=db)) == 1


def test_edited_function_reruns_it_and_downstream_only(db: Path) -> None:
    calls = Counter()

    def load():
        calls["load"] += 1
        return 1

    def double(x):
        calls["double"] += 1
        return x * 2

    def report(x):
        calls["report"] += 1
        return f"value {x}"

    def side():
        calls["side"] += 1
        return "side"

    ns = {"load": load, "double": double, "report": report, "side": side}
    text = """
name: edit
steps:
  - id: load
    call: load
  - id: double
    call: double
    with: {x: "{{ steps.load.output }}"}
  - id: report
    call: report
    with: {x: "{{ steps.double.output }}"}
  - id: side
    call: side
"""
    first = wf(text).run(db=db, namespace=ns)
    assert first.outputs["report"] == "value 2"

    def double(x):  # the notebook cell was edited
        calls["double"] += 1
        return x * 3

    ns["double"] = double
    second = wf(text).run(db=db, namespace=ns)
    assert second.status == "completed"
    assert calls == Counter({"load": 1, "double": 2, "report": 2, "side": 1})
    assert sorted(second.replayed) == ["load", "side"]
    assert second.outputs["report"] == "value 3"
    reasons = {e.step_id: (e.action, e.reason) for e in second.plan.entries}
    assert reasons["double"][0] == "run" and "changed" in reasons["double"][1]
    assert reasons["report"][0] == "run" and "upstream" in reasons["report"][1]
    assert "double" in reasons["report"][1]
    assert reasons["load"][0] == reasons["side"][0] == "replay"
    assert "double" in second.plan.summary() and "changed" in second.plan.summary()
    rows = step_rows(db, second.run_id)
    assert rows["load"]["replayed_from"] == first.run_id
    assert rows["double"]["replayed_from"] is None or pd.isna(rows["double"]["replayed_from"])


def test_an_edited_finished_step_replays_when_its_failed_run_resumes(db: Path) -> None:
    """Resume is replay: the finished `extract` is loaded, not run again, although its function
    changed; the resume says so in one line, and the failed step runs with the stored output."""
    calls = Counter()
    state = {"broken": True}
    ns = _failing_ns(calls, state)
    with pytest.raises(WorkflowFailed) as info:
        wf(FAILING).run(db=db, namespace=ns)

    def extract():  # edited upstream step
        calls["extract"] += 1
        return 100

    ns["extract"] = extract
    state["broken"] = False
    with pytest.warns(ResumeWarning) as said:
        res = wf(FAILING).run(db=db, namespace=ns)
    assert res.run_id == info.value.run_id
    assert res.replayed == ["extract"]
    assert calls == Counter({"extract": 1, "transform": 2, "load": 1})
    assert res.outputs["load"] == {"loaded": 20}
    assert [str(w.message).count("\n") for w in said] == [0]
    assert "extract (function extract)" in str(said[0].message)
    # a new run takes the new code
    again = wf(FAILING).run(db=db, namespace=ns, new=True)
    assert again.outputs["load"] == {"loaded": 200}


def test_changed_params_start_a_new_run_instead_of_resuming(db: Path) -> None:
    """A failed run is resumed only with its own params; other params are a new run."""
    calls = Counter()
    state = {"broken": True}

    def f(n):
        calls["f"] += 1
        return n

    def g(n):
        calls["g"] += 1
        if state["broken"]:
            raise RuntimeError("g broken")
        return n * 2

    text = (
        "name: params\non_failure: stop\nparams: {n: 1}\nsteps:\n"
        "  - id: f\n    call: f\n    with: {n: '{{ params.n }}'}\n"
        "  - id: g\n    call: g\n    with: {n: '{{ steps.f.output }}'}\n"
    )
    with pytest.raises(WorkflowFailed) as failed:
        wf(text).run(db=db, namespace={"f": f, "g": g})
    state["broken"] = False
    res = wf(text).run(db=db, namespace={"f": f, "g": g}, params={"n": 5})
    assert res.outputs["g"] == 10
    assert calls["f"] == 2
    assert res.run_id != failed.value.run_id and res.plan.mode == "new"


def test_edited_step_definition_reruns_it_and_downstream(db: Path) -> None:
    calls = Counter()

    def f(tag):
        calls[tag] += 1
        return tag

    text = """
name: defedit
steps:
  - id: a
    call: f
    with: {tag: a}
  - id: b
    call: f
    with: {tag: "{{ 'b' }}"}
    needs: [a]
  - id: c
    call: f
    with: {tag: c}
    needs: [b]
"""
    wf(text).run(db=db, namespace={"f": f})
    res = wf(text.replace("{{ 'b' }}", "{{ 'b' ~ '' }}")).run(db=db, namespace={"f": f})
    assert calls == Counter({"a": 1, "b": 2, "c": 2})
    reasons = {e.step_id: e.reason for e in res.plan.to_run}
    assert set(reasons) == {"b", "c"}
    assert "changed" in reasons["b"] and "upstream" in reasons["c"]


def test_new_runs_everything(db: Path) -> None:
    calls = Counter()
    state = {"broken": True}
    ns = _failing_ns(calls, state)
    with pytest.raises(WorkflowFailed) as info:
        wf(FAILING).run(db=db, namespace=ns)
    state["broken"] = False
    res = wf(FAILING).run(db=db, namespace=ns, new=True)
    assert res.run_id != info.value.run_id
    assert res.status == "completed"
    assert res.replayed == []
    assert calls == Counter({"extract": 2, "transform": 2, "load": 1})
    assert run_status(db, info.value.run_id) == "failed"


def test_resume_a_named_run(db: Path) -> None:
    calls = Counter()
    state = {"broken": True}
    ns = _failing_ns(calls, state)
    with pytest.raises(WorkflowFailed) as one:
        wf(FAILING).run(db=db, namespace=ns)
    with pytest.raises(WorkflowFailed) as two:
        wf(FAILING).run(db=db, namespace=ns, new=True)
    assert one.value.run_id != two.value.run_id

    state["broken"] = False
    res = wf(FAILING).run(db=db, namespace=ns, resume=one.value.run_id)
    assert res.run_id == one.value.run_id
    assert res.status == "completed"
    assert run_status(db, one.value.run_id) == "completed"
    assert run_status(db, two.value.run_id) == "failed"
    assert res.replayed == ["extract"]
    assert calls["extract"] == 2  # once per run, never again on resume


def test_resume_unknown_run_is_a_clear_error(db: Path) -> None:
    with pytest.raises(airun_nb.RunNotFound) as info:
        wf("name: w\nsteps:\n  - id: a\n    python: 'result = 1'\n").run(db=db, resume="r-nope")
    assert "r-nope" in str(info.value)


def test_unknown_call_target_fails_before_anything_is_written(db: Path) -> None:
    with pytest.raises(airun_nb.AirunError) as info:
        wf("name: w\nsteps:\n  - id: a\n    call: no_such_function\n").run(db=db, namespace={})
    assert "'a'" in str(info.value) and "no_such_function" in str(info.value)
    assert len(airun_nb.runs(db=db)) == 0


def test_call_by_import_path(db: Path) -> None:
    res = wf(
        "name: w\nsteps:\n  - id: j\n    call: 'textwrap:indent'\n    with: {text: x, prefix: '> '}\n"
        "    output: joined\n"
    ).run(db=db, namespace={})
    assert res.outputs["j"] == "> x"


# -- outputs ------------------------------------------------------------------------------------


def test_output_is_bound_into_the_namespace(db: Path) -> None:
    ns: dict[str, Any] = {"make": lambda: {"total": 5}}
    res = wf(
        "name: bind\nsteps:\n  - id: make\n    call: make\n    output: made\n"
        "  - id: twice\n    python: 'result = steps.make.output[\"total\"] * 2'\n    output: twice\n"
    ).run(db=db, namespace=ns)
    assert res.status == "completed"
    assert ns["made"] == {"total": 5}
    assert ns["twice"] == 10


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "count": pd.array([1, 2, 3], dtype="int64"),
            "ratio": [0.5, 1.25, float("nan")],
            "label": pd.array(["a", None, "c"], dtype="string"),
            "when": pd.to_datetime(
                ["2024-01-01 10:00:00", "2024-02-01 00:00:00", "2024-03-01 23:59:59"]
            ),
        },
        index=pd.Index([10, 20, 30], name="order_id"),
    )


ROUNDTRIP = """
name: roundtrip
on_failure: stop
steps:
  - id: make
    call: make
    output: made
  - id: use
    call: use
    with: {value: "{{ steps.make.output }}"}
"""


def _roundtrip(db: Path, value: Any) -> tuple[Any, Any, str]:
    """Produce ``value`` in one run, fail downstream, resume: return (bound, passed, kind)."""
    received: list[Any] = []
    state = {"broken": True}

    def make():
        return value

    def use(value):
        received.append(value)
        if state["broken"]:
            raise RuntimeError("not yet")
        return "used"

    ns: dict[str, Any] = {"make": make, "use": use}
    with pytest.raises(WorkflowFailed):
        wf(ROUNDTRIP).run(db=db, namespace=ns)
    state["broken"] = False
    ns2: dict[str, Any] = {"make": make, "use": use}
    res = wf(ROUNDTRIP).run(db=db, namespace=ns2)
    assert res.replayed == ["make"]
    kind = step_rows(db, res.run_id)["make"]["output_kind"]
    return ns2["made"], received[-1], kind


def test_dataframe_output_round_trips_with_index_and_dtypes(db: Path) -> None:
    original = _frame()
    bound, passed, kind = _roundtrip(db, original)
    assert kind == "pandas"
    for back in (bound, passed):
        assert back is not original
        pd.testing.assert_frame_equal(back, original)
        assert back.index.name == "order_id"


@pytest.mark.parametrize(
    "column",
    [
        pytest.param(pd.to_timedelta([1.5, 60, 3600], unit="s"), id="timedelta"),
        pytest.param(
            pd.Categorical(["low", "high", "low"], categories=["low", "high"]), id="categorical"
        ),
    ],
)
def test_dataframe_special_dtypes_round_trip(db: Path, column: Any) -> None:
    original = pd.DataFrame({"v": column, "n": [1, 2, 3]})
    _bound, passed, kind = _roundtrip(db, original)
    assert kind == "pandas"
    pd.testing.assert_frame_equal(passed, original)


def test_seeded_run_reuses_outputs_of_every_kind_from_the_earlier_run(db: Path) -> None:
    calls = Counter()
    frame = _frame()

    def combine(df, items, info):
        calls["combine"] += 1
        return [len(df), sorted(items), info["k"]]

    ns: dict[str, Any] = {
        "mk_df": lambda: frame,
        "mk_set": lambda: {"x", "y"},
        "mk_json": lambda: {"k": [1, 2]},
        "combine": combine,
    }
    text = """
name: seeded
steps:
  - id: df
    call: mk_df
  - id: items
    call: mk_set
  - id: info
    call: mk_json
  - id: combine
    call: combine
    with: {df: "{{ steps.df.output }}", items: "{{ steps.items.output }}",
           info: "{{ steps.info.output }}"}
"""
    first = wf(text).run(db=db, namespace=ns)

    def combine(df, items, info):  # edited
        calls["combine"] += 1
        pd.testing.assert_frame_equal(df, frame)
        return [len(df), sorted(items), info["k"], "v2"]

    ns["combine"] = combine
    second = wf(text).run(db=db, namespace=ns)
    assert second.run_id != first.run_id
    assert sorted(second.replayed) == ["df", "info", "items"]
    assert second.outputs["combine"] == [3, ["x", "y"], [1, 2], "v2"]
    assert calls["combine"] == 2


def test_json_output_round_trips(db: Path) -> None:
    value = {"n": 3, "xs": [1, 2.5, "x", None], "nested": {"ok": True}}
    bound, passed, kind = _roundtrip(db, value)
    assert kind == "json"
    assert bound == value and passed == value


def test_json_like_output_keeps_its_python_types(db: Path) -> None:
    value = {1: "one", "pair": (1, 2)}
    _bound, passed, _ = _roundtrip(db, value)
    assert passed == value
    assert type(passed["pair"]) is tuple


def test_set_output_uses_the_pickle_fallback(db: Path) -> None:
    bound, passed, kind = _roundtrip(db, {"a", "b"})
    assert kind == "pickle"
    assert bound == {"a", "b"} and passed == {"a", "b"}


def test_custom_object_output_uses_the_pickle_fallback(db: Path) -> None:
    bound, passed, kind = _roundtrip(db, Point(1, 2))
    assert kind == "pickle"
    assert bound == Point(1, 2) and passed == Point(1, 2)


def test_unstorable_output_runs_again_on_resume(db: Path) -> None:
    calls = Counter()
    state = {"broken": True}

    def make():
        calls["make"] += 1
        return threading.Lock()

    def use(value):
        calls["use"] += 1
        if state["broken"]:
            raise RuntimeError("not yet")
        return "used"

    ns = {"make": make, "use": use}
    with pytest.raises(WorkflowFailed):
        wf(ROUNDTRIP).run(db=db, namespace=ns)
    state["broken"] = False
    res = wf(ROUNDTRIP).run(db=db, namespace=ns)
    assert res.status == "completed"
    assert calls == Counter({"make": 2, "use": 2})
    reason = {e.step_id: e.reason for e in res.plan.to_run}["make"]
    assert "stored" in reason


def test_sql_step_over_step_output_and_notebook_frame(db: Path) -> None:
    sales = pd.DataFrame({"region": ["n", "s", "n"], "amount": [1.0, 2.0, 3.0]})
    regions = pd.DataFrame({"region": ["n", "s"], "name": ["North", "South"]})
    res = wf(
        """
name: sql
steps:
  - id: load
    call: load
  - id: totals
    sql: |
      select r.name, sum(l.amount) as total
      from {{ steps.load }} l join regions r using (region)
      group by r.name order by r.name
    output: totals
"""
    ).run(db=db, namespace={"load": lambda: sales, "regions": regions})
    assert res.outputs["totals"].to_dict("list") == {
        "name": ["North", "South"],
        "total": [4.0, 2.0],
    }


# -- interrupt ----------------------------------------------------------------------------------


def test_keyboard_interrupt_leaves_run_interrupted_and_resumable(db: Path) -> None:
    calls = Counter()
    state = {"interrupt": True}

    def first():
        calls["first"] += 1
        return 1

    def long(x):
        calls["long"] += 1
        if state["interrupt"]:
            raise KeyboardInterrupt
        return x + 1

    ns = {"first": first, "long": long}
    text = (
        "name: ki\nsteps:\n  - id: first\n    call: first\n"
        "  - id: long\n    call: long\n    with: {x: '{{ steps.first.output }}'}\n"
    )
    # Catch BaseException so an escaped KeyboardInterrupt fails this test, not the session.
    with pytest.raises(BaseException) as info:
        wf(text).run(db=db, namespace=ns)
    assert info.type is RunInterrupted, repr(info.value)
    run_id = info.value.run_id
    assert run_id in str(info.value)
    assert run_status(db, run_id) == "interrupted"
    assert step_rows(db, run_id)["long"]["status"] == "interrupted"
    assert step_rows(db, run_id)["first"]["status"] == "completed"

    state["interrupt"] = False
    res = wf(text).run(db=db, namespace=ns)
    assert res.run_id == run_id
    assert res.status == "completed"
    assert res.outputs["long"] == 2
    assert calls == Counter({"first": 1, "long": 2})
    assert attempt_rows(db, run_id, "long") == [(1, "interrupted"), (2, "completed")]
