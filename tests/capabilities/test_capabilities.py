"""Capabilities: each built-in capability's effect and its automatic undo, the durable undo
record, registered user capabilities, the seed aliases, and the workspace sandbox.

The pattern of most tests: snapshot the world (files of the workspace, rows of a database,
requests a local server received), run a workflow whose capability steps change it and whose
last step looks at the changed world and then fails, and check that the run rolled back and
the world is exactly as before. Everything is real: a workspace folder in ``tmp_path`` (the
working directory), DuckDB and SQLite files, an HTTP server on 127.0.0.1, shell commands, a
DuckDB store outside the workspace. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest

import airun_nb
from airun_nb import Workflow
from airun_nb.governance import policy as policy_mod
from support import AIRUN, ENV_VARS


# -- fixtures and helpers ------------------------------------------------------------------------
@dataclass
class Env:
    root: Path  # the workspace (and working directory)
    store: Path  # the DuckDB store, outside the workspace
    tmp: Path

    @property
    def undo_root(self) -> Path:
        return self.store.with_name(self.store.name + ".undo")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    root = tmp_path / "ws"
    root.mkdir()
    store = tmp_path / "store" / "caps.duckdb"
    store.parent.mkdir()
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_DB", str(store))
    monkeypatch.chdir(root)
    policy_mod.configure(None)
    yield Env(root, store, tmp_path)
    policy_mod.configure(None)


def tree(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: files by content, folders as ``<dir>``, links by target."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("<link>", os.readlink(p))
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = p.read_bytes()
    return out


class Looker:
    """The last step of a saga: it records what the world looks like, then fails."""

    def __init__(self, look: Callable[[], Any]) -> None:
        self.look = look
        self.seen: list[Any] = []

    def ns(self, **extra: Any) -> dict[str, Any]:
        seen, look = self.seen, self.look

        def look_then_fail() -> None:
            seen.append(look())
            raise RuntimeError("a later step failed")

        return {"look_then_fail": look_then_fail, **extra}


def saga(name: str, steps: str, needs: list[str]) -> Workflow:
    """A workflow: ``steps`` (YAML list items), then a step needing ``needs`` that fails."""
    text = f"name: {name}\nsteps:\n{steps.rstrip()}\n"
    text += f"  - id: boom\n    needs: {json.dumps(needs)}\n    call: look_then_fail\n"
    return Workflow.from_yaml(text)


def step_rows(run_id: str) -> dict[str, dict[str, Any]]:
    df = airun_nb.steps(run_id)
    return {r["step_id"]: r for r in df.to_dict("records")}


def comp(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["compensation"])


def assert_undone(run_id: str, step_ids: list[str]) -> None:
    rows = step_rows(run_id)
    for sid in step_ids:
        assert rows[sid]["status"] == "completed", rows[sid]
        assert rows[sid]["comp_status"] == "done", rows[sid]
        assert rows[sid]["comp_attempts"] == 1, rows[sid]


# -- fs.write ------------------------------------------------------------------------------------
def test_fs_write_over_an_existing_file_puts_the_old_content_back(env: Env) -> None:
    target = env.root / "notes.txt"
    target.write_bytes(b"old content\nsecond line\n")
    before = tree(env.root)
    looker = Looker(lambda: target.read_text())
    wf = saga(
        "write_over",
        """
  - id: write
    capability: fs.write
    with: {path: notes.txt, content: "new content"}
""",
        ["write"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)

    assert looker.seen == ["new content"]  # the effect happened
    assert r.status == "rolled_back"
    assert tree(env.root) == before
    assert_undone(r.run_id, ["write"])


def test_fs_write_undo_is_recorded_before_the_effect_and_kept_by_the_store(env: Env) -> None:
    (env.root / "a.txt").write_text("v1")
    wf = Workflow.from_yaml(
        """
name: write_record
on_failure: stop
steps:
  - id: write
    capability: fs.write
    with: {path: a.txt, content: v2}
  - id: boom
    needs: [write]
    python: |
      raise RuntimeError("stop here")
"""
    )
    r = wf.run(raise_on_failure=False)
    assert r.status == "failed"
    assert (env.root / "a.txt").read_text() == "v2"  # on_failure: stop leaves it
    rec = comp(step_rows(r.run_id)["write"])
    assert rec["undo"] == "fs.write"
    assert rec["prepared_attempt"] == 1
    assert rec["with"]["path"] == str(env.root / "a.txt")
    backup = Path(rec["with"]["backup"])
    assert backup.read_text() == "v1"
    # undo data lives in <store>.undo/<run>/<step>/
    assert env.undo_root / r.run_id / "write" in backup.parents
    # A new engine, from the store alone, undoes it (what a restarted kernel does).
    airun_nb.rollback(r.run_id)
    assert (env.root / "a.txt").read_text() == "v1"
    assert airun_nb.runs()["status"].tolist() == ["rolled_back"]


def test_fs_write_to_a_new_file_in_new_folders_removes_file_and_folders(env: Env) -> None:
    (env.root / "existing").mkdir()
    (env.root / "existing" / "keep.txt").write_text("keep")
    before = tree(env.root)
    looker = Looker(lambda: tree(env.root))
    wf = saga(
        "write_new",
        """
  - id: deep
    capability: fs.write
    with: {path: reports/2026/q3/summary.txt, content: "total: 42"}
  - id: beside
    capability: fs.write
    with: {path: existing/new/inner.json, content: {a: 1}}
