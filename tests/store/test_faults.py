"""A catalogue of OS faults and bad input: each gets one line, and nothing is written.

Every case builds a real situation on disk (a foreign or damaged file where the store should
be, a folder where the journal or the lock goes, a read-only tmpfs, a path under /proc...),
runs a real command (the ``airun`` CLI through click, or the Python API), and asserts that
the message is one line saying what and where, that no library traceback escaped, and that
the folder is byte for byte as it was before.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from airun_nb import Workflow
from airun_nb.cli.main import main
from airun_nb.errors import AirunError
from airun_nb.store.database import Store
from support import AIRUN
from support import faults as fs


def _snapshot(root: Path) -> dict[str, tuple[str, str]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.join(dirpath, d)] = ("dir", "")
        for f in filenames:
            p = os.path.join(dirpath, f)
            # The lock file only says who holds the lease right now: its existence counts.
            data = b"" if f.endswith(".lock") else Path(p).read_bytes()
            out[p] = ("file", hashlib.sha256(data).hexdigest())
    return out


def _good_store(path: Path) -> Path:
    """A real store with one finished run of the fault workflow."""
    Workflow.from_yaml(fs.WORKFLOW).run(db=path)
    Store.open(path).release()
    return path


# -- what can stand where the store should be ---------------------------------------------


def _sqlite(p: Path) -> None:
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()


def _other_duckdb(p: Path) -> None:
    con = duckdb.connect(str(p))
    con.execute("CREATE TABLE sales (x INT)")
    con.close()


def _newer(p: Path) -> None:
    _good_store(p)
    con = duckdb.connect(str(p))
    con.execute("UPDATE airun_meta SET value = '999' WHERE key = 'schema_version'")
    con.close()


def _truncated(keep: float) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        _good_store(p)
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    return make


def _flipped(at: Callable[[int], list[int]]) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        _good_store(p)
        data = bytearray(p.read_bytes())
        for i in at(len(data)):
            data[i] ^= 0xFF
        p.write_bytes(bytes(data))

    return make


STORE_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "sqlite": (_sqlite, "is a SQLite file, not an airun_nb store"),
    "text": (lambda p: p.write_text("hello\n"), "is not an airun_nb store"),
    "gzip": (lambda p: p.write_bytes(gzip.compress(b"x" * 5000)), "is not an airun_nb store"),
    "png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 5000), "not an airun_nb store"),
    "other duckdb": (_other_duckdb, "is a DuckDB database but not an airun_nb store"),
    "newer schema": (_newer, "was written by a newer airun_nb"),
    "truncated half": (_truncated(0.5), "is corrupt"),
    "truncated head": (_truncated(0.004), "is corrupt"),
    "bit-flipped header": (_flipped(lambda n: [300, 4100]), "is corrupt"),
    "bit-flipped blocks": (_flipped(lambda n: list(range(12288, n, 997))), "is corrupt"),
}


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text and "IOException" not in text and "_duckdb" not in text
    return lines[0]


def _cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for k in ("AIRUN_DB", "AIRUN_CRASH_AT", "AIRUN_SYNC"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "5")
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.txt"
    monkeypatch.setenv("AIRUN_TEST_LEDGER", str(ledger))


READERS = [["runs"], ["history"], ["show", "r-1"], ["approvals"], ["audit"]]


# A store cut in half still answers the queries that only touch its first half.
CLI_CASES = [
    (kind, args)
    for kind in STORE_FILES
    for args in READERS
    if kind != "truncated half" or args[0] in ("runs", "history")
]


@pytest.mark.parametrize(
    ("kind", "args"), CLI_CASES, ids=lambda v: v if isinstance(v, str) else v[0]
)
def test_bad_store_file_cli(tmp_path: Path, clean_env: None, kind: str, args: list[str]) -> None:
    make, expect = STORE_FILES[kind]
    db = tmp_path / "s.duckdb"
    make(db)
    before = _snapshot(tmp_path)
    code, err = _cli([*args, "--db", str(db)])
    assert code == 1
    line = _one_line(err)
    assert line.startswith("error: ") and expect in line and str(db) in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", list(STORE_FILES))
def test_bad_store_file_api(tmp_path: Path, clean_env: None, kind: str) -> None:
    make, expect = STORE_FILES[kind]
    db = tmp_path / "s.duckdb"
    make(db)
    before = _snapshot(tmp_path)
    with pytest.raises(AirunError) as info:
        Workflow.from_yaml(fs.WORKFLOW).run(db=db)
    assert expect in _one_line(info.value.message)
    assert _snapshot(tmp_path) == before


ACTORS = [
    ["runs"],
    ["history"],
    ["show", "r-1"],
    ["resume", "r-1"],
    ["rollback", "r-1"],
    ["approvals"],
    ["approve", "r-1", "g"],
    ["reject", "r-1", "g"],
    ["audit"],
    ["cancel", "r-1"],
]


@pytest.mark.parametrize("args", ACTORS, ids=lambda a: a[0])
def test_commands_never_create_a_store(tmp_path: Path, clean_env: None, args: list[str]) -> None:
    db = tmp_path / "typo.duckdb"
    code, err = _cli([*args, "--db", str(db)])
    assert code == 1
    assert _one_line(err) == f"error: there is no store at {db} (check --db or AIRUN_DB)"
    assert list(tmp_path.iterdir()) == []


def test_doctor_never_creates_a_store(tmp_path: Path, clean_env: None) -> None:
    code, err = _cli(["doctor", "--db", str(tmp_path / "typo.duckdb")])
    assert code == 1 and "there is no store at" in _one_line(err)
    assert list(tmp_path.iterdir()) == []


SIDE_FOLDERS = {
    "journal": ("s.duckdb.journal", "cannot open the journal"),
    "lock": ("s.duckdb.lock", "cannot open the lock file"),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new store", "existing store"])
@pytest.mark.parametrize("side", list(SIDE_FOLDERS))
def test_side_file_is_a_folder(tmp_path: Path, clean_env: None, side: str, existing: bool) -> None:
    db = tmp_path / "s.duckdb"
    if existing:
        _good_store(db)
    name, expect = SIDE_FOLDERS[side]
    (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / name).mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(AirunError) as info:
        Workflow.from_yaml(fs.WORKFLOW).run(db=db)
    line = _one_line(info.value.message)
    assert expect in line and f"{tmp_path / name} is a folder; move that folder away" in line
    assert _snapshot(tmp_path) == before


VIRTUAL = ["/proc/airun.duckdb", "/proc/self/status", "/sys/airun.duckdb", "/proc/version"]


@pytest.mark.parametrize("path", VIRTUAL)
def test_store_under_proc(clean_env: None, path: str) -> None:
    with pytest.raises(AirunError) as info:
        Store.open(path)
    line = _one_line(info.value.message)
    assert line.startswith(f"cannot use {path} as the store: /")
    assert "is a virtual file system of the kernel" in line


def test_store_path_is_a_folder(tmp_path: Path, clean_env: None) -> None:
    code, err = _cli(["runs", "--db", str(tmp_path)])
    assert code == 1 and f"error: {tmp_path} is a folder; the store is a file" in _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(tmp_path: Path, clean_env: None) -> None:
    with pytest.raises(AirunError) as info:
        Workflow.from_yaml(fs.WORKFLOW).run(db=tmp_path / "nope" / "s.duckdb")
    assert "folder " + str(tmp_path / "nope") + " does not exist" in _one_line(info.value.message)
    assert list(tmp_path.iterdir()) == []


def test_long_paths_are_shortened(tmp_path: Path, clean_env: None) -> None:
    deep = tmp_path / ("d" * 120) / ("e" * 120) / "s.duckdb"
    with pytest.raises(AirunError) as info:
        Store.open(deep)
    line = _one_line(info.value.message)
    assert "..." in line and len(line) < 260 and line.endswith("does not exist")


def test_name_too_long(tmp_path: Path, clean_env: None) -> None:
    with pytest.raises(AirunError) as info:
        Store.open(tmp_path / ("x" * 300 + ".duckdb"))
    line = _one_line(info.value.message)
    assert "the path is too long" in line and "..." in line
    assert list(tmp_path.iterdir()) == []


# -- output files -------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["history", "audit"])
def test_output_into_missing_folder(tmp_path: Path, clean_env: None, cmd: str) -> None:
    db = _good_store(tmp_path / "s.duckdb")
    before = _snapshot(tmp_path)
    out = tmp_path / "nofolder" / "x.csv"
    code, err = _cli([cmd, "--db", str(db), "-o", str(out)])
    assert code == 1
    assert _one_line(err) == f"error: cannot write {out}: folder {out.parent} does not exist"
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("table", ["runs", "steps", "attempts", "events"])
def test_history_of_an_unknown_run(tmp_path: Path, clean_env: None, table: str) -> None:
    db = _good_store(tmp_path / "s.duckdb")
    before = _snapshot(tmp_path)
    code, err = _cli(["history", "--db", str(db), "-t", table, "--run", "r-nope"])
    assert code == 2
    assert _one_line(err) == f"error: no run r-nope in {db}"
    assert _snapshot(tmp_path) == before


# -- a read-only file system and a full disk (real tmpfs mounts) ------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)])
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount_ro(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)


RO_COMMANDS = [["runs"], ["history"], ["show", "RUN"], ["audit"], ["resume", "RUN"]]


@pytest.mark.parametrize("args", RO_COMMANDS, ids=lambda a: a[0])
def test_read_only_file_system_cli(tmpfs: Path, clean_env: None, args: list[str]) -> None:
    db = _good_store(tmpfs / "s.duckdb")
    run_id = Store.open(db).query("SELECT run_id FROM runs")[0][0]
    Store.open(db).release()
    _remount_ro(tmpfs)
    before = _snapshot(tmpfs)
    code, err = _cli([a.replace("RUN", run_id) for a in args] + ["--db", str(db)])
    assert code == 1
    line = _one_line(err)
    assert "the file system is read-only; put the store on a writable disk" in line
    assert str(tmpfs) in line
    assert _snapshot(tmpfs) == before


def test_read_only_file_system_new_store(tmpfs: Path, clean_env: None) -> None:
    _remount_ro(tmpfs)
    with pytest.raises(AirunError) as info:
        Workflow.from_yaml(fs.WORKFLOW).run(db=tmpfs / "s.duckdb")
    assert "the file system is read-only" in _one_line(info.value.message)
    assert list(tmpfs.iterdir()) == []


# -- a disk that fills up in the middle of a run ------------------------------------------------


def _fill(mnt: Path) -> Path:
    """Write a file until the tmpfs is full."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_while_journaling(tmpfs: Path, tmp_path: Path) -> None:
    db, ledger, go = tmpfs / "s.duckdb", tmp_path / "ledger.txt", tmp_path / "go"
    env = fs.env(ledger, AIRUN_TEST_WAIT="c", AIRUN_TEST_GO=str(go))
    proc = subprocess.Popen(
        fs.command(db), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while fs.ledger(ledger)["c"] == 0:  # c is running: its completion is still to be written
        assert proc.poll() is None, proc.communicate()
    filler = _fill(tmpfs)
    go.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    line = _one_line(err)
    assert line.startswith("error: cannot ") and "the disk is full; free some space and run" in line
    filler.unlink()
    done = fs.run(db, ledger)
    assert done.returncode == 0 and "completed" in done.stdout, done.stderr
    counts = fs.ledger(ledger)
    assert counts["a"] == counts["b"] == 1  # finished before the disk filled: never again
    assert set(counts) == set(fs.STEPS) and max(counts.values()) <= 2
    assert sum(counts.values()) <= len(fs.STEPS) + 1  # at most the step in flight twice


def test_file_size_limit_while_journaling(tmp_path: Path) -> None:
    import resource

    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    crashed = fs.run(db, ledger, AIRUN_TEST_KILL="c")
    assert crashed.returncode == -9

    def limit() -> None:  # no file may grow past 4 KB: DuckDB cannot write its log
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    before = fs.ledger(ledger)
    # Not measured for coverage: its data file could not be written under the limit either.
    env = {k: v for k, v in fs.env(ledger).items() if not k.startswith("COVERAGE_")}
    limited = subprocess.run(
        fs.command(db),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert limited.returncode == 1, limited
    assert "the file size limit was reached (ulimit -f)" in _one_line(limited.stderr)
    assert fs.ledger(ledger) == before  # refused before any step ran again
    done = fs.run(db, ledger)
    assert done.returncode == 0, done.stderr
    assert fs.ledger(ledger) == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}


# -- bad input that the parser refuses before any store is touched ---------------------------


@pytest.mark.parametrize(
    ("timeout", "expect"),
    [(".inf", "finite"), (".nan", "finite"), ("-.inf", "finite"), ("-1", "cannot be negative")],
)
def test_timeout_must_be_finite(tmp_path: Path, timeout: str, expect: str) -> None:
    text = f"name: t\nsteps:\n  - id: a\n    python: x = 1\n    timeout: {timeout}\n"
    with pytest.raises(AirunError) as info:
        Workflow.from_yaml(text).run(db=tmp_path / "s.duckdb")
    line = _one_line(info.value.message)
    assert expect in line and "timeout" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "line", "first"),
    [
        ("name: t\nsteps:\n  - id: a\n    python: x = 1\n    python: x = 2\n", 5, 4),
        ("name: t\nname: u\nsteps:\n  - id: a\n    python: x = 1\n", 2, 1),
        ("name: t\nsteps:\n  - id: a\n    with: {k: 1, k: 2}\n    python: x = 1\n", 4, 4),
    ],
)
def test_duplicate_yaml_keys(tmp_path: Path, text: str, line: int, first: int) -> None:
    with pytest.raises(AirunError) as info:
        Workflow.from_yaml(text).run(db=tmp_path / "s.duckdb")
    msg = _one_line(info.value.message)
    assert msg.startswith(f"line {line}: duplicate key ") and f"(first at line {first})" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keys", [("id", "name"), ("name", "id"), ("needs", "depends_on")])
