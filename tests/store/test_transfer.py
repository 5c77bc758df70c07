"""Copying a run between two stores (``Store.export_run`` / ``Store.import_run``): what a user
pulls is the run as it was, row for row, and a copy never half-happens.

Real DuckDB files on both sides, real runs made by the engine, real subprocesses for a run that
is executing while someone tries to copy it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import airun_nb
from airun_nb.errors import RunNotFound, StoreError
from airun_nb.gates import gate
from airun_nb.store import transfer
from airun_nb.store.database import Store
from airun_nb.store.schema import TABLES
from airun_nb.workflow import Workflow, fork, load_run
from support.crash import wait_for
from support.service import make_token

SPEC = """
params: {d: 0}
on_failure: stop
steps:
  - id: load
    python: |
      import pandas as pd
      result = pd.DataFrame({
          "region": ["north", "south", "north"],
          "amount": [1.5, 2.0, 4.0],
          "day": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]),
      })
  - id: review
    needs: [load]
    approval: {message: "Publish?", show: "{{ steps.load.output }}"}
  - id: totals
    needs: [review]
    sql: select region, sum(amount) as total from {{ steps.load }} group by region order by region
  - id: div
    needs: [totals]
    retry: {attempts: 2, initial: 0s}
    python: |
      result = {"ratio": 10 / params["d"]}
"""


def failed_run(db: Path) -> str:
    """A run with a DataFrame output, an approved gate, a SQL output and a step that failed
    twice: the kind of run a teammate pulls to fix."""
    wf = Workflow.from_yaml(SPEC, name="report")
    first = wf.run(db=db, raise_on_failure=False)
    assert first.status == "waiting"
    gate.decide(Store.open(db), first.run_id, "review", "approve", actor="lead", channel="cli")
    done = wf.run(db=db, resume=first.run_id, raise_on_failure=False)
    assert done.status == "failed"
    return done.run_id


def rows(store: Store, table: str, run_id: str) -> list[dict[str, Any]]:
    if table == "specs":
        return store.query_dicts(
            "SELECT * FROM specs WHERE spec_hash = (SELECT spec_hash FROM runs WHERE run_id = ?)",
            [run_id],
        )
    order = {"events": "seq", "audit": "ts, kind"}.get(table, "1")
    got = store.query_dicts(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", [run_id])
    return sorted(got, key=repr) if table not in ("events", "audit") else got


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Store, Store]:
    return Store.open(tmp_path / "team.duckdb"), Store.open(tmp_path / "mine.duckdb")


PROVENANCE = {
    "runs": ("launched_by", "origin_launcher", "copied_from"),
    "approvals": ("launched_by",),
}


def as_sent(table: str, got: list[dict[str, Any]], source: Store, by: str) -> list[dict[str, Any]]:
    """The destination's rows of a copied run with what the copy marks taken off again, after
    checking the marks: launched by ``by`` (the first launcher kept), copied audit rows marked
    with their store, and one ``copy`` row saying who copied the run from where."""
    if table == "audit":
        *got, note = got
        assert (note["kind"], note["principal"]) == ("copy", by), note
        assert str(source.path) in note["result"], note
        assert {r["copied_from"] for r in got} == {str(source.path)}
        return [dict(r, copied_from=None) for r in got]
    if table in PROVENANCE:
        assert {r["launched_by"] for r in got} == {by}
        if table == "runs":
            assert got[0]["copied_from"] == str(source.path)
            assert got[0]["origin_launcher"] is not None
        return [{k: v for k, v in r.items() if k not in PROVENANCE[table]} for r in got]
    return got


def test_round_trip_copies_every_row_of_every_run_table(stores: tuple[Store, Store]) -> None:
    """Every table that holds the run's rows arrives equal row for row; the only differences
    are the ones that must differ: the owner (a process on the other host) is cleared, the
    events are numbered after the destination's own, in the same order, and the copy is
    marked as such (its launcher here, the store it came from, one audit row of the copy)."""
    team, mine = stores
    run_id = failed_run(team.path)
    earlier = failed_run(mine.path)  # the destination has events of its own already
    last_seq = max(e["seq"] for e in rows(mine, "events", earlier))

    transfer.copy_run(team, mine, run_id, by="analyst")

    for table in transfer.RUN_TABLES:
        a, b = rows(team, table, run_id), rows(mine, table, run_id)
        assert a, f"the test run has no {table} rows: it proves nothing about them"
        b = as_sent(table, b, team, "analyst")
        if table in PROVENANCE:
            a = [{k: v for k, v in r.items() if k not in PROVENANCE[table]} for r in a]
        if table == "runs":
            for col in transfer.OWNER:
                assert b[0][col] is None
            a = [{k: v for k, v in r.items() if k not in transfer.OWNER} for r in a]
            b = [{k: v for k, v in r.items() if k not in transfer.OWNER} for r in b]
        if table == "events":
            assert min(e["seq"] for e in b) > last_seq
            assert [e["seq"] for e in b] == sorted(e["seq"] for e in b)
            a = [{k: v for k, v in r.items() if k != "seq"} for r in a]
            b = [{k: v for k, v in r.items() if k != "seq"} for r in b]
        assert a == b, table
    attempts = rows(mine, "attempts", run_id)
    assert len([x for x in attempts if x["step_id"] == "div"]) == 2


def test_dataframe_outputs_come_back_equal(stores: tuple[Store, Store]) -> None:
    """The DataFrame outputs (dtypes, index, timestamps) load from the copy equal to the
    original's, and every output table of the run is there, cell for cell."""
    team, mine = stores
    run_id = failed_run(team.path)
    bundle = transfer.copy_run(team, mine, run_id, by="analyst")
    names = list(transfer.outputs_of(bundle))
    assert len(names) == 2  # load and totals
    for name in names:
        assert mine.get_table(name).equals(team.get_table(name)), name
    here, there = load_run(run_id, db=team.path), load_run(run_id, db=mine.path)
    for step in ("load", "totals"):
        pd.testing.assert_frame_equal(here.outputs[step], there.outputs[step])