""",
        ["deep", "beside"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)

    during = looker.seen[0]
    assert during["reports/2026/q3/summary.txt"] == b"total: 42"
    assert json.loads(during["existing/new/inner.json"]) == {"a": 1}
    assert r.status == "rolled_back"
    assert tree(env.root) == before  # file and every folder it made are gone; existing stays
    assert_undone(r.run_id, ["deep", "beside"])


def test_fs_write_append_is_undone_too(env: Env) -> None:
    (env.root / "log.txt").write_text("line 1\n")
    before = tree(env.root)
    looker = Looker(lambda: (env.root / "log.txt").read_text())
    wf = saga(
        "append",
        """
  - id: add
    capability: fs.write
    with: {path: log.txt, content: "line 2\\n", append: true}
""",
        ["add"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)
    assert looker.seen == ["line 1\nline 2\n"]
    assert r.status == "rolled_back"
    assert tree(env.root) == before


def test_seed_alias_io_fs_write_file_works_and_is_undone(env: Env) -> None:
    (env.root / "out.txt").write_text("before")
    before = tree(env.root)
    seen: list[str] = []

    def check_then_fail() -> None:
        seen.append((env.root / "out.txt").read_text())
        raise RuntimeError("seed step failed")

    wf = Workflow.from_yaml(
        """
name: seed_write
steps:
  - name: write_it
    capability_name: io.fs.write_file
    inputs: {path: out.txt, content: after}
  - name: fail_it
    depends_on: [write_it]
    call: check_then_fail
    max_retries: 1  # the seed dialect's default is three attempts
"""
    )
    r = wf.run(namespace={"check_then_fail": check_then_fail}, raise_on_failure=False)
    assert seen == ["after"]
    assert r.status == "rolled_back"
    assert tree(env.root) == before
    row = step_rows(r.run_id)["write_it"]
    assert comp(row)["undo"] == "fs.write"  # stored under the canonical name
    assert row["comp_status"] == "done"
    audit = airun_nb.audit(r.run_id)
    executed = audit[(audit["kind"] == "capability") & (audit["step_id"] == "write_it")]
    assert executed["capability"].tolist() == ["fs.write"]


def test_modern_dialect_accepts_the_seed_capability_name(env: Env) -> None:
    wf = Workflow.from_yaml(
        """
name: alias_modern
steps:
  - id: w
    capability: io.fs.write_file
    with: {path: a/b.txt, content: hi}
"""
    )
    r = wf.run()
    assert r.status == "completed"
    assert (env.root / "a" / "b.txt").read_text() == "hi"
    airun_nb.rollback(r.run_id)
    assert tree(env.root) == {}


# -- fs.copy, fs.move, fs.mkdir, fs.delete, fs.read ---------------------------------------------------
def test_fs_copy_new_destination_and_over_an_existing_one(env: Env) -> None:
    (env.root / "src.txt").write_text("source")
    (env.root / "dst_old.txt").write_text("old destination")
    (env.root / "folder").mkdir()
    (env.root / "folder" / "f1.txt").write_text("f1")
    before = tree(env.root)
    looker = Looker(lambda: tree(env.root))
    wf = saga(
        "copies",
        """
  - id: to_new
    capability: fs.copy
    with: {source: src.txt, destination: copies/x/src_copy.txt}
  - id: over
    capability: fs.copy
    with: {source: src.txt, destination: dst_old.txt}
  - id: dir
    capability: fs.copy
    with: {source: folder, destination: folder2}
""",
        ["to_new", "over", "dir"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)

    during = looker.seen[0]
    assert during["copies/x/src_copy.txt"] == b"source"
    assert during["dst_old.txt"] == b"source"
    assert during["folder2/f1.txt"] == b"f1"
    assert r.status == "rolled_back"
    assert tree(env.root) == before
    assert_undone(r.run_id, ["to_new", "over", "dir"])


def test_fs_move_is_moved_back_and_an_overwritten_destination_restored(env: Env) -> None:
    (env.root / "a.txt").write_text("A")
    (env.root / "b.txt").write_text("B")
    (env.root / "c.txt").write_text("C (will be overwritten)")
    before = tree(env.root)
    looker = Looker(lambda: tree(env.root))
    wf = saga(
        "moves",
        """
  - id: away
    capability: fs.move
    with: {source: a.txt, destination: archive/2026/a.txt}
  - id: over
    capability: fs.move
    with: {source: b.txt, destination: c.txt}