def test_two_keys_for_one_thing(tmp_path: Path, keys: tuple[str, str]) -> None:
    values = {"id": "a", "name": "b", "needs": "[]", "depends_on": "[]"}
    body = "".join(f"    {k}: {values[k]}\n" for k in keys)
    text = f"name: t\nsteps:\n  - python: x = 1\n{body}"
    with pytest.raises(AirunError) as info:
        Workflow.from_yaml(text).run(db=tmp_path / "s.duckdb")
    msg = _one_line(info.value.message)
    assert f"'{keys[0]}' and '{keys[1]}' both give the step's" in msg and "line 3" in msg
    assert list(tmp_path.iterdir()) == []


def test_disk_full_airun_runs_does_not_promise_a_resume(tmpfs: Path, tmp_path: Path) -> None:
    """On a full disk, with a killed run's records still to fold: `airun runs` lists the run
    all the same (a read lays the records over the tables and writes nothing); a read that must
    fold them first (the events, numbered as they are folded) says in one line that the disk is
    full and that nothing recorded is lost; it resumes no run, so it does not say that the run
    resumes where it stopped. After space is freed the events are read too."""
    db, ledger = tmpfs / "s.duckdb", tmp_path / "ledger.txt"
    crashed = fs.run(db, ledger, AIRUN_TEST_KILL="c")
    assert crashed.returncode == -9
    filler = _fill(tmpfs)
    env = {k: v for k, v in fs.env(ledger).items() if not k.startswith("COVERAGE_")}
    listed = subprocess.run(
        [*AIRUN, "runs", "--db", str(db)], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and "faulty" in listed.stdout, listed.stderr
    events = [*AIRUN, "history", "--table", "events", "--db", str(db)]
    proc = subprocess.run(events, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _one_line(proc.stderr)
    assert "the disk is full" in line and "nothing recorded is lost" in line
    assert "resumes where it stopped" not in line
    filler.unlink()
    read = subprocess.run(events, env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0 and "run_started" in read.stdout, read.stderr
