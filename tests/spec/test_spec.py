"""The workflow spec: native form, seed dialect, errors that point at a line and a key, hashes."""

from __future__ import annotations

import re

import pytest

from airun_nb import SpecError
from airun_nb.spec import parser as spec
from airun_nb.spec.parser import parse

NATIVE = """\
name: quarterly
params: {quarter: "2026Q3", limit: 10}
max_parallel: 2
steps:
  - id: load
    call: load_sales
    with: {quarter: "{{ params.quarter }}"}
    retry: {attempts: 3, backoff: fixed, initial: 250ms, max: 2s, "on": [ValueError, OSError]}
    timeout: 1h30m
  - id: clean
    needs: [load]
    python: |
      result = steps.load.output.dropna()
    retry: 2
    timeout: 5
  - id: totals
    needs: [clean]
    sql: select region, sum(amount) as total from {{ steps.clean }} group by region
    when: "params.limit > 3"
    output: totals_df
"""


def test_native_form_parses_every_field() -> None:
    wf = parse(NATIVE)

    assert wf.name == "quarterly"
    assert wf.params == {"quarter": "2026Q3", "limit": 10}
    assert wf.max_parallel == 2
    assert [s.id for s in wf.steps] == ["load", "clean", "totals"]
    assert [s.kind for s in wf.steps] == ["call", "python", "sql"]

    load, clean, totals = wf.steps
    assert load.body == "load_sales"
    assert load.with_ == {"quarter": "{{ params.quarter }}"}
    assert load.needs == []
    assert load.retry.attempts == 3
    assert load.retry.backoff == "fixed"
    assert load.retry.initial == pytest.approx(0.25)
    assert load.retry.max == pytest.approx(2.0)
    assert load.retry.on == ("ValueError", "OSError")
    assert load.timeout == pytest.approx(5400.0)

    assert clean.needs == ["load"]
    assert clean.body.strip() == "result = steps.load.output.dropna()"
    assert clean.retry.attempts == 2  # shorthand: a bare number of attempts
    assert clean.timeout == pytest.approx(5.0)

    assert totals.needs == ["clean"]
    assert totals.when == "params.limit > 3"
    assert totals.output == "totals_df"
    assert "{{ steps.clean }}" in totals.body


