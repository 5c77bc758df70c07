"""Limits that fire: a catastrophic regular expression, a huge template integer, a 10^6-item
foreach, an endless query and an absurd retry count each end with one line at their limit, and
the process keeps working afterwards."""

from __future__ import annotations

import threading

import pytest
from sec_support import World, run_refused

from airun_nb import Workflow
from airun_nb.errors import AirunError


def _still_responsive() -> None:
    """A small workflow still runs to completion in this process."""
    result = Workflow.from_yaml(
        "name: after\nsteps:\n  - {id: one, sql: SELECT 41 + 1 AS answer}\n"
    ).run()
    assert result.status == "completed"
    assert int(result["one"]["answer"].iloc[0]) == 42


def test_a_catastrophic_regex_stops_at_regex_timeout(world: World) -> None:
    """`(a|aa)+$` against 'aaa...b' backtracks for ages: it stops at the settings'
    regex_timeout with one line, and the process goes on."""
    _r, error = run_refused(
        world,
        "name: redos\nsteps:\n  - id: match\n    capability: text.regex.match\n"
        f"    with: {{pattern: '(a|aa)+$', text: '{'a' * 64}b'}}\n",
    )
    assert "took longer than" in error and "regex_timeout" in error
    _still_responsive()


@pytest.mark.parametrize("field", ["with", "when"])
def test_a_huge_template_integer_is_refused(world: World, field: str) -> None:
    """`{{ 9**(9**9) }}` is refused before Python computes it (in `with:` and in `when:`)."""
    if field == "with":
        text = "name: big\nsteps:\n  - id: a\n    call: f\n    with: {x: '{{ 9**(9**9) }}'}\n"
    else:
        text = "name: big\nsteps:\n  - id: a\n    call: f\n    when: '{{ 9**(9**9) > 1 }}'\n"
    called: list[object] = []
    try:
        result = Workflow.from_yaml(text).run(
            raise_on_failure=False, namespace={"f": lambda **kw: called.append(kw)}
        )
        error = str(result.error)
    except AirunError as exc:
        error = exc.message
    assert "template_max_int_bits" in error and "\n" not in error
    assert called == []
    _still_responsive()


def test_a_million_item_foreach_is_refused(world: World) -> None:
    """A foreach over 10^6 items is refused at the settings' foreach_max_items, before any
    run is stored."""
    snap = world.snapshot()
    _r, error = run_refused(
        world,
        "name: flood\nparams: {n: 1000000}\nsteps:\n  - id: each\n"
        "    foreach: \"{{ ('x' * params.n) | list }}\"\n    sql: SELECT 1\n",
    )
    assert "1000000 items" in error and "foreach_max_items" in error
    world.assert_unchanged(snap)
    _still_responsive()


def test_an_absurd_retry_count_is_refused(world: World) -> None:
    """`retry: 1000000` is refused when the workflow is parsed (retry_max_attempts)."""
    _r, error = run_refused(
        world, "name: again\nsteps:\n  - {id: a, sql: SELECT 1, retry: 1000000}\n"
    )
    assert "retry_max_attempts" in error


def test_an_endless_query_is_interrupted_at_its_timeout(world: World) -> None:
    """A `sql:` step that would run for ever ends at its timeout, and DuckDB is interrupted:
    the thread that ran it finishes (it would otherwise keep burning CPU after the run)."""
    before = {t.ident for t in threading.enumerate()}
    _r, error = run_refused(
        world,
        "name: endless\nsteps:\n  - id: q\n    timeout: 3s\n"
        "    sql: SELECT count(*) FROM range(100000000000) a, range(100000000000) b\n",
    )
    assert "timed out after 3 s" in error
    workers = [
        t for t in threading.enumerate() if t.name == "airun-step-timeout" and t.ident not in before
    ]
    for t in workers:
        t.join(timeout=120)  # a safety net: the interrupted query ends the thread
    assert not any(t.is_alive() for t in workers), "the query is still running"
    _still_responsive()