""",
        ["away", "over"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)

    during = looker.seen[0]
    assert "a.txt" not in during and during["archive/2026/a.txt"] == b"A"
    assert "b.txt" not in during and during["c.txt"] == b"B"
    assert r.status == "rolled_back"
    assert tree(env.root) == before
    assert_undone(r.run_id, ["away", "over"])


def test_fs_mkdir_removes_only_what_it_made(env: Env) -> None:
    (env.root / "there").mkdir()
    (env.root / "there" / "kept.txt").write_text("kept")
    before = tree(env.root)
    looker = Looker(lambda: tree(env.root))
    wf = saga(
        "mkdirs",
        """
  - id: deep
    capability: fs.mkdir
    with: {path: x/y/z}
  - id: existing
    capability: fs.mkdir
    with: {path: there}
  - id: under
    capability: fs.mkdir
    with: {path: there/sub}
""",
        ["deep", "existing", "under"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)

    during = looker.seen[0]
    assert during["x/y/z"] == "<dir>" and during["there/sub"] == "<dir>"
    assert r.status == "rolled_back"
    assert tree(env.root) == before  # x/ and there/sub are gone, there/ and its file stay


def test_fs_delete_moves_to_the_trash_and_undo_restores(env: Env) -> None:
    (env.root / "data.csv").write_text("id,v\n1,2\n")
    (env.root / "olddir").mkdir()
    (env.root / "olddir" / "inner.txt").write_text("inner")
    before = tree(env.root)
    looker = Looker(lambda: tree(env.root))
    wf = saga(
        "deletes",
        """
  - id: rm_file
    capability: fs.delete
    with: {path: data.csv}
  - id: rm_dir
    needs: [rm_file]
    capability: fs.delete
    with: {path: olddir}
""",
        ["rm_dir"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)

    during = looker.seen[0]
    assert "data.csv" not in during and "olddir" not in during
    rows = step_rows(r.run_id)
    trash = Path(comp(rows["rm_file"])["with"]["trash"])
    assert env.undo_root / r.run_id / "rm_file" in trash.parents
    assert r.status == "rolled_back"
    assert tree(env.root) == before
    assert_undone(r.run_id, ["rm_file", "rm_dir"])
    assert not trash.exists()  # it went back, not copied


def test_fs_delete_trash_survives_until_a_later_rollback(env: Env) -> None:
    (env.root / "precious.txt").write_text("precious")
    wf = Workflow.from_yaml(
        """
name: delete_then_undo
steps:
  - id: rm
    capability: fs.delete
    with: {path: precious.txt}
"""
    )
    r = wf.run()
    assert r.status == "completed"
    assert not (env.root / "precious.txt").exists()
    trash = Path(comp(step_rows(r.run_id)["rm"])["with"]["trash"])
    assert trash.read_text() == "precious"
    airun_nb.rollback(r.run_id)  # undo a finished run on demand
    assert (env.root / "precious.txt").read_text() == "precious"


def test_fs_delete_of_a_missing_file_fails_unless_missing_ok(env: Env) -> None:
    wf = Workflow.from_yaml(
        """
name: delete_missing
on_failure: stop
steps:
  - id: rm
    capability: fs.delete
    with: {path: nothing.txt}
"""
    )
    r = wf.run(raise_on_failure=False)
    assert r.status == "failed"
    assert "does not exist" in step_rows(r.run_id)["rm"]["error"]
    ok = Workflow.from_yaml(
        """
name: delete_missing_ok
steps:
  - id: rm
    capability: fs.delete
    with: {path: nothing.txt, missing_ok: true}
"""
    ).run()
    assert ok.status == "completed"
    assert ok.outputs["rm"] == {"path": "nothing.txt", "deleted": False}


def test_fs_read_returns_the_content_and_has_nothing_to_undo(env: Env) -> None:
    (env.root / "in.txt").write_text("hello")
    looker = Looker(lambda: None)
    wf = saga(
        "reads",
        """
  - id: read
    capability: fs.read
    with: {path: in.txt}