def test_the_copy_reads_and_forks_like_the_original(stores: tuple[Store, Store]) -> None:
    """After a pull, the history frames, the run table and a fork work on the copy; the fork
    (the fix) pushed back shows in the team store next to the run it fixed."""
    team, mine = stores
    run_id = failed_run(team.path)
    transfer.copy_run(team, mine, run_id, by="analyst")

    runs = airun_nb.runs(db=mine.path)
    assert runs.set_index("run_id").loc[run_id, "status"] == "failed"
    steps = airun_nb.steps(run_id, db=mine.path)
    assert list(steps["status"]) == ["completed", "completed", "completed", "failed"]
    assert "ZeroDivisionError" in repr(load_run(run_id, db=mine.path))

    fixed = fork(run_id, "div", params={"d": 4}, db=mine.path, raise_on_failure=False)
    assert fixed.status == "completed"
    assert fixed.outputs["div"] == {"ratio": 2.5}
    transfer.copy_run(mine, team, fixed.run_id, by="analyst")

    back = airun_nb.runs(db=team.path).set_index("run_id")
    assert back.loc[fixed.run_id, "status"] == "completed"
    assert load_run(fixed.run_id, db=team.path).outputs["div"] == {"ratio": 2.5}
    pd.testing.assert_frame_equal(
        load_run(fixed.run_id, db=team.path).outputs["load"],
        load_run(run_id, db=team.path).outputs["load"],
    )


def test_a_run_already_there_is_refused_and_nothing_changes(stores: tuple[Store, Store]) -> None:
    """Copying a run id the destination has is one line, and the destination is untouched."""
    team, mine = stores
    run_id = failed_run(team.path)
    transfer.copy_run(team, mine, run_id, by="analyst")
    before = {t: rows(mine, t, run_id) for t in transfer.RUN_TABLES}
    with pytest.raises(StoreError) as err:
        transfer.copy_run(team, mine, run_id, by="analyst")
    assert err.value.message == f"run {run_id} is already in {mine.path}; nothing copied"
    assert {t: rows(mine, t, run_id) for t in transfer.RUN_TABLES} == before


def test_replace_swaps_the_copy_for_the_newer_one(stores: tuple[Store, Store]) -> None:
    """``replace`` takes the source's current state: a run rolled back at the source since the
    last pull shows rolled back here, with no row of the old copy left over."""
    team, mine = stores
    run_id = failed_run(team.path)
    transfer.copy_run(team, mine, run_id, by="analyst")
    airun_nb.rollback(run_id, db=team.path)
    assert team.run_row(run_id)["status"] == "rolled_back"  # type: ignore[index]

    transfer.copy_run(team, mine, run_id, replace=True, by="analyst")
    assert mine.run_row(run_id)["status"] == "rolled_back"  # type: ignore[index]
    for table in ("steps", "attempts", "approvals", "audit"):
        there = rows(team, table, run_id)
        if table in PROVENANCE:
            there = [{k: v for k, v in r.items() if k not in PROVENANCE[table]} for r in there]
        assert as_sent(table, rows(mine, table, run_id), team, "analyst") == there, table
    assert len(rows(mine, "events", run_id)) == len(rows(team, "events", run_id))


