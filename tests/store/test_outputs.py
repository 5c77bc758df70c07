"""DataFrame and Arrow outputs in the DuckDB file store: small ones are kept as Parquet bytes in
``airun_outputs``, large ones as DuckDB tables of their own, and every reader (replay, history
SQL, diff, a copy to another store, a store of the previous schema) sees both kinds the same.

Real DuckDB files, real runs made by the engine.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import airun_nb
from airun_nb import Workflow
from airun_nb.store import outputs, packed, transfer
from airun_nb.store.database import Store
from airun_nb.store.schema import SCHEMA_VERSION
from airun_nb.workflow import load_run

ROWS = {"small": 100, "large": 40_000}  # Arrow data well under / over packed.SMALL_BYTES


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Every dtype a DataFrame output keeps: ints, floats with NaN, strings, booleans, naive and
    tz-aware timestamps, timedeltas, a categorical, nullable integers, a named index."""
    rng = np.random.default_rng(seed)
    n = np.arange(rows)
    df = pd.DataFrame(
        {
            "id": n + seed,
            "value": np.where(n % 7 == 0, np.nan, rng.random(rows)),
            "name": [f"item-{seed}-{i}" for i in range(rows)],
            "ok": n % 2 == 0,
            "when": pd.Timestamp("2026-01-01") + pd.to_timedelta(n, unit="min"),
            "took": pd.to_timedelta(n, unit="ms"),
            "level": pd.Categorical(
                np.where(n % 3 == 0, "low", "high"), categories=["low", "high"]
            ),
            "count": pd.array([None if i % 5 == 0 else i for i in range(rows)], dtype="Int64"),
        },
        index=pd.Index(n * 10, name="order_id"),
    )
    return df


def kept_as(store: Store, name: str) -> str:
    """How the store keeps output table ``name``: "parquet", "table" or "missing"."""
    with store.session() as con:
        blob = con.execute("SELECT 1 FROM airun_outputs WHERE name = ?", [name]).fetchall()
        table = name in packed.tables(con)
    assert not (blob and table), f"{name} is kept twice"
    return "parquet" if blob else "table" if table else "missing"


@pytest.mark.parametrize("size", list(ROWS))
def test_dataframe_outputs_round_trip_exactly_in_both_kinds(db: Path, size: str) -> None:
    """A DataFrame output, small or large, comes back equal with its dtypes and index; the small
    one is kept as Parquet bytes, the large one as a DuckDB table."""
    store = Store.open(db)
    original = frame(ROWS[size])
    row = outputs.encode(original, store, f"r-1/{size}/1")
    assert row["output_kind"] == "pandas"
    assert kept_as(store, f"r-1/{size}/1") == ("parquet" if size == "small" else "table")
    back = outputs.decode(row, store)
    assert back is not original
    pd.testing.assert_frame_equal(back, original)  # dtypes and index included


@pytest.mark.parametrize("size", list(ROWS))
def test_arrow_outputs_round_trip_exactly_in_both_kinds(db: Path, size: str) -> None:
    """An Arrow table output comes back as the same table, types and nulls included."""
    store = Store.open(db)
    rows = ROWS[size]
    table = pa.table(
        {
            "x": pa.array([None if i % 9 == 0 else i for i in range(rows)], pa.int32()),
            "s": pa.array([f"s{i}" for i in range(rows)], pa.string()),
            "d": pa.array([i / 3 for i in range(rows)], pa.float32()),
        }
    )
    row = outputs.encode(table, store, f"r-1/{size}/1")
    assert kept_as(store, f"r-1/{size}/1") == ("parquet" if size == "small" else "table")
    assert outputs.decode(row, store).equals(table, check_metadata=False)
    assert outputs.decode(row, store).schema.types == table.schema.types


def test_an_output_replaced_by_the_other_kind_is_kept_once(db: Path) -> None:
    """Writing a table name again replaces it, whichever kind it was before: the latest value
    is read back and only one copy is kept."""
    store = Store.open(db)
    store.put_table("r-1/a/1", pa.Table.from_pandas(frame(ROWS["large"]), preserve_index=False))
    assert kept_as(store, "r-1/a/1") == "table"
    store.put_table("r-1/a/1", pa.table({"x": [7]}))
    assert kept_as(store, "r-1/a/1") == "parquet"
    assert store.get_table("r-1/a/1").to_pydict() == {"x": [7]}
    store.put_table("r-1/a/1", pa.Table.from_pandas(frame(ROWS["large"]), preserve_index=False))
    assert kept_as(store, "r-1/a/1") == "table"
    assert store.get_table("r-1/a/1").num_rows == ROWS["large"]