""",
        ["read"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)
    assert r.status == "rolled_back"
    row = step_rows(r.run_id)["read"]
    assert r.outputs["read"] == "hello"
    assert row["comp_status"] == "none"
    assert (env.root / "in.txt").read_text() == "hello"


# -- sql.exec --------------------------------------------------------------------------------------
def _connect(path: Path) -> Any:
    return sqlite3.connect(path) if path.suffix == ".sqlite" else duckdb.connect(str(path))


def db_state(path: Path) -> dict[str, Any]:
    """Every table of a DuckDB or SQLite file: its DDL and its rows, ordered."""
    con = _connect(path)
    try:
        if path.suffix == ".sqlite":
            tables = con.execute(
                "SELECT name, sql FROM sqlite_master WHERE type='table' ORDER BY name"
            ).fetchall()
        else:
            tables = con.execute(
                "SELECT table_name, sql FROM duckdb_tables() ORDER BY table_name"
            ).fetchall()
        return {
            name: (ddl, con.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall())
            for name, ddl in tables
        }
    finally:
        con.close()


def make_db(path: Path, rows: int = 3) -> None:
    con = _connect(path)
    if path.suffix == ".sqlite":
        con.execute(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance REAL)"
        )
        con.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?)",
            [(i, f"owner{i}", i * 10.5) for i in range(1, rows + 1)],
        )
        con.execute("CREATE TABLE untouched (k TEXT)")
        con.execute("INSERT INTO untouched VALUES ('same')")
        con.commit()
    else:
        con.execute(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner VARCHAR NOT NULL, "
            "balance DOUBLE, opened DATE, seen TIMESTAMP)"
        )
        con.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
            [
                (
                    i,
                    f"owner{i}",
                    i * 10.5,
                    f"2024-01-{i % 28 + 1:02d}",
                    f"2024-02-{i % 28 + 1:02d} 10:11:{i % 60:02d}",
                )
                for i in range(1, rows + 1)
            ],
        )
        con.execute("UPDATE accounts SET balance = NULL, seen = NULL WHERE id = 2")
        con.execute("CREATE TABLE untouched (k VARCHAR)")
        con.execute("INSERT INTO untouched VALUES ('same')")
    con.close()


@pytest.mark.parametrize("suffix", [".duckdb", ".sqlite"])
def test_sql_exec_update_insert_create_are_undone(env: Env, suffix: str) -> None:
    path = env.root / f"bank{suffix}"
    make_db(path)
    before = db_state(path)
    looker = Looker(lambda: db_state(path))
    wf = saga(
        f"sql_{suffix[1:]}",
        f"""
  - id: upd
    capability: sql.exec
    with: {{database: bank{suffix}, sql: "UPDATE accounts SET balance = balance * 2 WHERE id = 1"}}
  - id: ins
    needs: [upd]
    capability: sql.exec
    with: {{database: bank{suffix}, sql: "INSERT INTO accounts (id, owner, balance) VALUES (9, 'new', 1.0)"}}
  - id: del
    needs: [ins]
    capability: sql.exec
    with: {{database: bank{suffix}, sql: "DELETE FROM accounts WHERE id = 3"}}
  - id: mk
    needs: [del]
    capability: sql.exec
    with: {{database: bank{suffix}, sql: "CREATE TABLE audit_copy AS SELECT * FROM accounts"}}
""",
        ["mk"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)

    during = looker.seen[0]
    assert "audit_copy" in during
    ids = [row[0] for row in during["accounts"][1]]
    assert ids == [1, 2, 9]
    assert during["accounts"][1][0][2] == pytest.approx(21.0)
    assert r.status == "rolled_back"
    after = db_state(path)
    assert after == before  # same tables, same DDL, same rows and types
    assert "audit_copy" not in after
    assert_undone(r.run_id, ["upd", "ins", "del", "mk"])
    rec = comp(step_rows(r.run_id)["upd"])
    assert rec["undo"] == "sql.exec" and rec["prepared_attempt"] == 1
    snap = Path(rec["with"]["snapshots"]["accounts"])
    assert env.undo_root / r.run_id / "upd" in snap.parents


@pytest.mark.parametrize("suffix", [".duckdb", ".sqlite"])
def test_sql_exec_undo_keeps_the_tables_indexes(env: Env, suffix: str) -> None:
    path = env.root / f"idx{suffix}"
    make_db(path)
    con = _connect(path)
    con.execute("CREATE INDEX accounts_owner ON accounts (owner)")
    if suffix == ".sqlite":
        con.commit()
    con.close()

    def indexes() -> list[str]:
        c = _connect(path)
        try:
            if suffix == ".sqlite":
                q = "SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
            else:
                q = "SELECT index_name FROM duckdb_indexes()"
            return sorted(r[0] for r in c.execute(q).fetchall())
        finally:
            c.close()

    assert indexes() == ["accounts_owner"]
    looker = Looker(lambda: None)
    wf = saga(
        f"idx_{suffix[1:]}",
        f"""
  - id: upd
    capability: sql.exec
    with: {{database: idx{suffix}, sql: "UPDATE accounts SET owner = 'x' WHERE id = 1"}}
""",
        ["upd"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)
    assert r.status == "rolled_back"
    assert indexes() == ["accounts_owner"]  # the world is as before: the index too


@pytest.mark.parametrize("suffix", [".duckdb", ".sqlite"])
def test_sql_exec_above_the_snapshot_limit_is_refused_naming_compensate(
    env: Env, suffix: str
) -> None:
    path = env.root / f"big{suffix}"
    make_db(path, rows=50)
    before = db_state(path)
    wf = Workflow.from_yaml(
        f"""
name: too_big
steps:
  - id: upd
    capability: sql.exec
    with: {{database: big{suffix}, sql: "UPDATE accounts SET balance = 0", snapshot_max_rows: 10}}