def test_what_describes_the_store_stays_behind(stores: tuple[Store, Store]) -> None:
    """Every table of the schema is either a run's (travels) or the store's own (stays): a new
    table has to say which. The approval service's tokens of the source do not arrive."""
    assert set(TABLES) <= set(transfer.RUN_TABLES) | set(transfer.LOCAL_TABLES)
    assert not set(transfer.RUN_TABLES) & set(transfer.LOCAL_TABLES)
    team, mine = stores
    run_id = failed_run(team.path)
    make_token(team.path, "lead")
    assert team.token_listing()
    transfer.copy_run(team, mine, run_id, by="analyst")
    assert mine.token_listing() == []


def test_a_missing_run_is_one_line(stores: tuple[Store, Store]) -> None:
    """A run id the source does not have: one line naming it and the store."""
    team, mine = stores
    failed_run(team.path)
    with pytest.raises(RunNotFound, match=r"^no run 'r-nope' in .*team\.duckdb$"):
        transfer.copy_run(team, mine, "r-nope", by="analyst")


def test_a_bundle_that_carries_another_runs_rows_is_refused(stores: tuple[Store, Store]) -> None:
    """A bundle may only add its own run: a step row of another run inside it is refused and
    nothing is written (a bundle is data from elsewhere, like a workflow)."""
    team, mine = stores
    run_id = failed_run(team.path)
    other = failed_run(mine.path)
    bundle = team.export_run(run_id)
    bundle["steps"].append(dict(bundle["steps"][0], run_id=other, status="cancelled"))
    with pytest.raises(StoreError, match=f"holds a steps row of run {other}; nothing copied"):
        mine.import_run(bundle)
    assert not mine.has_run(run_id)
    assert [s["status"] for s in mine.step_rows(other)] == [*["completed"] * 3, "failed"]


def test_a_bundle_from_an_older_schema_loads(stores: tuple[Store, Store]) -> None:
    """A bundle from a store of schema 8 (no gate forms yet) loads, its missing columns empty;
    one from a newer schema than this version reads is refused in one line."""
    team, mine = stores
    run_id = failed_run(team.path)
    bundle = team.export_run(run_id)
    old = dict(bundle)
    old["approvals"] = [
        {k: v for k, v in r.items() if k not in ("form_spec", "votes", "option", "form")}
        for r in bundle["approvals"]
    ]
    old[transfer.META] = [dict(bundle[transfer.META][0], schema_version=8)]
    mine.import_run(old)
    assert mine.gate_row(run_id, "review")["status"] == "approved"  # type: ignore[index]
    assert mine.gate_row(run_id, "review")["form_spec"] is None  # type: ignore[index]

    newer = dict(bundle)
    newer[transfer.META] = [dict(bundle[transfer.META][0], schema_version=99)]
    third = Store.open(mine.path.with_name("third.duckdb"))
    with pytest.raises(StoreError, match=r"comes from a newer store \(schema 99"):
        third.import_run(newer)
    assert not third.has_run(run_id)


WAITING_STEP = """
on_failure: stop
steps:
  - id: work
    python: |
      import pathlib, time
      go = pathlib.Path({go!r})
      while not go.exists():
          time.sleep(0.02)
      if go.read_text() == "fail":
          raise RuntimeError("told to fail")
      result = 1
"""


