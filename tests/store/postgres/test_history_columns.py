"""History on the team store fetches only the columns a statement reads, and still answers
every statement DuckDB would answer on the file: a later statement of the same session that
reads more columns, a `* EXCLUDE (...)`, a view over a store table. A real server."""

from __future__ import annotations

from typing import Any

from airun_nb.store import transitions
from airun_nb.store.opening import open_store


def _store(pg_url: str) -> Any:
    store: Any = open_store(pg_url)
    recs: list[dict[str, Any]] = [
        {"t": "run", "run_id": "r-1", "workflow": "w", "status": "completed"},
        {"t": "step", "run_id": "r-1", "step_id": "a", "position": 0, "status": "completed"},
        {"t": "step", "run_id": "r-1", "step_id": "b", "position": 1, "status": "failed"},
    ]
    recs[2] |= {"error": "ValueError: no", "output_json": "1"}
    transitions.commit(store, recs)
    return store


def test_one_session_reads_more_columns_as_its_statements_need_them(pg_url: str) -> None:
    """The first statement reads one column of `steps`, the next two others, the third every
    column but one: each answers from the server's rows."""
    store = _store(pg_url)
    with store.session() as con:
        assert con.execute("SELECT count(*) FROM steps").fetchall() == [(2,)]
        got = con.execute(
            "SELECT s.step_id, s.error, r.workflow FROM steps s JOIN runs r USING (run_id) "
            "WHERE s.status = ? ORDER BY s.position",
            ["failed"],
        ).fetchall()
        assert got == [("b", "ValueError: no", "w")]
        rows = con.execute("SELECT * EXCLUDE (output_blob) FROM steps ORDER BY position").fetchall()
        names = [d[0] for d in con.description]
    assert "output_blob" not in names and "output_json" in names and len(rows) == 2
    assert rows[1][names.index("output_json")] == "1"


def test_a_view_over_a_store_table_reads_it(pg_url: str) -> None:
    """A view made in the session over `steps` (DuckDB's plan of CREATE VIEW scans nothing)
    reads the table's rows."""
    store = _store(pg_url)
    with store.session() as con:
        con.execute("CREATE VIEW failed AS SELECT step_id FROM steps WHERE status = 'failed'")
        assert con.execute("SELECT * FROM failed").fetchall() == [("b",)]
