"""Small output tables, kept as Parquet bytes in one table of the store (``airun_outputs``).

DuckDB gives every table at least one block of its own (256 KB), so a 100-row DataFrame kept as a
DuckDB table of its own costs about 60 times its Parquet size. An output table whose Arrow data
is under :data:`SMALL_BYTES` is kept instead as Parquet bytes in one row of ``airun_outputs``
(keyed by the table's name, as the PostgreSQL team store keeps every output table); a larger one
stays a DuckDB table ``outputs."name"``, compressed about as well as Parquet and scanned column
by column (string columns of mostly distinct values with ZSTD, see
:func:`unique_string_columns`). Both come back as the same Arrow table (Parquet keeps the exact
Arrow types; nothing is pickled), and SQL that names ``outputs."name"`` reads either kind: the Parquet
ones it names are loaded into a DuckDB database in memory first (:func:`expose`), the way the
team store loads every output table it is asked about.

The bytes of ``airun_outputs`` are only ever read as Parquet: a row that is not Parquet is a
damaged store (one line, :class:`~airun_nb.errors.StoreError`), never something to unpickle.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import duckdb

from airun_nb.errors import StoreError
from airun_nb.store.schema import OUTPUTS, quote_ident

if TYPE_CHECKING:
    import pyarrow as pa

# Under one DuckDB block (256 KB) of Arrow data a table of its own wastes most of its block;
# above it the DuckDB table is as small as the Parquet bytes or smaller (benchmarks/README.md).
SMALL_BYTES = 256 * 1024
MEMORY = "airun_small"  # the in-memory database a file store's connection loads them into
# ``outputs."name"`` or ``outputs.name`` in a statement: an output table it reads.
OUTPUT_REF = re.compile(r'\boutputs\s*\.\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)')


def small(table: pa.Table) -> bool:
    """Is ``table`` kept as Parquet bytes (rather than a DuckDB table of its own)?"""
    return bool(table.nbytes < SMALL_BYTES)


def to_parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def from_parquet(data: bytes, name: str, where: object) -> pa.Table:
    """The Arrow table of stored Parquet bytes; one line when they are not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table: pa.Table = pq.read_table(io.BytesIO(bytes(data)))
    except (pa.ArrowException, OSError, ValueError):
        raise StoreError(
            f"output table '{name[:80]}' in {where} is damaged (its stored bytes are not "
            "Parquet); it cannot be read"
        ) from None
    return table


def referenced(sql: str) -> list[str]:
    """The output table names a statement reads as ``outputs."name"``."""
    out = []
    for m in OUTPUT_REF.finditer(sql):
        ref = m.group(1)
        out.append(ref[1:-1].replace('""', '"') if ref.startswith('"') else ref)
    return out


def load(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    name: str,
    table: pa.Table | pa.RecordBatchReader,
) -> None:
    """Make ``table`` readable as ``<schema>."name"`` on ``con`` (a copy, in that database)."""
    con.register("__airun_load", table)
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE {schema}.{quote_ident(name)} AS SELECT * FROM __airun_load"
        )
    finally:
        con.unregister("__airun_load")


# -- the DuckDB file store ------------------------------------------------------------------
def write(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, replace: bool = True) -> None:
    """Keep output table ``name`` in the open transaction, small ones as Parquet bytes, and
    remove the other kind of the same name. ``replace=False`` keeps a table already there."""
    if not replace and exists(con, name):
        return
    if small(table):
        con.execute(
            f"INSERT OR REPLACE INTO {OUTPUTS} VALUES (?, now()::TIMESTAMP, ?)",
            [name, to_parquet(table)],
        )
        con.execute(f"DROP TABLE IF EXISTS outputs.{quote_ident(name)}")
        return
    zstd = unique_string_columns(table)
    if zstd:
        _load_zstd(con, name, table, zstd)
    else:
        load(con, "outputs", name, aligned(table))
    con.execute(f"DELETE FROM {OUTPUTS} WHERE name = ?", [name])


def _load_zstd(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, zstd: set[int]) -> None:
    """Output table ``name`` as a DuckDB table whose columns at the positions ``zstd`` are
    compressed with ZSTD, the others as DuckDB chooses. The choice is part of the table's
    definition, so every row group keeps it, also the last partial one (compressed when the
    store is checkpointed) and any DuckDB writes again later. The column types are the ones
    DuckDB reads from the Arrow table, as ``CREATE TABLE AS`` would make them."""
    con.register("__airun_load", table)
    try:
        described = con.execute("DESCRIBE SELECT * FROM __airun_load").fetchall()
    finally:
        con.unregister("__airun_load")
    columns = ", ".join(
        f"{quote_ident(str(column))} {kind}" + (" USING COMPRESSION zstd" if i in zstd else "")
        for i, (column, kind, *_) in enumerate(described)
    )
    target = f"outputs.{quote_ident(name)}"
    con.execute(f"CREATE OR REPLACE TABLE {target} ({columns})")
    con.register("__airun_load", aligned(table))
    try:
        con.execute(f"INSERT INTO {target} SELECT * FROM __airun_load")
    finally:
        con.unregister("__airun_load")


# DuckDB's rows per row group (its default, which the store keeps), and the rows of each batch
# a large output table is handed to it in when its chunks do not end on row group boundaries.
ROW_GROUP_ROWS = 122_880
BATCH_ROWS = ROW_GROUP_ROWS


