"""SQL confinement: ``sql.exec`` (DuckDB and SQLite), the ``sql:`` step kind and the store's own
connection cannot reach outside the workspace, the store, or extensions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from sec_support import World, airun, one_line, run_refused

import airun_nb
from airun_nb import Workflow


def _exec(db: str, sql: str) -> str:
    return (
        "name: sqlattack\nsteps:\n  - id: q\n    capability: sql.exec\n"
        f"    with: {{database: {db}, sql: {json.dumps(sql)}}}\n"
    )


def _step(sql: str) -> str:
    return "name: sqlstep\nsteps:\n  - id: q\n    sql: " + json.dumps(sql) + "\n"


@pytest.fixture
def local_db(world: World) -> Path:
    path = world.root / "local.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t AS SELECT 1 AS v")
    con.close()
    return path


DUCKDB_ATTACKS = [
    ("COPY (SELECT 42) TO '{outside}/x.csv'", "x.csv"),
    ("ATTACH '{outside}/e.duckdb' AS e", "e.duckdb"),
    ("ATTACH '{outside}/e.duckdb' AS e; CREATE TABLE e.t AS SELECT 1", "e.duckdb"),
    ("SELECT * FROM read_text('{outside}/secret.txt')", None),
    ("SELECT * FROM read_csv('{outside}/secret.txt')", None),
    ("SELECT * FROM read_text('/etc/hostname')", None),
    ("SELECT * FROM glob('{outside}/*')", None),
    ("COPY (SELECT 1) TO '{root}/../outside/y.csv'", "y.csv"),
    ("ATTACH '{root}/airun.duckdb' AS s; DELETE FROM s.runs", None),
    ("ATTACH 'airun.duckdb' AS s; DELETE FROM s.audit", None),
    ("SELECT * FROM read_blob('{root}/airun.duckdb.journal')", None),
    ("COPY (SELECT 1) TO '{root}/airun.duckdb.journal'", None),
    ("SET enable_external_access = true; COPY (SELECT 1) TO '{outside}/z.csv'", "z.csv"),
    ("SET allowed_directories = ['/']", None),
    ("RESET lock_configuration", None),
    ("INSTALL sqlite", None),
    ("LOAD httpfs", None),
    ("SELECT * FROM sqlite_scan('{root}/x.sqlite', 't')", None),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", None),
]


@pytest.mark.parametrize(("sql", "created"), DUCKDB_ATTACKS)
def test_sql_exec_on_duckdb_cannot_leave_the_workspace(
    world: World, local_db: Path, sql: str, created: str | None
) -> None:
    snap = world.snapshot()
    text = sql.format(outside=world.outside, root=world.root)
    _result, error = run_refused(world, _exec("local.duckdb", text))
    assert error.startswith("sql.exec") or "sql.exec" in error
    if created:
        assert not (world.outside / created).exists()
    world.assert_unchanged(snap)
    # the local database still holds what it did
    con = duckdb.connect(str(local_db), read_only=True)
    assert con.execute("SELECT * FROM t").fetchall() == [(1,)]
    con.close()


@pytest.mark.parametrize(
    ("sql", "created"),
    [
        ("SELECT * FROM read_text('/etc/hostname')", None),
        ("SELECT * FROM read_text('{outside}/secret.txt')", None),
        ("COPY (SELECT 42) TO '{outside}/x.csv'", "x.csv"),
        ("ATTACH '{outside}/e.duckdb' AS e", "e.duckdb"),
        ("ATTACH '{root}/airun.duckdb' AS s", None),
        ("SELECT * FROM '{root}/airun.duckdb.journal'", None),
        ("INSTALL sqlite", None),
        ("SET enable_external_access = true", None),
    ],
)
def test_a_sql_step_cannot_leave_the_workspace(world: World, sql: str, created: str | None) -> None:
    snap = world.snapshot()
    _result, error = run_refused(world, _step(sql.format(outside=world.outside, root=world.root)))
    assert "step 'q'" in error or "Error" in error
    if created:
        assert not (world.outside / created).exists()
    world.assert_unchanged(snap)


def test_a_sql_step_still_reads_dataframes_step_outputs_and_workspace_files(
    world: World,
) -> None:
    (world.root / "prices.csv").write_text("item,price\na,2\nb,3\n")
    orders = pd.DataFrame({"item": ["a", "b", "a"], "qty": [1, 2, 3]})
    wf = Workflow.from_yaml(
        """