def test_defaults_when_fields_are_omitted() -> None:
    wf = parse("name: w\nsteps:\n  - id: a\n    call: f\n")
    (a,) = wf.steps
    assert a.retry.attempts == 1
    assert a.timeout is None
    assert a.when is None
    assert a.output is None
    assert wf.max_parallel >= 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (7, 7.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    wf = parse(f"name: w\nsteps:\n  - id: a\n    call: f\n    timeout: {text}\n")
    assert wf.steps[0].timeout == pytest.approx(seconds)


def test_retry_on_written_as_a_bare_yaml_key() -> None:
    """`on:` is what users type; YAML 1.1 loads a bare `on` key as the boolean True."""
    wf = parse(
        "name: w\nsteps:\n  - id: a\n    call: f\n"
        "    retry: {attempts: 3, on: [ValueError, KeyError]}\n"
    )
    assert wf.steps[0].retry.on == ("ValueError", "KeyError")


def test_name_argument_overrides_yaml_name() -> None:
    wf = parse("name: from_yaml\nsteps:\n  - id: a\n    call: f\n", name="from_cell")
    assert wf.name == "from_cell"


# -- seed dialect ------------------------------------------------------------------------------

SEED = """\
name: rotate_report
description: write a draft, get sign-off, then publish
metadata: {owner: "agent:reporter"}
initial_state: {draft: "out/draft.md"}
steps:
  - name: draft
    capability_name: io.fs.write_file
    inputs: {path: "{{draft}}", content: "v1"}
    risk_level: MEDIUM
  - name: signoff
    step_type: HUMAN_APPROVAL
    inputs: {message: "Publish {{draft}}?"}
    depends_on: [draft]
  - name: publish
    capability_name: io.fs.move
    inputs: {source: "{{draft}}", destination: "out/final.md"}
    depends_on: [signoff]
    max_retries: 1
    compensation:
      capability_name: io.fs.move
      inputs: {source: "out/final.md", destination: "{{draft}}"}
enable_auto_rollback: true
"""

SEED_AS_NATIVE = """\
name: rotate_report
description: write a draft, get sign-off, then publish
metadata: {owner: "agent:reporter"}
params: {draft: "out/draft.md"}
steps:
  - id: draft
    capability: fs.write
    with: {path: "{{ params.draft }}", content: "v1"}
    risk: medium
    retry: {attempts: 3}  # the seed dialect's default: three attempts
  - id: signoff
    approval: {message: "Publish {{ params.draft }}?"}
    needs: [draft]
  - id: publish
    capability: fs.move
    with: {source: "{{ params.draft }}", destination: "out/final.md"}
    needs: [signoff]
    retry: {attempts: 1}
    compensate:
      capability: fs.move
      with: {source: "out/final.md", destination: "{{ params.draft }}"}
on_failure: rollback
"""


def _rendered(value: object, wf: spec.WorkflowSpec) -> object:
    """Render a field the way each dialect looks names up (seed: flat params; native: params.X),
    with capability names resolved through the alias table (io.fs.write_file -> fs.write)."""
    from airun_nb.capabilities import canonical
    from airun_nb.spec import templates

    ctx = {**wf.params, "params": wf.params} if wf.seed_dialect else {"params": wf.params}
    out = templates.render(value, ctx, step="s", field="f")
    if isinstance(out, str):
        return canonical(out)
    if isinstance(out, dict) and "capability" in out:
        return {**out, "capability": canonical(out["capability"])}
    return out


def test_seed_dialect_parses_to_the_native_model() -> None:
    seed = parse(SEED)
    native = parse(SEED_AS_NATIVE)

    assert seed.seed_dialect and not native.seed_dialect
    assert seed.name == native.name
    assert seed.params == native.params == {"draft": "out/draft.md"}
    assert seed.description == native.description
    assert seed.metadata == native.metadata
    assert seed.on_failure == native.on_failure == "rollback"
    assert [s.id for s in seed.steps] == [s.id for s in native.steps]
    assert (
        [s.kind for s in seed.steps]
        == [s.kind for s in native.steps]
        == ["capability", "approval", "capability"]
    )
    for a, b in zip(seed.steps, native.steps, strict=True):
        assert a.needs == b.needs, a.id
        assert a.retry.attempts == b.retry.attempts, a.id
        assert a.risk == b.risk, a.id
        assert _rendered(a.with_, seed) == _rendered(b.with_, native), a.id
        assert _rendered(a.body, seed) == _rendered(b.body, native), a.id
        assert _rendered(a.compensate, seed) == _rendered(b.compensate, native), a.id
    assert seed.steps[1].body == {"message": "Publish {{draft}}?"}
    assert _rendered(seed.steps[1].body, seed) == {"message": "Publish out/draft.md?"}


def test_seed_auto_rollback_false_means_stop() -> None:
    text = SEED.replace("enable_auto_rollback: true", "enable_auto_rollback: false")
    assert parse(text).on_failure == "stop"


# -- errors ------------------------------------------------------------------------------------


def _error(text: str, **kw: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, **kw)  # type: ignore[arg-type]
    err = info.value
    msg = str(err)
    assert "Traceback" not in msg
    assert "\n" not in msg
    assert len(msg) < 200, msg
    return err


def _assert_line(err: SpecError, line: int) -> None:
    assert err.line == line, str(err)
    assert re.search(rf"\bline {line}\b", str(err)), str(err)


def test_malformed_yaml_names_its_line() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    call: f\n    with: {x: [1, 2}\n")
    _assert_line(err, 5)
    assert "invalid YAML" in str(err)


def test_line_offset_shifts_reported_lines() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    call: f\n    with: {x: [1, 2}\n", line_offset=1)
    _assert_line(err, 6)


def test_unknown_step_key_suggests_the_right_one() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    call: f\n  - id: b\n    call: g\n    neds: [a]\n")
    _assert_line(err, 7)
    assert "neds" in str(err)
    assert "did you mean 'needs'" in str(err)


def test_unknown_workflow_key_suggests_the_right_one() -> None:
    err = _error("name: w\nparms: {x: 1}\nsteps:\n  - id: a\n    call: f\n")
    _assert_line(err, 2)
    assert "did you mean 'params'" in str(err)


def test_unknown_step_kind_is_reported_with_suggestion() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    cal: f\n")
    _assert_line(err, 4)
    assert "'cal'" in str(err)
    assert "did you mean 'call'" in str(err)


def test_step_without_kind() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    with: {x: 1}\n")
    _assert_line(err, 3)
    assert "'a'" in str(err) and "no kind" in str(err)


def test_step_with_two_kinds() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    call: f\n    sql: select 1\n")
    _assert_line(err, 3)
    assert "call" in str(err) and "sql" in str(err)


def test_duplicate_ids() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    call: f\n  - id: a\n    call: g\n")
    _assert_line(err, 5)
    assert "duplicate" in str(err) and "'a'" in str(err)


def test_unknown_needs_suggests_the_close_id() -> None:
    err = _error(
        "name: w\nsteps:\n  - id: load\n    call: f\n  - id: b\n    call: g\n    needs: [lod]\n"
    )
    _assert_line(err, 7)
    assert "needs" in str(err)
    assert "'lod'" in str(err) and "did you mean 'load'" in str(err)


def test_cycle_is_shown() -> None:
    err = _error(
        "name: w\nsteps:\n"
        "  - id: a\n    call: f\n    needs: [c]\n"
        "  - id: b\n    call: f\n    needs: [a]\n"
        "  - id: c\n    call: f\n    needs: [b]\n"
    )
    assert "cycle" in str(err)
    assert err.line is not None and "needs" in str(err)
    cycle = str(err).split("cycle:")[1].strip()
    nodes = [n.strip() for n in cycle.split("->")]
    assert nodes[0] == nodes[-1]
    assert sorted(nodes[:-1]) == ["a", "b", "c"]


def test_cycle_through_template_reference_is_detected() -> None:
    err = _error(
        "name: w\nsteps:\n"
        "  - id: a\n    call: f\n    with: {x: '{{ steps.b.output }}'}\n"
        "  - id: b\n    call: f\n    needs: [a]\n"
    )
    assert "cycle" in str(err)


@pytest.mark.parametrize("bad", ["5 parsecs", "-1s"])
def test_bad_timeout_duration_names_line_and_key(bad: str) -> None:
    err = _error(f"name: w\nsteps:\n  - id: a\n    call: f\n    timeout: {bad}\n")
    assert "timeout" in str(err)
    _assert_line(err, 5)


def test_bad_retry_initial_duration_names_line_and_key() -> None:
    err = _error(
        "name: w\nsteps:\n  - id: a\n    call: f\n    retry: {attempts: 2, initial: soon}\n"
    )
    assert "initial" in str(err)
    _assert_line(err, 5)


@pytest.mark.parametrize(
    ("retry", "key"),
    [
        ("{attempts: 0}", "attempts"),
        ("{attempts: two}", "attempts"),
        ("{attempts: 2, backoff: random}", "backoff"),
        ("{attemps: 2}", "attemps"),
        ("lots", "retry"),
        ('{attempts: 2, "on": 3}', "on"),
    ],
)
def test_bad_retry(retry: str, key: str) -> None:
    err = _error(f"name: w\nsteps:\n  - id: a\n    call: f\n    retry: {retry}\n")
    _assert_line(err, 5)
    assert key in str(err)


def test_unknown_step_in_template_is_a_parse_error() -> None:
    err = _error(
        "name: w\nsteps:\n  - id: load\n    call: f\n"
        "  - id: b\n    call: g\n    with: {x: '{{ steps.laod.output }}'}\n"
    )
    _assert_line(err, 7)
    assert "'b'" in str(err) and "with.x" in str(err) and "'laod'" in str(err)


def test_unknown_step_in_python_code_is_a_parse_error() -> None:
    err = _error("name: w\nsteps:\n  - id: a\n    python: 'result = steps.nope.output'\n")
    _assert_line(err, 4)
    assert "nope" in str(err)


def test_missing_steps_list() -> None:
    err = _error("name: w\nparams: {a: 1}\n")
    assert "steps" in str(err)


def test_missing_name() -> None:
    err = _error("steps:\n  - id: a\n    call: f\n")
    assert "name" in str(err)


# -- implicit dependencies ---------------------------------------------------------------------


def test_template_reference_adds_implicit_dependency() -> None:
    wf = parse(
        "name: w\nsteps:\n"
        "  - id: a\n    call: f\n"
        "  - id: b\n    call: g\n    with: {x: '{{ steps.a.output }}'}\n"
        "  - id: c\n    sql: 'select * from {{ steps.b }}'\n"
        "  - id: d\n    call: g\n    when: 'steps.c.output is not none'\n"
    )
    assert wf.by_id["b"].needs == ["a"]
    assert wf.by_id["c"].needs == ["b"]
    assert wf.by_id["d"].needs == ["c"]


def test_python_code_reference_adds_implicit_dependency() -> None:
    wf = parse(
        "name: w\nsteps:\n"
        "  - id: a\n    call: f\n"
        "  - id: b\n    call: f\n"
        "  - id: c\n    python: |\n      result = steps.a.output + steps['b'].output\n"
    )
    assert sorted(wf.by_id["c"].needs) == ["a", "b"]


# -- hashes ------------------------------------------------------------------------------------


def test_hashes_are_stable_across_parses() -> None:
    one, two = parse(NATIVE), parse(NATIVE)
    assert one.spec_hash == two.spec_hash
    assert [s.def_hash for s in one.steps] == [s.def_hash for s in two.steps]
    assert all(s.def_hash for s in one.steps)


def test_changing_a_step_changes_its_hash_only() -> None:
    base = parse(NATIVE)
    edited = parse(
        NATIVE.replace("result = steps.load.output.dropna()", "result = steps.load.output")
    )
    assert edited.spec_hash != base.spec_hash
    assert edited.by_id["clean"].def_hash != base.by_id["clean"].def_hash
    assert edited.by_id["load"].def_hash == base.by_id["load"].def_hash
    assert edited.by_id["totals"].def_hash == base.by_id["totals"].def_hash


def test_changing_retry_changes_the_step_hash() -> None:
    base = parse(NATIVE)
    edited = parse(NATIVE.replace("retry: 2", "retry: 4"))
    assert edited.by_id["clean"].def_hash != base.by_id["clean"].def_hash


def test_a_nul_byte_names_its_line() -> None:
    text = "steps:\n  - id: a\n    python: |\n      x = 1\x00\n"
    with pytest.raises(SpecError) as info:
        parse(text)
    assert str(info.value) == "line 4: invalid YAML: a NUL byte is not allowed"


@pytest.mark.parametrize(
    ("lines", "field", "what"),
    [
        ("    check: result > nothere\n", "check", "name 'nothere' is undefined"),
        ("    when: params.x and nothere\n", "when", "name 'nothere' is undefined"),
        ("    check: result | nofilter\n", "check", "unknown filter 'nofilter'"),
        ("    when: params.x is notatest\n", "when", "unknown test 'notatest'"),
        ("    with: {x: '{{ params | nofilter }}'}\n", "with.x", "unknown filter 'nofilter'"),
    ],
)
def test_check_and_when_are_checked_before_anything_runs(
    tmp_path: object, lines: str, field: str, what: str
) -> None:
    import airun_nb

    db = f"{tmp_path}/s.duckdb"
    text = "steps:\n  - id: a\n    python: 'result = 1'\n" + lines
    with pytest.raises(airun_nb.AirunError) as info:
        airun_nb.Workflow.from_yaml(text, name="w").run(db=db, namespace={})
    assert f"step 'a', field '{field}'" in str(info.value)
    assert what in str(info.value)
    import os

    if os.path.exists(db):
        assert airun_nb.runs(db=db).empty