def test_a_missing_output_table_is_one_line(db: Path) -> None:
    """Reading an output table the store does not have names it, in one line."""
    store = Store.open(db)
    with pytest.raises(airun_nb.errors.StoreError) as info:
        store.get_table("r-9/x/1")
    assert "no output table 'r-9/x/1'" in str(info.value) and "\n" not in str(info.value)


def _runs(db: Path, sizes: tuple[str, str], change: bool) -> tuple[str, str]:
    doc = {"name": "frames", "steps": [{"id": "out", "call": "make"}]}
    ids = []
    for i, size in enumerate(sizes):
        df = frame(ROWS[size])
        if change and i == 1:
            df.loc[df.index[:3], "value"] = -1.0
        r = Workflow.from_dict(doc).run(db=db, namespace={"make": lambda df=df: df}, new=True)
        ids.append(r.run_id)
    return ids[0], ids[1]


@pytest.mark.parametrize("sizes", [("small", "small"), ("large", "large")])
def test_replay_history_sql_and_diff_read_both_kinds(db: Path, sizes: tuple[str, str]) -> None:
    """A run's DataFrame output is replayed equal, history SQL reads it as
    ``outputs."<table>"``, and diff counts the cells a second run changed, for both kinds."""
    a, b = _runs(db, sizes, change=True)
    table = Store.open(db).query(
        "SELECT output_table FROM steps WHERE run_id = ? AND step_id = 'out'", [a]
    )[0][0]
    rows = ROWS[sizes[0]]
    got = airun_nb.query(f'SELECT count(*) AS n, max(id) AS top FROM outputs."{table}"', db=db)
    assert got["n"].tolist() == [rows] and got["top"].tolist() == [rows - 1]
    pd.testing.assert_frame_equal(load_run(a, db=db).outputs["out"], frame(rows))
    summary = airun_nb.diff(a, b, db=db)
    assert summary["summary"].tolist() == ["3 cells changed"], summary
    only = airun_nb.diff(a, b, step="out", db=db)
    assert sorted(only["_side"].tolist()) == ["A"] * 3 + ["B"] * 3


def test_diff_compares_a_small_output_with_a_large_one(db: Path) -> None:
    """Two runs whose outputs are kept differently are still compared cell by cell."""
    a, b = _runs(db, ("small", "large"), change=False)
    summary = airun_nb.diff(a, b, db=db)["summary"].tolist()
    assert summary == [f"shape 100x9 → {ROWS['large']}x9"], summary


@pytest.mark.parametrize("size", list(ROWS))
def test_a_copied_run_keeps_its_outputs_of_both_kinds(tmp_path: Path, size: str) -> None:
    """Copying a run to another store (pull/push) carries its output as the same table, and
    a replacing copy leaves one copy of it."""
    team, mine = Store.open(tmp_path / "team.duckdb"), Store.open(tmp_path / "mine.duckdb")
    doc = {"name": "frames", "steps": [{"id": "out", "call": "make"}]}
    original = frame(ROWS[size])
    run = Workflow.from_dict(doc).run(db=team.path, namespace={"make": lambda: original})
    bundle = transfer.copy_run(team, mine, run.run_id, by="analyst")
    name = f"{run.run_id}/out/1"
    assert set(transfer.outputs_of(bundle)) == {name}
    pd.testing.assert_frame_equal(load_run(run.run_id, db=mine.path).outputs["out"], original)
    assert kept_as(mine, name) == ("parquet" if size == "small" else "table")
    transfer.copy_run(team, mine, run.run_id, by="analyst", replace=True)
    assert kept_as(mine, name) == ("parquet" if size == "small" else "table")
    pd.testing.assert_frame_equal(load_run(run.run_id, db=mine.path).outputs["out"], original)


