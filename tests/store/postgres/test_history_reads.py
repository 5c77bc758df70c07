"""A large table on the team store is read in block ranges on several connections sharing one
snapshot, and columns that are NULL in most rows travel packed in one text array a row: the
history frames are the same as the DuckDB file's for the same rows. A real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest

import airun_nb
from airun_nb.store import transitions
from airun_nb.store.opening import open_store
from airun_nb.store.postgres import backend

T0 = 1_780_000_000.0


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the store's ADBC reads send, in order."""
    sent: list[str] = []
    fetch = backend.PostgresStore._fetch

    def spied(con: Any, sql: str, **kw: Any) -> Any:
        sent.append(sql)
        return fetch(con, sql, **kw)

    monkeypatch.setattr(backend.PostgresStore, "_fetch", staticmethod(spied))
    return sent


def _records() -> list[dict[str, Any]]:
    """Three runs of 40 steps: most columns of most steps NULL, a few steps failed, replayed,
    compensated or with a table output, text with quotes, commas, braces and newlines."""
    recs: list[dict[str, Any]] = []
    for r in range(3):
        run_id = f"r-{r}"
        recs.append(
            {"t": "run", "run_id": run_id, "workflow": f"w{r % 2}", "status": "completed"}
            | {"created_at": T0 + r, "started_at": T0 + r, "finished_at": T0 + r + 9}
        )
        for i in range(40):
            step: dict[str, Any] = {"t": "step", "run_id": run_id, "step_id": f"s{i}"}
            step |= {"position": i, "kind": "call", "status": "completed", "attempts": 1}
            step |= {"started_at": T0 + r + i / 100, "finished_at": T0 + r + i / 100 + 0.005}
            step |= {"def_hash": f"d{r}{i}", "finish_seq": r * 100 + i, "output_kind": "json"}
            if i == 7:
                step |= {"status": "failed", "error": 'ValueError: "bad", {x}\nline 2'}
            if i == 9:
                step |= {"replayed_from": "r-0", "reason": "inputs unchanged, ok"}
            if i == 11 and r == 1:
                step |= {"compensation": "undo", "comp_status": "done", "comp_attempts": 2}
                step |= {"comp_error": "", "comp_finished_at": T0 + 50.123456}
            if i == 13:
                step |= {"output_kind": "table", "output_table": f"{run_id}/s{i}"}
            recs.append(step)
    return recs


def test_split_and_packed_reads_give_the_file_s_frames(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """steps() and runs() on the team store, with `steps` read in parts and its mostly-NULL
    columns packed (text, integers, timestamps), equal the frames of a DuckDB file holding the
    same rows."""
    file = tmp_path / "same.duckdb"
    for db in (pg_url, str(file)):
        store: Any = open_store(db)
        transitions.commit(store, _records())
        store.release()
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("ANALYZE")
        sparse = con.execute(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'steps' AND null_frac >= %s",
            [backend.SPARSE_SHARE],
        ).fetchone()
    assert sparse is not None and sparse[0] >= 2  # packing is exercised
    monkeypatch.setattr(backend, "SPLIT_BYTES", 1)  # every table read in parts
    monkeypatch.setattr(backend, "PARTS", 3)
    sent = _spy(monkeypatch)
    for frame in (airun_nb.steps, airun_nb.runs):
        pg, duck = frame(db=pg_url), frame(db=file)
        assert len(pg) == (120 if frame is airun_nb.steps else 3)
        pd.testing.assert_frame_equal(pd.DataFrame(pg), pd.DataFrame(duck))
    read = [sql for sql in sent if "FROM steps" in sql]
    assert any("ctid >=" in sql and backend._PACKED in sql for sql in read), read
    assert any("comp_attempts::text" in sql and "to_char(comp_finished_at" in sql for sql in read)
    failed = airun_nb.steps(db=pg_url, status="failed")
    assert list(failed["error"].unique()) == ['ValueError: "bad", {x}\nline 2']
    with open_store(pg_url).session() as con:  # the same rows as one read of the whole table
        whole = con.execute("SELECT count(*), count(reason), count(comp_error) FROM steps")
        assert whole.fetchall() == [(120, 3, 1)]


def test_a_frame_of_one_run_fetches_that_run_s_rows_alone(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """steps(run), attempts(run), events(run), approvals(run) and audit(run) read only that
    run's rows from the server (a quote in its id included), and equal the file's frames."""
    recs = _records()
    odd = [dict(r, run_id="r-'1") for r in recs if r["run_id"] == "r-1"]
    file = tmp_path / "same.duckdb"
    for db in (pg_url, str(file)):
        store: Any = open_store(db)
        transitions.commit(store, recs + odd)
        store.release()
    sent = _spy(monkeypatch)
    frames = (airun_nb.steps, airun_nb.attempts, airun_nb.events, airun_nb.approvals)
    for run in ("r-'1", "r-2"):
        for frame in (*frames, airun_nb.audit):
            pg, duck = frame(run, db=pg_url), frame(run, db=file)
            pd.testing.assert_frame_equal(pd.DataFrame(pg), pd.DataFrame(duck))
        assert len(airun_nb.steps(run, db=pg_url)) == 40
    assert sent and all(" WHERE run_id = 'r-" in sql for sql in sent), sent


def test_filters_on_a_frame_s_own_columns_fetch_the_matching_rows_alone(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status=, since= and until= of steps(), attempts() and approvals(pending=True) are kept
    by the server's read of their table (`steps` in parts, its sparse columns packed): the
    frames equal the file's."""
    file = tmp_path / "same.duckdb"
    for db in (pg_url, str(file)):
        store: Any = open_store(db)
        transitions.commit(store, _records())
        store.release()
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("ANALYZE")
    monkeypatch.setattr(backend, "SPLIT_BYTES", 1)
    sent = _spy(monkeypatch)
    since = pd.Timestamp(int(T0 + 1) * 1_000_000 + 200_000, unit="us")
    asks: list[dict[str, Any]] = [
        {"status": "failed"},
        {"status": ["failed", "completed"], "since": since},
        {"until": since.tz_localize("UTC")},
        {"since": since, "until": since + pd.Timedelta(seconds=1), "status": "completed"},
    ]
    for ask in asks:
        for frame in (airun_nb.steps, airun_nb.attempts):
            pg, duck = frame(db=pg_url, **ask), frame(db=file, **ask)
            pd.testing.assert_frame_equal(pd.DataFrame(pg), pd.DataFrame(duck))
    assert len(airun_nb.steps(db=pg_url, status="failed")) == 3
    pg, duck = (
        airun_nb.approvals(db=pg_url, pending=True),
        airun_nb.approvals(db=file, pending=True),
    )
    pd.testing.assert_frame_equal(pd.DataFrame(pg), pd.DataFrame(duck))
    read = [sql for sql in sent if "FROM steps" in sql]
    assert any("ctid" in sql and "status IN ('failed')" in sql for sql in read), read
    assert any("started_at >= '" in sql and "started_at < '" in sql for sql in read), read
