"""The store file: shared across processes, refuses what it cannot read, survives a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

import airun_nb
from airun_nb import StoreBusy, StoreIncompatible, Workflow
from airun_nb.store.database import Store

READ_RUNS = textwrap.dedent(
    """
    import sys, airun_nb
    df = airun_nb.runs(db=sys.argv[1])
    print(",".join(f"{r}:{s}" for r, s in zip(df["run_id"], df["status"])))
    """
)


def _python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    # The timeout only guards against a hung child; nothing here asserts on time.
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_another_process_reads_right_after_a_run(db: Path) -> None:
    res = Workflow.from_yaml(
        "name: w\nsteps:\n  - id: a\n    python: 'result = 1'\n  - id: b\n    python: 'result = 2'\n"
    ).run(db=db)
    out = _python(READ_RUNS, str(db))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{res.run_id}:completed"


def test_another_process_reads_while_a_long_step_runs(db: Path) -> None:
    """A step that itself asks a second process for the history: the store must not be held."""
    seen: dict[str, str] = {}

    def probe():
        out = _python(READ_RUNS, str(db))
        seen["stdout"], seen["stderr"], seen["rc"] = out.stdout, out.stderr, str(out.returncode)
        return out.returncode

    res = Workflow.from_yaml(
        "name: probe\nsteps:\n  - id: first\n    python: 'result = 1'\n"
        "  - id: probe\n    call: probe\n    needs: [first]\n"
    ).run(db=db, namespace={"probe": probe})
    assert res.status == "completed"
    assert seen["rc"] == "0", seen["stderr"]
    assert seen["stdout"].strip() == f"{res.run_id}:running"


def test_non_duckdb_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreIncompatible) as info:
        airun_nb.runs(db=path)
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg
    assert "Traceback" not in msg
    assert path.read_bytes() == b"these are my notes, not a database\n" * 200


def test_foreign_duckdb_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE foo (x INTEGER)")
    con.execute("INSERT INTO foo VALUES (42)")
    con.close()

    with pytest.raises(StoreIncompatible) as info:
        airun_nb.runs(db=path)
    msg = str(info.value)
    assert "not an airun_nb store" in msg
    assert str(path) in msg and "\n" not in msg

    con = duckdb.connect(str(path), read_only=True)
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    rows = con.execute("SELECT x FROM foo").fetchall()
    con.close()
    assert tables == {"foo"}
    assert rows == [(42,)]


def test_store_from_a_newer_version_is_refused(db: Path) -> None:
    Workflow.from_yaml("name: w\nsteps:\n  - id: a\n    python: 'result = 1'\n").run(db=db)
    Store.open(db).release()
    con = duckdb.connect(str(db))
    con.execute("UPDATE airun_meta SET value = '999' WHERE key = 'schema_version'")
    con.close()

    with pytest.raises(StoreIncompatible) as info:
        airun_nb.runs(db=db)
    msg = str(info.value)
    assert "newer" in msg
    assert str(db) in msg and "\n" not in msg

    con = duckdb.connect(str(db), read_only=True)
    version = con.execute("SELECT value FROM airun_meta WHERE key = 'schema_version'").fetchone()
    con.close()
    assert version == ("999",)


CRASHY = """
name: crashy
params: {log: LOGFILE}
on_failure: stop
steps:
  - id: a
    python: |
      open(params["log"], "a").write("a\\n")
      result = {"rows": 3}
  - id: b
    needs: [a]
    python: |
      open(params["log"], "a").write("b\\n")
      result = steps.a.output["rows"] * 2
  - id: c
    needs: [b]
    python: |
      import os, signal
      open(params["log"], "a").write("c\\n")
      if os.environ.get("AIRUN_TEST_KILL") == "1":
          os.kill(os.getpid(), signal.SIGKILL)
      result = steps.b.output + 1