def test_two_hundred_small_outputs_cost_a_few_times_their_parquet_size(tmp_path: Path) -> None:
    """200 runs' 100-row frames grow the store file by at most 4x the frames' Parquet size
    (each as a DuckDB table of its own they cost about 60x: a 256 KB block each)."""
    empty = tmp_path / "empty.duckdb"
    Store.open(empty).release()
    db = tmp_path / "full.duckdb"
    store = Store.open(db)
    parquet = 0
    for i in range(200):
        df = frame(100, seed=i)
        buf = io.BytesIO()
        df.to_parquet(buf)
        parquet += len(buf.getvalue())
        outputs.encode(df, store, f"r-{i}/out/1")
    store.release()
    grown = db.stat().st_size - empty.stat().st_size
    assert grown <= 4 * parquet, (grown, parquet)
    assert Store.open(db).get_table("r-199/out/1").num_rows == 100


def test_a_store_of_the_previous_schema_opens_and_reads_its_table_outputs(db: Path) -> None:
    """A store written before small outputs were packed (schema 10: every output a DuckDB
    table, no airun_outputs) is upgraded when opened; its old outputs replay and answer SQL,
    and new small outputs beside them are packed."""
    original = frame(100)
    doc = {"name": "frames", "steps": [{"id": "out", "call": "make"}]}
    run = Workflow.from_dict(doc).run(db=db, namespace={"make": lambda: original})
    name = f"{run.run_id}/out/1"
    store = Store.open(db)
    old = store.get_table(name)
    store.release()
    con = duckdb.connect(str(db))  # the file as schema 10 kept it
    con.register("old", old)
    con.execute(f'CREATE TABLE outputs."{name}" AS SELECT * FROM old')
    con.execute("DROP TABLE airun_outputs")
    con.execute("UPDATE airun_meta SET value = '10' WHERE key = 'schema_version'")
    con.close()

    store = Store.open(db)
    version = store.query("SELECT value FROM airun_meta WHERE key = 'schema_version'")
    assert version == [(str(SCHEMA_VERSION),)]
    assert kept_as(store, name) == "table"
    pd.testing.assert_frame_equal(load_run(run.run_id, db=db).outputs["out"], original)
    got = airun_nb.query(f'SELECT count(*) AS n FROM outputs."{name}"', db=db)
    assert got["n"].tolist() == [100]
    again = Workflow.from_dict(doc).run(db=db, namespace={"make": lambda: original}, new=True)
    assert kept_as(Store.open(db), f"{again.run_id}/out/1") == "parquet"


def test_packed_bytes_are_plain_parquet(db: Path) -> None:
    """What ``airun_outputs`` holds is a Parquet file any Parquet reader opens."""
    store = Store.open(db)
    original = frame(100)
    outputs.encode(original, store, "r-1/a/1")
    data = store.query("SELECT data FROM airun_outputs WHERE name = 'r-1/a/1'")[0][0]
    assert bytes(data[:4]) == b"PAR1"
    table: Any = pq.read_table(io.BytesIO(bytes(data)))
    assert table.num_rows == 100


def _compression(store: Store, name: str) -> dict[str, set[str]]:
    with store.session() as con:
        rows = con.execute(
            "SELECT column_name, compression FROM pragma_storage_info(?) "
            "WHERE segment_type = 'VARCHAR'",
            [f'outputs."{name}"'],
        ).fetchall()
    out: dict[str, set[str]] = {}
    for column, compression in rows:
        out.setdefault(column, set()).add(compression)
    return out