"""
    )
    r = wf.run(raise_on_failure=False)
    row = step_rows(r.run_id)["upd"]
    assert row["status"] == "failed"
    assert "compensate" in row["error"] and "10" in row["error"] and "50" in row["error"]
    assert db_state(path) == before  # refused before anything happened
    assert pd_isna(row["compensation"])


def test_sql_exec_snapshot_limit_from_the_environment(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AIRUN_SNAPSHOT_MAX_ROWS`` set in the running process (as a notebook cell does)."""
    path = env.root / "big.sqlite"
    make_db(path, rows=50)
    before = db_state(path)
    monkeypatch.setenv("AIRUN_SNAPSHOT_MAX_ROWS", "10")
    wf = Workflow.from_yaml(
        """
name: too_big_env
steps:
  - id: upd
    capability: sql.exec
    with: {database: big.sqlite, sql: "UPDATE accounts SET balance = 0"}
"""
    )
    r = wf.run(raise_on_failure=False)
    row = step_rows(r.run_id)["upd"]
    assert row["status"] == "failed", "AIRUN_SNAPSHOT_MAX_ROWS=10 was not applied"
    assert "compensate" in row["error"]
    assert db_state(path) == before


def test_sql_exec_above_the_limit_runs_when_the_step_declares_compensate(env: Env) -> None:
    path = env.root / "big.sqlite"
    make_db(path, rows=50)
    before = db_state(path)
    restored: list[str] = []

    def restore_balances(database: str) -> None:
        con = sqlite3.connect(database)
        con.execute("UPDATE accounts SET balance = id * 10.5")
        con.commit()
        con.close()
        restored.append(database)

    looker = Looker(lambda: db_state(path)["accounts"][1][0][2])
    wf = saga(
        "big_with_compensate",
        """
  - id: upd
    capability: sql.exec
    with: {database: big.sqlite, sql: "UPDATE accounts SET balance = 0", snapshot_max_rows: 10}
    compensate:
      call: restore_balances
      with: {database: big.sqlite}
""",
        ["upd"],
    )
    r = wf.run(namespace=looker.ns(restore_balances=restore_balances), raise_on_failure=False)
    rows = step_rows(r.run_id)
    assert rows["upd"]["status"] == "completed", rows["upd"]["error"]
    assert looker.seen == [0.0]
    assert r.status == "rolled_back"
    assert restored == ["big.sqlite"]  # the declared compensation did the undo
    assert db_state(path) == before


