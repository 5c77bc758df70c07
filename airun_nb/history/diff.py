"""What differs between two runs: ``airun_nb.diff(a, b)``, one row per step, and
``diff(a, b, step=...)``, the rows of one DataFrame output that are in one run only.

DataFrame outputs are compared in DuckDB over the stored tables (the shape, the columns, and the
number of changed cells, row by row in stored order); JSON values by their keys; pickled values
by their bytes. Nothing is loaded into pandas except the answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import duckdb
import pandas as pd

from airun_nb.errors import AirunError, RunNotFound
from airun_nb.store import packed
from airun_nb.store.backend import Backend
from airun_nb.store.database import quote_ident
from airun_nb.store.opening import open_store

_Db = str | os.PathLike[str] | None
COLUMNS = ["step", "status_a", "status_b", "how_a", "how_b", "equal", "summary"]
_TABLE_KINDS = ("pandas", "arrow")


class DiffError(AirunError):
    """Two runs (or a step of them) cannot be compared as asked."""


def diff(run_a: str, run_b: str, *, step: str | None = None, db: _Db = None) -> pd.DataFrame:
    """Compare two runs step by step, or (``step=``) the rows of one DataFrame output."""
    store = open_store(db)
    with store.session("comparing runs") as con:
        rows_a, rows_b = _rows(con, run_a, store), _rows(con, run_b, store)
        if step is not None:
            return _row_diff(con, run_a, run_b, step, rows_a, rows_b)
        order = list(rows_b) + [s for s in rows_a if s not in rows_b]
        out = [_compare(con, s, rows_a.get(s), rows_b.get(s)) for s in order]
    df = pd.DataFrame(out, columns=COLUMNS)
    for col in COLUMNS:
        if col != "equal":
            df[col] = df[col].astype("string")
    df["equal"] = df["equal"].astype("boolean")
    return df


def _rows(con: duckdb.DuckDBPyConnection, run_id: str, store: Backend) -> dict[str, dict[str, Any]]:
    if not con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall():
        raise RunNotFound(f"no run '{run_id}' in {store.path}")
    cur = con.execute(
        """SELECT step_id, status, attempts, replayed_from, output_kind, output_json,
                  output_table, output_blob
           FROM steps WHERE run_id = ? ORDER BY position""",
        [run_id],
    )
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def _how(row: Mapping[str, Any]) -> str:
    if row.get("replayed_from"):
        return "replayed"
    return "executed" if row.get("attempts") else "not run"


def _compare(
    con: duckdb.DuckDBPyConnection,
    step: str,
    a: Mapping[str, Any] | None,
    b: Mapping[str, Any] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step}
    row["status_a"] = a["status"] if a else None
    row["status_b"] = b["status"] if b else None
    row["how_a"] = _how(a) if a else None
    row["how_b"] = _how(b) if b else None
    if a is None or b is None:
        row["equal"], row["summary"] = False, "only in A" if b is None else "only in B"
        return row
    if a["status"] != "completed" or b["status"] != "completed":
        same = a["status"] == b["status"]
        row["equal"] = same and a["status"] == "skipped"
        row["summary"] = "" if row["equal"] else f"status {a['status']} → {b['status']}"
        return row
    row["equal"], row["summary"] = _outputs(con, a, b)
    return row


def _outputs(
    con: duckdb.DuckDBPyConnection, a: Mapping[str, Any], b: Mapping[str, Any]
) -> tuple[bool, str]:
    ka, kb = a.get("output_kind") or "none", b.get("output_kind") or "none"
    if ka in _TABLE_KINDS and kb in _TABLE_KINDS:
        if a["output_table"] == b["output_table"]:
            return True, "same stored table"
        return _tables(con, a["output_table"], b["output_table"])
    if ka != kb:
        return False, f"kind {ka} → {kb}"
    if ka == "none":
        return True, ""
    if ka == "json":
        return _json_values(json.loads(a["output_json"]), json.loads(b["output_json"]))
    if ka == "pickle":
        same = bytes(a.get("output_blob") or b"") == bytes(b.get("output_blob") or b"")
        return same, "" if same else "pickled values differ"
    return False, f"outputs of kind {ka} are not compared"


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The columns of output table ``table`` ([] when it is missing). Naming the table in the
    statement is what makes a team store's session load it from the server."""
    try:
        cur = con.execute(f"SELECT * FROM outputs.{quote_ident(table)} LIMIT 0")
    except duckdb.CatalogException:
        return []
    names = [d[0] for d in cur.description or ()]
    cur.fetchall()  # (no rows: done with the statement before the next one)
    return names