name: joins
steps:
  - id: totals
    sql: SELECT item, sum(qty) AS qty FROM orders GROUP BY item ORDER BY item
  - id: priced
    needs: [totals]
    sql: >
      SELECT t.item, t.qty * p.price AS amount
      FROM {{ steps.totals }} t JOIN read_csv('prices.csv') p USING (item) ORDER BY t.item
"""
    )
    r = wf.run(namespace={"orders": orders})
    out = r.outputs["priced"]
    assert out.to_dict("list") == {"item": ["a", "b"], "amount": [8, 6]}


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH DATABASE '{outside}/att.db' AS x",
        "ATTACH DATABASE '{root}/airun.duckdb' AS x",
        "ATTACH DATABASE 'file:{outside}/att2.db?mode=rwc' AS x",
        "VACUUM INTO '{outside}/vac.db'",
        "ATTACH DATABASE '{root}/../outside/att3.db' AS x",
    ],
)
def test_sql_exec_on_sqlite_stays_inside_the_workspace(world: World, sql: str) -> None:
    db = world.root / "local.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (v)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.close()
    snap = world.snapshot()
    _result, error = run_refused(
        world, _exec("local.sqlite", sql.format(outside=world.outside, root=world.root))
    )
    assert "not authorized" in error or "authorization denied" in error
    assert sorted(p.name for p in world.outside.iterdir()) == ["secret.txt"]
    world.assert_unchanged(snap)


def test_sql_exec_on_sqlite_may_attach_a_workspace_file(world: World) -> None:
    sqlite3.connect(world.root / "a.sqlite").close()
    Workflow.from_yaml(_exec("a.sqlite", "ATTACH DATABASE 'b.sqlite' AS b")).run()
    assert (world.root / "b.sqlite").exists()


@pytest.mark.parametrize(
    "database",
    [
        "airun.duckdb",
        "./airun.duckdb",
        "keep/../airun.duckdb",
        "airun.duckdb.journal",
        "link.duckdb",
    ],
)
def test_sql_exec_refuses_the_store_as_its_database(world: World, database: str) -> None:
    (world.root / "link.duckdb").symlink_to(world.store)
    snap = world.snapshot()
    _result, error = run_refused(world, _exec(database, "DELETE FROM audit; DELETE FROM runs"))
    assert "refused" in error and "store" in error
    world.assert_unchanged(snap)


def test_a_sqlite_file_as_the_store_is_refused_in_one_line_without_network(
    world: World, tmp_path: Path
) -> None:
    fake = tmp_path / "store.sqlite"
    con = sqlite3.connect(fake)
    con.execute("CREATE TABLE t (v)")
    con.commit()
    con.close()
    before = fake.read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    done = airun("runs", "--db", str(fake), env={"HOME": str(home)})
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert "SQLite file, not an airun_nb store" in line
    assert fake.read_bytes() == before
    assert not (home / ".duckdb").exists(), "DuckDB fetched an extension"


def test_a_declared_sql_compensation_is_confined_too(world: World, local_db: Path) -> None:
    wf = Workflow.from_yaml(
        f"""
name: comp
steps:
  - id: ins
    capability: sql.exec
    with: {{database: local.duckdb, sql: "INSERT INTO t VALUES (2)"}}
    compensate:
      capability: sql.exec
      with:
        database: local.duckdb
        sql: "COPY (SELECT 1) TO '{world.outside}/undo.csv'"
  - id: boom
    needs: [ins]
    python: raise RuntimeError("later step failed")
"""
    )
    r = wf.run(raise_on_failure=False)
    assert r.status == "rollback_failed"
    assert not (world.outside / "undo.csv").exists()
    rows = {s["step_id"]: s for s in airun_nb.steps(r.run_id).to_dict("records")}
    assert "Permission Error" in str(rows["ins"]["comp_error"])