@pytest.mark.parametrize("distinct", ["unique", "few"])
def test_a_large_outputs_strings_are_compressed_by_what_they_hold(
    tmp_path: Path, distinct: str
) -> None:
    """A large output whose string columns hold mostly distinct values (ids, keys) is written
    with ZSTD, which DuckDB writes twice as fast as its default there; a column of few distinct
    values keeps the default dictionary compression (ten times smaller for it). Either way the
    frame comes back exactly, and the store's other tables are written as before. The choice
    is part of the table's definition, so the last partial row group, compressed when the store
    is checkpointed, gets it too."""
    rows = 300_000  # more than two of DuckDB's row groups (122,880 rows)
    values = (
        [f"key-{i:06d}" for i in range(rows)]
        if distinct == "unique"
        else [("north", "south", "east")[i % 3] for i in range(rows)]
    )
    original = pd.DataFrame({"n": np.arange(rows), "s": values})
    db = tmp_path / "s.duckdb"
    doc = {"name": "strings", "steps": [{"id": "out", "call": "make"}]}
    run = Workflow.from_dict(doc).run(db=db, namespace={"make": lambda: original})
    store = Store.open(db)
    store.release()  # checkpointed: the last partial row group is compressed too
    name = f"{run.run_id}/out/1"
    assert kept_as(store, name) == "table"
    used = _compression(store, name)["s"]
    if distinct == "unique":
        assert used == {"ZSTD"}, used
    else:
        assert "ZSTD" not in used, used
    pd.testing.assert_frame_equal(load_run(run.run_id, db=db).outputs["out"], original)
    # The choice was only for that table: a later large output of few values keeps the default.
    again = pd.DataFrame({"n": np.arange(rows), "s": ["a", "b"] * (rows // 2)})
    later = Workflow.from_dict(doc).run(db=db, namespace={"make": lambda: again}, new=True)
    assert "ZSTD" not in _compression(store, f"{later.run_id}/out/1")["s"]


def test_each_string_column_of_a_large_output_gets_its_own_compression(tmp_path: Path) -> None:
    """In a large output with an id-like column beside a column of few values, the ids are
    written with ZSTD and the few values keep DuckDB's dictionary compression (before, one
    column of few values made every string column take the default, the slow one for ids). The
    frame comes back exactly, and SQL on the output table reads it as before."""
    rows = 300_000
    original = pd.DataFrame(
        {
            "x": np.arange(rows, dtype="float64"),
            "id": [f"key-{i:06d}" for i in range(rows)],
            "colour": [("red", "green", "blue")[i % 3] for i in range(rows)],
            'odd "name"': [f"v{i}" for i in range(rows)],
        }
    )
    db = tmp_path / "s.duckdb"
    doc = {"name": "strings", "steps": [{"id": "out", "call": "make"}]}
    run = Workflow.from_dict(doc).run(db=db, namespace={"make": lambda: original})
    store = Store.open(db)
    store.release()
    name = f"{run.run_id}/out/1"
    assert kept_as(store, name) == "table"
    used = _compression(store, name)
    assert used["id"] == {"ZSTD"} and used['odd "name"'] == {"ZSTD"}, used
    assert "ZSTD" not in used["colour"], used
    pd.testing.assert_frame_equal(load_run(run.run_id, db=db).outputs["out"], original)
    counted = airun_nb.query(
        f'SELECT count(DISTINCT colour), max(id) FROM outputs."{name}"', db=db
    ).values.tolist()
    assert counted == [[3, f"key-{rows - 1:06d}"]]


def test_history_reads_after_a_small_output_was_read(tmp_path: Path) -> None:
    """Reading a run's small output (kept as Parquet bytes) and then asking for history on the
    same store in the same process works: the output's read leaves nothing unfinished on the
    store's connection (DuckDB then refused the next relation: 'connection has an unfinished
    result')."""
    db = tmp_path / "s.duckdb"
    doc = {"name": "frames", "steps": [{"id": "out", "call": "make"}]}
    run = Workflow.from_dict(doc).run(db=db, namespace={"make": lambda: frame(ROWS["small"])})
    pd.testing.assert_frame_equal(load_run(run.run_id, db=db).outputs["out"], frame(ROWS["small"]))
    assert airun_nb.runs(db=db, workflow="frames")["run_id"].tolist() == [run.run_id]
    assert airun_nb.steps(run.run_id, db=db)["step_id"].tolist() == ["out"]


def test_a_large_output_in_many_chunks_fills_whole_row_groups(tmp_path: Path) -> None:
    """An Arrow table (or a frame read from Parquet) comes in chunks that do not end on DuckDB's
    row groups; inserted as they are, each chunk left a partial row group that the store's next
    checkpoint wrote again. The table is handed to DuckDB in batches ending on row group
    boundaries: the stored table has only full row groups but the last, and its rows come back
    in their order."""
    rows = 600_000
    n = np.arange(rows)
    whole = pa.table({"n": n, "x": n * 0.5, "s": [f"key-{i:06d}" for i in n]})
    chunked = pa.Table.from_batches(whole.to_batches(max_chunksize=131_072))  # as Parquet reads
    assert chunked.column(0).num_chunks == 5
    store = Store.open(tmp_path / "s.duckdb")
    store.put_table("chunked", chunked)
    store.release()  # checkpointed
    with store.session() as con:
        groups = con.execute(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('outputs.chunked')"
        ).fetchall()[0][0]
    assert groups == -(-rows // packed.ROW_GROUP_ROWS)
    assert store.get_table("chunked").equals(whole)
    store.release()
