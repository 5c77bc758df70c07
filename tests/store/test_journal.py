"""Journal records that can be checked: damage is found, set aside and reported, never lost silently.

The process tests run the :mod:`support.faults` workflow in a real process that SIGKILLs itself in
step ``c``, damage the journal it left the way a power loss or a bad disk would, and resume in a
fresh process: no earlier record is lost, one line says what was kept and what was set aside,
the resume keeps the run id and nothing finished runs again (counted in a ledger file).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import pytest

from airun_nb.store.journal import Journal, encode
from support import faults as fs

# -- in-process: the scanner on real files --------------------------------------------------


def _journal(tmp_path: Path, n: int) -> tuple[Journal, list[dict[str, object]]]:
    j = Journal(tmp_path / "x.duckdb")
    j.open()
    records: list[dict[str, object]] = [
        {"t": "ev", "i": i, "pad": "x" * (i % 37)} for i in range(n)
    ]
    for i in range(0, n, 3):
        j.append_many(records[i : i + 3])
    return j, records


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every record line after the header."""
    out, pos = [], data.index(b"\n") + 1
    while pos < len(data):
        end = data.index(b"\n", pos) + 1
        out.append((pos, end))
        pos = end
    return out


@pytest.mark.parametrize("seed", range(60))
def test_scan_keeps_every_untouched_record(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    j, records = _journal(tmp_path, 40)
    data = j.path.read_bytes()
    frames = _frames(data)
    kind = ["truncate", "garbage", "nul", "insert", "flip"][seed % 5]
    a = rng.randrange(frames[0][0], len(data) - 1)
    b = min(len(data), a + rng.randrange(1, 300))
    if kind == "truncate":
        new = data[:a]
    elif kind == "garbage":
        new = data[:a] + bytes(rng.randrange(256) for _ in range(b - a)) + data[b:]
    elif kind == "nul":
        new = data[:a] + b"\0" * (b - a) + data[b:]
    elif kind == "insert":
        new = data[:a] + b"not a record\n\0\0" + data[a:]
        b = a
    else:
        new = data[:a] + bytes([data[a] ^ 0x10]) + data[a + 1 :]
        b = a + 1
    j.path.write_bytes(new)
    j.close()
    j2 = Journal(tmp_path / "x.duckdb")
    j2.open()
    scan = j2.scan(0)
    # Records whose bytes were not touched are all there, in order; nothing is invented.
    untouched = [
        records[i] for i, (s, e) in enumerate(frames) if e <= a or (s >= b and kind != "truncate")
    ]
    assert [r for r in scan.records if r in untouched] == untouched
    assert all(r in records for r in scan.records)
    boundary = kind == "truncate" and any(a == e for _, e in frames)
    if new != data and not boundary:
        assert scan.damage, f"{kind} at {a} went unnoticed"
        assert scan.describe(j2.path, None)


def test_duplicated_records_are_skipped(tmp_path: Path) -> None:
    j, records = _journal(tmp_path, 9)
    data = j.path.read_bytes()
    frames = _frames(data)
    block = data[frames[2][0] : frames[5][1]]
    j.path.write_bytes(data[: frames[5][1]] + block + data[frames[5][1] :])
    scan = j.scan(0)
    assert scan.records == records
    assert scan.duplicates == 4
    assert "skipped 4 duplicated record(s)" in (scan.describe(j.path, None) or "")


def test_frame_carries_length_and_crc() -> None:
    line = encode(7, {"t": "ev", "x": 1})
    seq, length, crc, payload = line.split(b" ", 3)
    assert (int(seq, 16), int(length, 16)) == (7, len(payload) - 1)
    assert payload.endswith(b"\n") and json.loads(payload) == {"t": "ev", "x": 1}
    assert len(crc) == 8


# -- real processes: damage after a SIGKILL, then a resume --------------------------------


def _crash(tmp_path: Path) -> tuple[Path, Path, str, bytes]:
    """Run the workflow until step c kills its process; return db, ledger, run id, journal."""
    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    proc = fs.run(db, ledger, AIRUN_TEST_KILL="c")
    assert proc.returncode == -9, proc.stderr
    assert fs.ledger(ledger) == {"a": 1, "b": 1, "c": 1}
    run_id = json.loads(_frames_payload(db)[1])["run_id"]
    return db, ledger, run_id, _journal_path(db).read_bytes()


def _journal_path(db: Path) -> Path:
    return db.with_name(db.name + ".journal")


def _frames_payload(db: Path) -> list[bytes]:
    data = _journal_path(db).read_bytes()
    return [data[s:e].split(b" ", 3)[3] for s, e in _frames(data)]


def _resume_and_check(db: Path, ledger: Path, run_id: str, expect: dict[str, int]) -> str:
    proc = fs.run(db, ledger)
    assert proc.returncode == 0, proc.stderr
    assert fs.run_id_of(proc) == run_id  # the same run resumed, not a new one
    assert "RUN " + run_id + " completed" in proc.stdout
    assert fs.ledger(ledger) == expect
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute("SELECT run_id, status FROM runs").fetchall()
        steps = con.execute(
            "SELECT step_id, status FROM steps WHERE run_id = ? ORDER BY position", [run_id]
        ).fetchall()
        started = con.execute("SELECT count(*) FROM events WHERE kind = 'run_started'").fetchone()
    finally:
        con.close()
    assert runs == [(run_id, "completed")]
    assert steps == [(s, "completed") for s in fs.STEPS]
    assert started == (1,)
    warnings = [ln for ln in proc.stderr.splitlines() if "StoreWarning" in ln]
    return warnings[0] if warnings else ""


ONCE_AFTER_C = {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}


def _aside(db: Path) -> list[Path]:
    return sorted(db.parent.glob(db.name + ".journal.damaged-*"))


def test_torn_last_record(tmp_path: Path) -> None:
    db, ledger, run_id, data = _crash(tmp_path)
    s, e = _frames(data)[-1]
    cut = s + (e - s) // 2
    _journal_path(db).write_bytes(data[:cut])  # the last write was cut short
    warning = _resume_and_check(db, ledger, run_id, ONCE_AFTER_C)
    assert f"the last record of {_journal_path(db)} was torn: discarded {cut - s} bytes" in warning
    [aside] = _aside(db)
    assert aside.read_bytes() == data[s:cut]
    assert str(aside) in warning


def test_torn_first_record_after_a_fold_loses_nothing(tmp_path: Path) -> None:
    db, ledger, run_id, _ = _crash(tmp_path)
    # Another process reads the store: the journal is folded and a new generation begins.
    reader = fs.subprocess.run(
        [fs.sys.executable, "-c", "import sys, airun_nb; airun_nb.runs(db=sys.argv[1])", str(db)],
        env=fs.env(ledger),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reader.returncode == 0, reader.stderr
    header = _journal_path(db).read_bytes()
    assert header.count(b"\n") == 1
    torn = encode(1, {"t": "ev", "kind": "x", "detail": "y" * 50})[:30]
    _journal_path(db).write_bytes(header + torn)  # the first record after the fold is torn
    # The next process resumes and dies in d: its records must not land after the garbage.
    proc = fs.run(db, ledger, AIRUN_TEST_KILL="d")
    assert proc.returncode == -9
    assert "was torn: discarded 30 bytes" in proc.stderr
    assert torn not in _journal_path(db).read_bytes()
    _resume_and_check(db, ledger, run_id, {"a": 1, "b": 1, "c": 2, "d": 2, "e": 1})
    [aside] = _aside(db)
    assert aside.read_bytes() == torn


def test_nul_padding(tmp_path: Path) -> None:
    db, ledger, run_id, data = _crash(tmp_path)
    s, _ = _frames(data)[-1]
    padded = data[:s] + b"\0" * (4096 - s % 4096)  # the last block came back as zeros
    _journal_path(db).write_bytes(padded)
    warning = _resume_and_check(db, ledger, run_id, ONCE_AFTER_C)
    assert f"discarded {len(padded) - s} bytes at offset {s}" in warning
    [aside] = _aside(db)
    assert aside.read_bytes() == padded[s:]


def test_garbage_in_the_middle_keeps_the_records_after_it(tmp_path: Path) -> None:
    db, ledger, run_id, data = _crash(tmp_path)
    frames = _frames(data)
    # Garbage between the records of a and those of b: b's completion comes after it.
    b_done = next(
        i for i, p in enumerate(_frames_payload(db)) if b'"step_id":"b"' in p and b"completed" in p
    )
    at = frames[b_done - 2][1]
    garbage = b"\x13\x37 this is not a record {\n"
    _journal_path(db).write_bytes(data[:at] + garbage + data[at:])
    warning = _resume_and_check(db, ledger, run_id, ONCE_AFTER_C)  # b is not run again
    assert f"has {len(garbage)} damaged bytes in 1 place(s) from offset {at}" in warning
    assert "of them after the damage" in warning
    [aside] = _aside(db)
    assert aside.read_bytes() == garbage + data[at:]


def test_duplicated_records_fold_once(tmp_path: Path) -> None:
    db, ledger, run_id, data = _crash(tmp_path)
    frames = _frames(data)
    block = data[frames[0][0] : frames[4][1]]  # spec, run, run_started, two steps
    _journal_path(db).write_bytes(data + block)
    warning = _resume_and_check(db, ledger, run_id, ONCE_AFTER_C)  # one run_started event
    assert "skipped 5 duplicated record(s)" in warning
    assert _aside(db) == []  # nothing damaged, nothing set aside


def test_journal_without_checksums_is_read_once(tmp_path: Path) -> None:
    db, ledger, run_id, data = _crash(tmp_path)
    header = json.loads(data[: data.index(b"\n")])
    old = json.dumps({"airun_journal": 1, "gen": header["gen"]}).encode() + b"\n"
    old += b"".join(p for p in _frames_payload(db))  # bare JSON lines, as before
    _journal_path(db).write_bytes(old)
    warning = _resume_and_check(db, ledger, run_id, ONCE_AFTER_C)
    assert warning == ""
    first = _journal_path(db).read_bytes().split(b"\n", 1)[0]
    assert json.loads(first)["airun_journal"] == 2  # the next generation is framed
