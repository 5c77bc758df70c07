"""``{{ template }}`` values: Python types kept, text rendered, undefined names caught early."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import airun_nb
from airun_nb import TemplateError, Workflow
from airun_nb.spec import templates


def test_whole_value_templates_keep_python_types() -> None:
    df = pd.DataFrame({"x": [1, 2]})
    ctx = {"params": {"n": 3, "xs": [1, 2, 3], "cfg": {"a": 1}}, "df": df}
    assert templates.render("{{ params.n }}", ctx, step="s", field="with.n") == 3
    assert type(templates.render("{{ params.n }}", ctx, step="s", field="f")) is int
    assert templates.render("{{ params.xs }}", ctx, step="s", field="f") == [1, 2, 3]
    assert templates.render("  {{ params.cfg }} ", ctx, step="s", field="f") == {"a": 1}
    assert templates.render("{{ df }}", ctx, step="s", field="f") is df
    assert templates.render("{{ params.n * 2 }}", ctx, step="s", field="f") == 6


def test_mixed_strings_render_text() -> None:
    ctx = {"params": {"n": 3, "q": "2026Q3"}}
    assert templates.render("n={{ params.n }}", ctx, step="s", field="f") == "n=3"
    assert templates.render("{{ params.n }}{{ params.n }}", ctx, step="s", field="f") == "33"
    assert (
        templates.render("Publish {{ params.q }}?", ctx, step="s", field="f") == "Publish 2026Q3?"
    )


def test_render_walks_nested_values_and_leaves_plain_values_alone() -> None:
    ctx = {"params": {"n": 3}}
    value = {"a": ["{{ params.n }}", "x{{ params.n }}", 7], "b": {"c": "plain"}, "d": None}
    assert templates.render(value, ctx, step="s", field="with") == {
        "a": [3, "x3", 7],
        "b": {"c": "plain"},
        "d": None,
    }


def test_undefined_name_error_names_step_and_field() -> None:
    with pytest.raises(TemplateError) as info:
        templates.render({"x": "{{ nope }}"}, {"params": {}}, step="load", field="with")
    msg = str(info.value)
    assert "'load'" in msg and "with.x" in msg and "nope" in msg
    assert "\n" not in msg


def test_undefined_attribute_error_names_step_and_field() -> None:
    with pytest.raises(TemplateError) as info:
        templates.render("{{ params.missing }}", {"params": {"n": 1}}, step="load", field="with.q")
    msg = str(info.value)
    assert "'load'" in msg and "with.q" in msg and "missing" in msg


def test_when_conditions() -> None:
    ctx = {"params": {"go": True, "n": 3, "mode": "full"}}
    assert templates.evaluate_condition("params.go", ctx, step="s") is True
    assert templates.evaluate_condition("not params.go", ctx, step="s") is False
    assert templates.evaluate_condition("params.n > 2", ctx, step="s") is True
    assert templates.evaluate_condition("{{ params.n > 5 }}", ctx, step="s") is False
    assert templates.evaluate_condition("params.mode == 'full'", ctx, step="s") is True
    # A rendered text template is false when it reads as false.
    assert templates.evaluate_condition("{{ 'false' }}", ctx, step="s") is False


# -- through the engine ------------------------------------------------------------------------


def test_types_reach_the_called_function(db: Path) -> None:
    seen: dict[str, object] = {}

    def make():
        return pd.DataFrame({"x": [1, 2, 3]})

    def use(n, xs, frame, label):
        seen.update(n=n, xs=xs, frame=frame, label=label)
        return len(frame) * n

    wf = Workflow.from_yaml(
        """
name: types
params: {n: 2, xs: [1, 2]}
steps:
  - id: make
    call: make
  - id: use
    call: use
    with:
      n: "{{ params.n }}"
      xs: "{{ params.xs }}"
      frame: "{{ steps.make.output }}"
      label: "n is {{ params.n }}"
"""
    )
    res = wf.run(db=db, namespace={"make": make, "use": use})
    assert res.status == "completed"
    assert seen["n"] == 2 and type(seen["n"]) is int
    assert seen["xs"] == [1, 2]
    assert isinstance(seen["frame"], pd.DataFrame)
    assert seen["frame"]["x"].tolist() == [1, 2, 3]
    assert seen["label"] == "n is 2"
    assert res.outputs["use"] == 6


def test_params_override_reaches_templates(db: Path) -> None:
    wf = Workflow.from_yaml(
        "name: p\nparams: {n: 2}\nsteps:\n  - id: a\n    python: 'result = n * 10'\n"
        "    with: {n: '{{ params.n }}'}\n"
    )
    assert wf.run(db=db, params={"n": 5}).outputs["a"] == 50


def test_notebook_variables_are_visible_to_templates(db: Path) -> None:
    wf = Workflow.from_yaml(
        "name: nbvars\nsteps:\n  - id: a\n    python: 'result = x + 1'\n"
        "    with: {x: '{{ threshold }}'}\n"
    )
    assert wf.run(db=db, namespace={"threshold": 41}).outputs["a"] == 42


def test_undefined_name_fails_at_plan_time_before_anything_is_written(db: Path) -> None:
    calls: list[str] = []

    def first():
        calls.append("first")
        return 1

    wf = Workflow.from_yaml(
        """
name: undefined
steps:
  - id: first
    call: first
  - id: second
    call: first
    with: {x: "{{ not_defined_anywhere }}"}
"""
    )
    with pytest.raises(TemplateError) as info:
        wf.run(db=db, namespace={"first": first})
    msg = str(info.value)
    assert "'second'" in msg and "with.x" in msg and "not_defined_anywhere" in msg
    assert calls == []
    assert len(airun_nb.runs(db=db)) == 0
    assert len(airun_nb.steps(db=db)) == 0


def test_undefined_name_in_when_fails_at_plan_time(db: Path) -> None:
    wf = Workflow.from_yaml(
        "name: w\nsteps:\n  - id: a\n    python: 'result = 1'\n    when: 'flag_not_defined'\n"
    )
    with pytest.raises(TemplateError) as info:
        wf.run(db=db)
    assert "'a'" in str(info.value) and "when" in str(info.value)
    assert len(airun_nb.runs(db=db)) == 0


def test_when_reads_upstream_output_and_waits_for_it(db: Path) -> None:
    order: list[str] = []

    def check():
        order.append("check")
        return {"ok": False}

    def act():
        order.append("act")
        return "acted"

    def other():
        order.append("other")
        return "other"

    wf = Workflow.from_yaml(
        """
name: cond
steps:
  - id: act
    call: act
    when: "steps.check.output.ok"
  - id: other
    call: other
    when: "{{ not steps.check.output.ok }}"
  - id: check
    call: check
"""
    )
    res = wf.run(db=db, namespace={"check": check, "act": act, "other": other})
    assert res.status == "completed"
    assert order == ["check", "other"]
    status = dict(zip(res.steps["step"], res.steps["status"], strict=True))
    assert status == {"act": "skipped", "other": "completed", "check": "completed"}