def aligned(table: pa.Table) -> pa.Table | pa.RecordBatchReader:
    """``table`` in batches that end on DuckDB's row group boundaries. DuckDB inserts each
    Arrow batch on its own, leaving a partial row group at the end of every batch, and the
    store's next checkpoint rewrites those into full ones: a 100 MB frame read from Parquet
    (chunks of 131,072 rows) was written in 1.0 s of CPU and then rewritten in 1.3 s more
    (2.7 s when its strings took DuckDB's default compression there). A table whose chunks all
    end on a boundary (one chunk, say) is handed over as it is; any other is streamed in batches
    of :data:`BATCH_ROWS` rows, each joined from its chunks (a copy of one batch at a time)."""
    import pyarrow as pa

    bounds = set()
    for column in table.columns:
        end = 0
        for chunk in column.chunks[:-1]:
            end += len(chunk)
            bounds.add(end)
    if all(b % ROW_GROUP_ROWS == 0 for b in bounds):
        return table

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, table.num_rows, BATCH_ROWS):
            piece = table.slice(start, BATCH_ROWS)
            parts = piece.to_batches()
            if len(parts) > 1:
                with contextlib.suppress(pa.ArrowException):  # too big to join: as they are
                    parts = piece.combine_chunks().to_batches()
            yield from parts

    return pa.RecordBatchReader.from_batches(table.schema, batches())


SAMPLE = 10_000  # values of each string column looked at to tell how many are distinct


def unique_string_columns(table: pa.Table) -> set[int]:
    """The positions of ``table``'s string columns whose values are mostly distinct (judged on
    a sample). DuckDB's default compression of such a column (FSST over a dictionary) is what a
    large output's write spends most of its time on (a 100 MB frame with an id-like string
    column: 1.9 s, against 0.9 s with ZSTD, whose file is a quarter larger; Parquet takes
    0.75 s). A column of few distinct values compresses far better by dictionary (ten times
    smaller than ZSTD), so such a column keeps the default, whatever the others get."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = set()
    for i, (column, field) in enumerate(zip(table.columns, table.schema, strict=True)):
        if not (
            pa.types.is_string(field.type)
            or pa.types.is_large_string(field.type)
            or pa.types.is_string_view(field.type)
        ):
            continue
        sample = column.slice(0, SAMPLE)
        if len(sample) and pc.count_distinct(sample).as_py() >= len(sample) // 2:
            out.add(i)
    return out


def read(
    con: duckdb.DuckDBPyConnection, name: str, where: object, *, large: bool = False
) -> pa.Table:
    """Output table ``name``, whichever way it is kept; :class:`StoreError` when it is not.
    ``large``: a DuckDB table's strings come with 64-bit offsets, as pandas keeps them (a
    frame's string column is then not copied again by ``to_pandas``)."""
    # fetchall: a result left unfinished would refuse the connection's next relation
    rows = con.execute(f"SELECT data FROM {OUTPUTS} WHERE name = ?", [name]).fetchall()
    if rows:
        return from_parquet(rows[0][0], name, where)
    if name not in tables(con):
        raise StoreError(f"no output table '{name[:80]}' in {where}")
    if large:
        con.execute("SET arrow_large_buffer_size = true")
    try:
        rel = con.sql(f"SELECT * FROM outputs.{quote_ident(name)}")
        fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
        out: pa.Table = fetch()
    finally:
        if large:
            con.execute("RESET arrow_large_buffer_size")
    return out


def names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every output table's name, both kinds."""
    return sorted(
        {*tables(con), *(str(r[0]) for r in con.execute(f"SELECT name FROM {OUTPUTS}").fetchall())}
    )


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The output tables kept as DuckDB tables of the file."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'outputs' "
        "AND table_catalog = current_database()"
    ).fetchall()
    return {str(r[0]) for r in rows}


def exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = con.execute(f"SELECT 1 FROM {OUTPUTS} WHERE name = ?", [name]).fetchall()
    return bool(found) or name in tables(con)


def remove(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(f"DELETE FROM {OUTPUTS} WHERE name = ?", [name])
    con.execute(f"DROP TABLE IF EXISTS outputs.{quote_ident(name)}")


def expose(con: Any, where: object, sql: str = "", named: tuple[str, ...] = ()) -> None:
    """Make the Parquet-kept output tables that ``sql`` names (and ``named``) readable as
    ``outputs."name"`` on a file store's connection, loaded fresh into an in-memory database
    (the team store's connections load what a statement names by themselves)."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return
    attached = {
        str(r[0]) for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    }
    if MEMORY in attached:  # what an earlier statement loaded may have been replaced since
        con.execute("RESET search_path")
        con.execute(f"DETACH {MEMORY}")
    wanted = sorted({*referenced(sql), *named})
    if not wanted:
        return
    marks = ", ".join("?" for _ in wanted)
    rows = con.execute(
        f"SELECT name, data FROM {OUTPUTS} WHERE name IN ({marks})", wanted
    ).fetchall()
    if not rows:
        return
    file_db = str(con.execute("SELECT current_database()").fetchall()[0][0])
    con.execute(f"ATTACH ':memory:' AS {MEMORY}")
    con.execute(f"CREATE SCHEMA {MEMORY}.outputs")
    # ``outputs."name"`` is looked up in the file's outputs schema, then in memory.
    db = quote_ident(file_db)
    path = f"{db}.main,{db}.outputs,{MEMORY}.outputs"
    con.execute(f"SET search_path = '{path.replace(chr(39), chr(39) * 2)}'")
    for name, data in rows:
        load(con, f"{MEMORY}.outputs", str(name), from_parquet(data, str(name), where))