def _executing(db: Path, go: Path, resume: str | None = None) -> subprocess.Popen[str]:
    """A process executing a run whose only step waits for the file ``go``."""
    code = textwrap.dedent(
        f"""
        from airun_nb.workflow import Workflow
        wf = Workflow.from_yaml({WAITING_STEP.format(go=str(go))!r}, name="waits")
        r = wf.run(db={str(db)!r}, resume={resume!r}, raise_on_failure=False)
        print(r.run_id, r.status)
        """
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _running(store: Store) -> list[dict[str, Any]]:
    return [
        r
        for r in store.runs_with_status("running")
        if r["owner_pid"] and any(s["status"] == "running" for s in store.step_rows(r["run_id"]))
    ]


def test_a_run_being_executed_is_not_copied(tmp_path: Path) -> None:
    """While a live process executes a run, copying it out is refused in one line, and so is
    replacing a copy that a live process executes at the destination; once the process has
    finished, the copy goes through."""
    team, mine = Store.open(tmp_path / "team.duckdb"), Store.open(tmp_path / "mine.duckdb")
    go = tmp_path / "go"
    proc = _executing(team.path, go)
    try:
        wait_for(lambda: bool(_running(team)), 120, "the run to be executing")
        run_id = str(_running(team)[0]["run_id"])
        with pytest.raises(
            StoreError,
            match=rf"^run {run_id} is running in .*team\.duckdb "
            rf"\(pid {proc.pid} on .*\); nothing copied$",
        ):
            transfer.copy_run(team, mine, run_id, by="analyst")
        assert not mine.has_run(run_id)
        go.write_text("fail")
    finally:
        out, _ = proc.communicate(timeout=120)
    assert out.split() == [run_id, "failed"]
    transfer.copy_run(team, mine, run_id, by="analyst")

    go.unlink()
    again = _executing(mine.path, go, resume=run_id)  # the copy resumes at the destination
    try:
        wait_for(lambda: bool(_running(mine)), 120, "the copy to be executing")
        with pytest.raises(StoreError, match=rf"^run {run_id} is running in .*mine\.duckdb"):
            transfer.copy_run(team, mine, run_id, replace=True, by="analyst")
        go.write_text("ok")
    finally:
        out, _ = again.communicate(timeout=120)
    assert out.split() == [run_id, "completed"]
    assert mine.run_row(run_id)["status"] == "completed"  # type: ignore[index]


def test_the_same_store_on_both_sides_is_one_line(stores: tuple[Store, Store]) -> None:
    """Copying a run onto the store it is in is refused before anything is read or written."""
    team, _ = stores
    run_id = failed_run(team.path)
    with pytest.raises(StoreError, match="the source and the destination are one store"):
        transfer.copy_run(team, Store.open(team.path), run_id, by="analyst")


def test_passwords_in_urls_are_hidden() -> None:
    """Every message the commands print goes through this: a URL's password never shows."""
    said = transfer.redact("cannot reach postgresql://bob:s3cr:et@db.example/team (x)")
    assert "s3cr" not in said and "postgresql://bob:***@db.example/team" in said
    assert transfer.redact("postgresql:/ann:pw@h/db") == "postgresql:/ann:***@h/db"
    assert transfer.redact("postgresql://ann@h/db and team.duckdb") == (
        "postgresql://ann@h/db and team.duckdb"
    )


def test_arrow_outputs_round_trip(stores: tuple[Store, Store]) -> None:
    """An Arrow table output (not a DataFrame) arrives as the same Arrow table."""
    team, mine = stores
    table = pa.table({"x": pa.array([1, 2, None], pa.int64()), "s": ["a", None, "c"]})
    wf = Workflow.from_yaml("steps:\n  - id: t\n    call: make\n", name="arrow")
    run = wf.run(db=team.path, namespace={"make": lambda: table})
    transfer.copy_run(team, mine, run.run_id, by="analyst")
    assert load_run(run.run_id, db=mine.path).outputs["t"].equals(table)


NOTEBOOK = """
on_failure: stop
steps:
  - id: load
    python: result = 21
  - id: compute
    needs: [load]
    call: compute
    with: {x: "{{ steps.load.output }}"}
"""


def test_a_pulled_run_is_fixed_by_a_fork_in_the_notebook(ipython: Any, db: Path) -> None:
    """The teammate's story in a real IPython shell: a run that failed in the team store with
    their buggy notebook function is pulled into this notebook's store, forked from the failing
    step by a ``%%workflow --fork`` cell with the fixed function, and the fix pushed back."""
    team = Store.open(db.with_name("team.duckdb"))

    def compute(x: int) -> int:
        raise ValueError("off by one somewhere")

    wf = Workflow.from_yaml(NOTEBOOK, name="report")
    failed = wf.run(db=team.path, namespace={"compute": compute}, raise_on_failure=False)
    assert failed.status == "failed"
    mine = Store.open(db)
    transfer.copy_run(team, mine, failed.run_id, by="analyst")

    ipython.run_cell("def compute(x):\n    return 2 * x\n")
    result = ipython.run_cell(
        f"%%workflow report --fork {failed.run_id} --from compute\n{NOTEBOOK}"
    )
    assert result.error_in_exec is None, result.error_in_exec
    fixed = [r for r in mine.runs_with_status("completed") if r["forked_from"] == failed.run_id]
    assert len(fixed) == 1
    assert load_run(fixed[0]["run_id"], db=db).outputs["compute"] == 42

    transfer.copy_run(mine, team, fixed[0]["run_id"], by="analyst")
    assert team.run_row(fixed[0]["run_id"])["status"] == "completed"  # type: ignore[index]
    assert [s["replayed_from"] for s in team.step_rows(fixed[0]["run_id"])] == [
        failed.run_id,
        None,
    ]