"""

RUN_FILE = textwrap.dedent(
    """
    import sys, airun_nb
    text = open(sys.argv[1]).read()
    airun_nb.Workflow.from_yaml(text).run(db=sys.argv[2])
    """
)


def test_journal_is_recovered_after_sigkill(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    spec_file = tmp_path / "crashy.yaml"
    spec_file.write_text(CRASHY.replace("LOGFILE", str(log)))

    env = dict(os.environ, AIRUN_TEST_KILL="1")
    out = _python(RUN_FILE, str(spec_file), str(db), env=env)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert log.read_text().split() == ["a", "b", "c"]

    steps = airun_nb.steps(db=db)
    status = dict(zip(steps["step_id"], steps["status"], strict=True))
    assert status == {"a": "completed", "b": "completed", "c": "running"}
    runs = airun_nb.runs(db=db)
    assert runs["status"].tolist() == ["running"]

    res = Workflow.from_file(spec_file).run(db=db)
    assert res.run_id == runs["run_id"].iloc[0]
    assert res.status == "completed"
    assert sorted(res.replayed) == ["a", "b"]
    assert res.outputs["c"] == 7
    # a and b ran once (in the killed process); c ran there and once more here.
    assert log.read_text().split() == ["a", "b", "c", "c"]
    att = airun_nb.attempts(res.run_id, db=db)
    c = att[att["step_id"] == "c"].sort_values("attempt")
    assert c["attempt"].tolist() == [1, 2]
    assert c["status"].tolist()[-1] == "completed"
    assert c["status"].tolist()[0] != "completed"


HOLD = textwrap.dedent(
    """
    import sys, time
    from airun_nb.store.database import Store
    store = Store.open(sys.argv[1])
    with store.session():
        print("held", flush=True)
        time.sleep(3)
    """
)


def test_busy_store_names_the_holder(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.stderr.read() if proc.stderr else ""
        monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "0.5")
        with pytest.raises(StoreBusy) as info:
            airun_nb.runs(db=db)
    finally:
        proc.kill()
        proc.wait()
    msg = str(info.value)
    assert f"pid {proc.pid}" in msg
    assert "IOException" not in msg
    assert "\n" not in msg
    # Once the holder is gone, the store opens again.
    assert len(airun_nb.runs(db=db)) == 0


BUSY = """
name: busy
params: {started: STARTED, go: GO}
steps:
  - id: wait
    python: |
      import pathlib, time
      pathlib.Path(params["started"]).write_text("1")
      for _ in range(6000):
          if pathlib.Path(params["go"]).exists():
              break
          time.sleep(0.01)
      result = "done"
"""


def test_run_executing_in_another_process_belongs_to_it(db: Path, tmp_path: Path) -> None:
    """A run executing in another live process is never continued here: re-running the cell
    starts a run of this process's own (every step executed here), resuming that run by id is
    refused with a one-line message naming the process, and the other run ends on its own."""
    started, go = tmp_path / "started", tmp_path / "go"
    spec_file = tmp_path / "busy.yaml"
    spec_file.write_text(BUSY.replace("STARTED", str(started)).replace("GO", str(go)))
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_FILE, str(spec_file), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(6000):  # wait for the child's step to start (guard: ~60 s)
            if started.exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert started.exists(), proc.stderr.read() if proc.stderr else ""
        (theirs,) = [r for r in airun_nb.runs(db=db).itertuples() if r.status == "running"]
        mine_go = tmp_path / "mine-go"
        mine_go.touch()
        params = {"started": str(tmp_path / "mine-started"), "go": str(mine_go)}
        res = Workflow.from_file(spec_file).run(db=db, params=params)
        assert res.run_id != theirs.run_id
        assert res.executed == ["wait"] and res.replayed == []
        with pytest.raises(airun_nb.RunBusy) as info:
            Workflow.from_file(spec_file).run(db=db, resume=theirs.run_id)
        assert f"pid {proc.pid}" in str(info.value)
        assert "\n" not in str(info.value)
    finally:
        go.write_text("1")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    by_id = {r.run_id: r.status for r in airun_nb.runs(db=db).itertuples()}
    assert by_id == {theirs.run_id: "completed", res.run_id: "completed"}
    owners = {r.run_id: r.owner_pid for r in airun_nb.runs(db=db).itertuples()}
    assert owners == {theirs.run_id: proc.pid, res.run_id: os.getpid()}


HOLD_RAW = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("held", flush=True)
    time.sleep(3)
    """
)


def test_store_locked_by_a_plain_duckdb_process_is_a_clear_busy_error(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store.open(db).release()  # create the store
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_RAW, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held", proc.stderr.read() if proc.stderr else ""
        monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "0.5")
        with pytest.raises(StoreBusy) as info:
            airun_nb.runs(db=db)
    finally:
        proc.kill()
        proc.wait()
    msg = str(info.value)
    assert str(proc.pid) in msg
    assert "IOException" not in msg and "Conflicting lock" not in msg
    assert "\n" not in msg


def test_the_duckdb_store_is_a_backend(db: Path) -> None:
    """The DuckDB file implements the store's boundary, the interface a second backend
    implements too."""
    from airun_nb.store.backend import Backend

    assert isinstance(Store.open(db), Backend)