def _tables(con: duckdb.DuckDBPyConnection, ta: str, tb: str) -> tuple[bool, str]:
    packed.expose(con, "the store", named=(ta, tb))  # small output tables, kept as Parquet
    cols_a, cols_b = _columns(con, ta), _columns(con, tb)
    if not cols_a or not cols_b:
        return False, "a stored table is missing"
    qa, qb = f"outputs.{quote_ident(ta)}", f"outputs.{quote_ident(tb)}"
    common = [c for c in cols_a if c in cols_b]
    # One pass: both row counts and the changed cells of the shared columns, row by row in
    # stored order (a positional join: no hashing, no sorting).
    cells = " + ".join(
        f"(a.{quote_ident(c)} IS DISTINCT FROM b.{quote_ident(c)})::BIGINT" for c in common
    )
    sel = ", ".join(f"{quote_ident(c)}" for c in common)
    sel = f"true AS __airun_row, {sel}" if sel else "true AS __airun_row"
    # One pass: both row counts and the changed cells of the shared columns in the rows both
    # have, row by row in stored order (a positional join: no hashing, no sorting).
    query = f"""
        SELECT count(a.__airun_row), count(b.__airun_row),
               coalesce(sum(CASE WHEN a.__airun_row AND b.__airun_row THEN {cells or "0"} END), 0)
        FROM (SELECT {sel} FROM {qa}) a POSITIONAL JOIN (SELECT {sel} FROM {qb}) b
    """
    # (fetchall: the statement is finished before a team store's session loads the next table)
    n_a, n_b, changed = (con.execute(query).fetchall() or [(0, 0, 0)])[0]
    parts = []
    if (n_a, len(cols_a)) != (n_b, len(cols_b)):
        parts.append(f"shape {n_a}x{len(cols_a)} → {n_b}x{len(cols_b)}")
    added = [c for c in cols_b if c not in cols_a]
    removed = [c for c in cols_a if c not in cols_b]
    if added:
        parts.append("columns added: " + ", ".join(added))
    if removed:
        parts.append("columns removed: " + ", ".join(removed))
    if changed:
        parts.append(f"{changed} cells changed")
    equal = not parts and cols_a == cols_b
    if not equal and not parts:
        parts.append("column order changed")
    return equal, "; ".join(parts) or f"equal ({n_a}x{len(cols_a)})"


def _json_values(a: Any, b: Any) -> tuple[bool, str]:
    if a == b and type(a) is type(b):
        return True, ""
    if isinstance(a, dict) and isinstance(b, dict):
        changed = [k for k in a if k in b and a[k] != b[k]]
        added = [k for k in b if k not in a]
        removed = [k for k in a if k not in b]
        parts = []
        if changed:
            parts.append("changed keys: " + ", ".join(map(str, changed)))
        if added:
            parts.append("added keys: " + ", ".join(map(str, added)))
        if removed:
            parts.append("removed keys: " + ", ".join(map(str, removed)))
        return False, "; ".join(parts)
    text_a, text_b = _short(a), _short(b)
    return False, f"{text_a} → {text_b}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _row_diff(
    con: duckdb.DuckDBPyConnection,
    run_a: str,
    run_b: str,
    step: str,
    rows_a: Mapping[str, Mapping[str, Any]],
    rows_b: Mapping[str, Mapping[str, Any]],
) -> pd.DataFrame:
    """Rows of the step's DataFrame output that are in one run only (``_side``: A or B)."""
    tables = []
    for run, rows in ((run_a, rows_a), (run_b, rows_b)):
        r = rows.get(step)
        if r is None:
            raise DiffError(f"diff: run {run} has no step '{step}'")
        if r.get("output_kind") not in _TABLE_KINDS or not r.get("output_table"):
            raise DiffError(
                f"diff: step '{step}' of run {run} has no DataFrame output "
                f"(its output is {r.get('output_kind') or 'missing'})"
            )
        tables.append(str(r["output_table"]))
    packed.expose(con, "the store", named=tuple(tables))  # small output tables, as Parquet
    cols_a, cols_b = _columns(con, tables[0]), _columns(con, tables[1])
    common = [c for c in cols_a if c in cols_b]
    if not common:
        raise DiffError(f"diff: the outputs of step '{step}' share no column")
    sel = ", ".join(quote_ident(c) for c in common)
    qa, qb = (f"outputs.{quote_ident(t)}" for t in tables)
    # One hash aggregate over both tables: a row's copies in A count +1, in B -1; what does
    # not cancel out is in one run only (as often as it is left over).
    query = f"""
        SELECT CASE WHEN __airun_n > 0 THEN 'A' ELSE 'B' END AS _side, {sel}
        FROM (
            SELECT {sel}, sum(__airun_w) AS __airun_n FROM (
                SELECT {sel}, 1 AS __airun_w FROM {qa} UNION ALL SELECT {sel}, -1 AS __airun_w FROM {qb}
            ) GROUP BY ALL HAVING sum(__airun_w) <> 0
        ) CROSS JOIN range(abs(__airun_n)::BIGINT)
        ORDER BY ALL
    """
    return con.execute(query).df()