def pd_isna(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


# -- http.request ------------------------------------------------------------------------------
class Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.server.received.append(  # type: ignore[attr-defined]
            {"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers)}
        )
        code = int(self.path.split("/status/")[1].split("?")[0]) if "/status/" in self.path else 201
        payload = json.dumps({"ok": code < 400, "n": len(self.server.received)}).encode()  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.received = []  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


def base_url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_http_request_posts_and_has_no_undo(env: Env, server: ThreadingHTTPServer) -> None:
    looker = Looker(lambda: len(server.received))  # type: ignore[attr-defined]
    wf = saga(
        "http_post",
        """
  - id: post
    capability: http.request
    with: {url: "{{ base }}/orders", method: POST, json: {item: widget, qty: 3}}
""",
        ["post"],
    )
    r = wf.run(namespace=looker.ns(base=base_url(server)), raise_on_failure=False)
    assert looker.seen == [1]
    assert r.status == "rolled_back"
    got = server.received  # type: ignore[attr-defined]
    assert len(got) == 1  # the rollback sent nothing: http.request has no undo
    assert got[0]["method"] == "POST" and got[0]["path"] == "/orders"
    assert json.loads(got[0]["body"]) == {"item": "widget", "qty": 3}
    assert got[0]["headers"]["Content-Type"] == "application/json"
    row = step_rows(r.run_id)["post"]
    out = r.outputs["post"]
    assert out["status"] == 201 and out["json"] == {"ok": True, "n": 1}
    assert pd_isna(row["compensation"])
    assert row["comp_status"] == "none"


@pytest.mark.parametrize("status", [400, 404, 500])
def test_http_request_status_400_and_above_fails(
    env: Env, server: ThreadingHTTPServer, status: int
) -> None:
    wf = Workflow.from_yaml(
        f"""
name: http_fail_{status}
steps:
  - id: call
    capability: http.request
    with: {{url: "{{{{ base }}}}/status/{status}", method: PUT, body: "x"}}
"""
    )
    r = wf.run(namespace={"base": base_url(server)}, raise_on_failure=False)
    row = step_rows(r.run_id)["call"]
    assert row["status"] == "failed"
    assert f"answered {status}" in row["error"]
    assert len(server.received) == 1  # type: ignore[attr-defined]


def test_http_request_allow_errors_returns_the_status(
    env: Env, server: ThreadingHTTPServer
) -> None:
    wf = Workflow.from_yaml(
        """
name: http_allow
steps:
  - id: call
    capability: http.request
    with: {url: "{{ base }}/status/503", allow_errors: true}
"""
    )
    r = wf.run(namespace={"base": base_url(server)})
    assert r.status == "completed"
    assert r.outputs["call"]["status"] == 503


def test_http_request_compensate_sends_the_undo_request(
    env: Env, server: ThreadingHTTPServer
) -> None:
    looker = Looker(lambda: None)
    wf = saga(
        "http_comp",
        """
  - id: post
    capability: http.request
    with: {url: "{{ base }}/orders", method: POST, json: {item: widget}}
    compensate:
      capability: http.request
      with: {url: "{{ base }}/orders/{{ steps.post.output.json.n }}", method: DELETE}
""",
        ["post"],
    )
    r = wf.run(namespace=looker.ns(base=base_url(server)), raise_on_failure=False)
    assert r.status == "rolled_back"
    calls = [(c["method"], c["path"]) for c in server.received]  # type: ignore[attr-defined]
    assert calls == [("POST", "/orders"), ("DELETE", "/orders/1")]
    assert step_rows(r.run_id)["post"]["comp_status"] == "done"


# -- shell.run -----------------------------------------------------------------------------------
def test_shell_run_captures_output_and_a_non_zero_exit_fails(env: Env) -> None:
    wf = Workflow.from_yaml(
        """
name: shells
on_failure: stop
steps:
  - id: ok
    capability: shell.run
    with: {command: "echo hello; echo made > made.txt"}
  - id: bad
    needs: [ok]
    capability: shell.run
    with: {command: "echo about to fail >&2; exit 3"}
"""
    )
    r = wf.run(raise_on_failure=False)
    rows = step_rows(r.run_id)
    out = r.outputs["ok"]
    assert out["returncode"] == 0 and out["stdout"] == "hello\n"
    assert (env.root / "made.txt").read_text() == "made\n"  # runs in the workspace
    assert rows["bad"]["status"] == "failed"
    assert "exited with 3" in rows["bad"]["error"]
    assert "about to fail" in rows["bad"]["error"]
    assert r.status == "failed"


def test_shell_run_has_no_undo_unless_the_step_gives_compensate(env: Env) -> None:
    looker = Looker(lambda: sorted(p.name for p in env.root.iterdir()))
    wf = saga(
        "shell_undo",
        """
  - id: plain
    capability: shell.run
    with: {command: "echo a > plain.txt"}
  - id: undone
    capability: shell.run
    with: {command: "echo b > undone.txt"}
    compensate:
      capability: shell.run
      with: {command: "rm undone.txt"}
""",
        ["plain", "undone"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)
    assert looker.seen == [["plain.txt", "undone.txt"]]
    assert r.status == "rolled_back"
    rows = step_rows(r.run_id)
    assert rows["plain"]["comp_status"] == "none"
    assert rows["undone"]["comp_status"] == "done"
    assert sorted(p.name for p in env.root.iterdir()) == ["plain.txt"]


# -- user capabilities --------------------------------------------------------------------------
def test_a_registered_capability_with_undo_is_undone_with_its_result(env: Env) -> None:
    ledger: dict[str, dict[str, Any]] = {}
    undo_calls: list[dict[str, Any]] = []

    def book(account: str, amount: float) -> dict[str, Any]:
        entry = f"e{len(ledger) + 1}"
        ledger[entry] = {"account": account, "amount": amount}
        return {"entry": entry}

    def unbook(account: str, amount: float, result: dict[str, Any]) -> None:
        undo_calls.append({"account": account, "amount": amount, "result": result})
        del ledger[result["entry"]]

    cap = airun_nb.register_capability("test.ledger.book", book, risk="high", undo=unbook)
    assert cap.reversible and cap.risk == "high"

    looker = Looker(lambda: dict(ledger))
    wf = saga(
        "user_cap",
        """
  - id: b1
    capability: test.ledger.book
    with: {account: acme, amount: 12.5}
  - id: b2
    needs: [b1]
    capability: test.ledger.book
    with: {account: acme, amount: 7}
""",
        ["b2"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)
    assert looker.seen == [
        {"e1": {"account": "acme", "amount": 12.5}, "e2": {"account": "acme", "amount": 7}}
    ]
    assert r.status == "rolled_back"
    assert ledger == {}
    assert undo_calls == [  # newest first, each with its own arguments and result
        {"account": "acme", "amount": 7, "result": {"entry": "e2"}},
        {"account": "acme", "amount": 12.5, "result": {"entry": "e1"}},
    ]
    assert_undone(r.run_id, ["b1", "b2"])
    audit = airun_nb.audit(r.run_id)
    risks = audit[audit["kind"] == "capability"]["risk"].tolist()
    assert risks == ["high", "high"]


def test_a_registered_capability_is_undone_after_a_restart(env: Env) -> None:
    """The undo is stored by name + arguments + result: a new engine from the store does it."""
    ledger: dict[str, Any] = {}

    def put(key: str, value: str) -> str:
        ledger[key] = value
        return key

    def unput(key: str, value: str, result: str) -> None:
        ledger.pop(result)

    airun_nb.register_capability("test.kv.put", put, undo=unput)
    wf = Workflow.from_yaml(
        """
name: user_cap_later
steps:
  - id: put
    capability: test.kv.put
    with: {key: k1, value: v1}
"""
    )
    r = wf.run()
    assert ledger == {"k1": "v1"}
    rec = comp(step_rows(r.run_id)["put"])
    assert rec["undo"] == "test.kv.put"
    assert rec["with"]["args"] == {"key": "k1", "value": "v1"}
    assert rec["with"]["result"] == "k1"
    airun_nb.rollback(r.run_id)
    assert ledger == {}


def test_a_registered_capability_without_undo_has_comp_status_none(env: Env) -> None:
    sent: list[str] = []
    airun_nb.register_capability("test.notify", lambda text: sent.append(text) or len(sent))
    looker = Looker(lambda: list(sent))
    wf = saga(
        "user_cap_noundo",
        """
  - id: tell
    capability: test.notify
    with: {text: hello}
""",
        ["tell"],
    )
    r = wf.run(namespace=looker.ns(), raise_on_failure=False)
    assert r.status == "rolled_back"
    assert sent == ["hello"]
    assert step_rows(r.run_id)["tell"]["comp_status"] == "none"


def test_an_unknown_capability_is_a_spec_error_before_anything_runs(env: Env) -> None:
    wf = Workflow.from_yaml(
        """
name: unknown_cap
steps:
  - id: x
    capability: fs.writ
    with: {path: a.txt, content: x}
"""
    )
    with pytest.raises(airun_nb.SpecError, match=r"unknown capability 'fs\.writ'"):
        wf.run()
    assert tree(env.root) == {}


def test_cli_rollback_in_another_process_restores_files_and_tables(env: Env) -> None:
    (env.root / "keep.txt").write_text("original")
    (env.root / "gone.txt").write_text("to delete")
    make_db(env.root / "db.sqlite")

    def files() -> dict[str, Any]:
        return {k: v for k, v in tree(env.root).items() if k != "db.sqlite"}

    before_files = files()
    before_db = db_state(env.root / "db.sqlite")
    wf = Workflow.from_yaml(
        """
name: cli_undo
steps:
  - id: w
    capability: fs.write
    with: {path: keep.txt, content: changed}
  - id: d
    needs: [w]
    capability: fs.delete
    with: {path: gone.txt}
  - id: s
    needs: [d]
    capability: sql.exec
    with: {database: db.sqlite, sql: "UPDATE accounts SET owner = 'mallory'"}
"""
    )
    r = wf.run()
    assert r.status == "completed"
    assert files() != before_files
    assert db_state(env.root / "db.sqlite") != before_db
    proc = subprocess.run(
        [*AIRUN, "rollback", r.run_id, "--db", str(env.store)],
        cwd=env.tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert files() == before_files
    assert db_state(env.root / "db.sqlite") == before_db


# -- the workspace sandbox ----------------------------------------------------------------------
@pytest.fixture
def sandbox(env: Env) -> Env:
    """Outside the workspace: a victim file and folder; inside: links pointing out."""
    (env.tmp / "victim.txt").write_text("victim")
    outside = env.tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (env.tmp / "victim.sqlite").write_bytes(b"")
    con = sqlite3.connect(env.tmp / "victim.sqlite")
    con.execute("CREATE TABLE t (v TEXT)")
    con.execute("INSERT INTO t VALUES ('victim')")
    con.commit()
    con.close()
    (env.root / "inside.txt").write_text("inside")
    (env.root / "link_dir").symlink_to(outside, target_is_directory=True)
    (env.root / "link_file.txt").symlink_to(env.tmp / "victim.txt")
    (env.root / "sub").mkdir()
    return env


def world(env: Env) -> dict[str, Any]:
    """Everything under tmp_path except the store folder."""
    return {k: v for k, v in tree(env.tmp).items() if not k.startswith("store")}


SANDBOX_CASES = [
    ("fs.write", {"path": "../victim.txt", "content": "pwned"}),
    ("fs.write", {"path": "../new_outside.txt", "content": "pwned"}),
    ("fs.write", {"path": "sub/../../victim.txt", "content": "pwned"}),
    ("fs.write", {"path": "ABS/victim.txt", "content": "pwned"}),
    ("fs.write", {"path": "ABS/outside/new.txt", "content": "pwned"}),
    ("fs.write", {"path": "link_dir/secret.txt", "content": "pwned"}),
    ("fs.write", {"path": "link_dir/new.txt", "content": "pwned"}),
    ("fs.write", {"path": "link_file.txt", "content": "pwned"}),
    ("fs.read", {"path": "link_dir/secret.txt"}),
    ("fs.read", {"path": "../victim.txt"}),
    ("fs.copy", {"source": "../victim.txt", "destination": "stolen.txt"}),
    ("fs.copy", {"source": "link_dir", "destination": "stolen"}),
    ("fs.copy", {"source": "inside.txt", "destination": "../victim.txt"}),
    ("fs.copy", {"source": "inside.txt", "destination": "link_dir/planted.txt"}),
    ("fs.move", {"source": "inside.txt", "destination": "ABS/moved.txt"}),
    ("fs.move", {"source": "link_file.txt", "destination": "here.txt"}),
    ("fs.mkdir", {"path": "../made_outside"}),
    ("fs.mkdir", {"path": "link_dir/made"}),
    ("fs.delete", {"path": "../victim.txt"}),
    ("fs.delete", {"path": "link_dir/secret.txt"}),
    ("fs.delete", {"path": "link_file.txt"}),
    ("fs.delete", {"path": "link_dir"}),
    ("sql.exec", {"database": "../victim.sqlite", "sql": "DELETE FROM t"}),
    ("shell.run", {"command": "echo pwned > pwned.txt", "cwd": ".."}),
    ("shell.run", {"command": "echo pwned > pwned.txt", "cwd": "link_dir"}),
]


@pytest.mark.parametrize(
    ("capability", "args"),
    SANDBOX_CASES,
    ids=[f"{c}-{'-'.join(str(v) for v in a.values())[:40]}" for c, a in SANDBOX_CASES],
)
def test_paths_outside_the_workspace_are_refused_and_nothing_happens(
    sandbox: Env, capability: str, args: dict[str, str]
) -> None:
    env = sandbox
    args = {k: v.replace("ABS", str(env.tmp)) if k != "sql" else v for k, v in args.items()}
    before = world(env)
    wf = Workflow.from_dict(
        {
            "name": "escape",
            "steps": [{"id": "escape", "capability": capability, "with": args}],
        }
    )
    r = wf.run(raise_on_failure=False)
    row = step_rows(r.run_id)["escape"]
    assert row["status"] == "failed"
    assert "outside the workspace" in row["error"] and "refused" in row["error"], row["error"]
    assert world(env) == before  # target untouched, nothing created anywhere
    assert pd_isna(row["compensation"])  # refused before any undo data was taken
    assert not (env.undo_root / r.run_id / "escape").exists()


def test_a_symlink_is_named_as_such_when_refused(sandbox: Env) -> None:
    wf = Workflow.from_yaml(
        """
name: symlink_msg
steps:
  - id: w
    capability: fs.write
    with: {path: link_dir/x.txt, content: x}
"""
    )
    r = wf.run(raise_on_failure=False)
    assert "symlink" in step_rows(r.run_id)["w"]["error"]


def test_a_symlink_pointing_inside_the_workspace_is_fine(env: Env) -> None:
    (env.root / "real").mkdir()
    (env.root / "alias").symlink_to(env.root / "real", target_is_directory=True)
    r = Workflow.from_yaml(
        """
name: inner_link
steps:
  - id: w
    capability: fs.write
    with: {path: alias/x.txt, content: fine}
"""
    ).run()
    assert r.status == "completed"
    assert (env.root / "real" / "x.txt").read_text() == "fine"


def test_an_absolute_path_inside_the_workspace_is_fine(env: Env) -> None:
    target = env.root / "abs.txt"
    r = Workflow.from_dict(
        {
            "name": "abs_inside",
            "steps": [
                {
                    "id": "w",
                    "capability": "fs.write",
                    "with": {"path": str(target), "content": "ok"},
                }
            ],
        }
    ).run()
    assert r.status == "completed"
    assert target.read_text() == "ok"


def test_airun_workspace_moves_the_root(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    area = env.root / "area"
    area.mkdir()
    monkeypatch.setenv("AIRUN_WORKSPACE", str(area))
    before = tree(env.root)
    wf = Workflow.from_yaml(
        """
name: ws_env
on_failure: stop
steps:
  - id: inside
    capability: fs.write
    with: {path: x.txt, content: in the area}
  - id: outside
    needs: [inside]
    capability: fs.write
    with: {path: ../beside_area.txt, content: no}
"""
    )
    r = wf.run(raise_on_failure=False)
    rows = step_rows(r.run_id)
    assert (area / "x.txt").read_text() == "in the area"  # relative to the workspace, not cwd
    assert rows["outside"]["status"] == "failed"
    assert "outside the workspace" in rows["outside"]["error"]
    assert not (env.root / "beside_area.txt").exists()
    assert set(tree(env.root)) - set(before) == {"area/x.txt"}


def test_the_settings_workspace_key_sets_the_root(env: Env) -> None:
    (env.root / "jail").mkdir()
    (env.root / "airun.yaml").write_text("workspace: jail\n")
    wf = Workflow.from_yaml(
        """
name: ws_settings
on_failure: stop
steps:
  - id: w
    capability: fs.write
    with: {path: x.txt, content: jailed}
  - id: out
    needs: [w]
    capability: fs.write
    with: {path: ../airun.yaml, content: "workspace: /"}
"""
    )
    r = wf.run(raise_on_failure=False)
    assert (env.root / "jail" / "x.txt").read_text() == "jailed"
    assert step_rows(r.run_id)["out"]["status"] == "failed"
    assert (env.root / "airun.yaml").read_text() == "workspace: jail\n"
