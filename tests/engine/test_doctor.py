"""``airun doctor``: a real store left by a SIGKILLed process, checked and repaired."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from IPython.core.error import UsageError

from airun_nb.cli.main import main
from support import faults as fs


def _doctor(db: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", "--db", str(db), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout


def test_doctor_finds_and_resumes_a_dead_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run left `running` by a killed process is a problem; --repair resumes it (its code is
    importable): the finished steps do not run again, the one in flight does."""
    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    crashed = fs.run(db, ledger, AIRUN_TEST_KILL="c")
    assert crashed.returncode == -9
    code, out = _doctor(db)
    assert code == 1
    assert "runs left running by a dead process  problem   1: r-" in out
    assert "step rows without a run              ok" in out
    monkeypatch.setenv("AIRUN_TEST_LEDGER", str(ledger))
    code, out = _doctor(db, "--repair")
    assert code == 0 and "dead processes' runs resumed" in out and " completed" in out, out
    con = duckdb.connect(str(db), read_only=True)
    ((run_id, status),) = con.execute("SELECT run_id, status FROM runs").fetchall()
    con.close()
    assert status == "completed" and run_id in out
    assert fs.ledger(ledger) == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}
    assert _doctor(db)[0] == 0


def test_doctor_reports_orphan_rows(tmp_path: Path) -> None:
    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    assert fs.run(db, ledger).returncode == 0
    con = duckdb.connect(str(db))
    con.execute("UPDATE steps SET run_id = 'r-gone' WHERE step_id = 'e'")
    con.close()
    code, out = _doctor(db)
    assert code == 1
    assert "step rows without a run              problem   1 row(s)" in out
    assert "attempts without a step              problem   1 row(s)" in out


def test_doctor_moves_a_corrupt_store_aside(tmp_path: Path) -> None:
    db, ledger = tmp_path / "s.duckdb", tmp_path / "ledger.txt"
    assert fs.run(db, ledger).returncode == 0
    data = bytearray(db.read_bytes())
    data[300] ^= 0xFF
    db.write_bytes(bytes(data))
    code, out = _doctor(db)
    assert code == 1 and "is corrupt" in out
    code, out = _doctor(db, "--repair")
    # (a long temporary path is shortened in the message: match its two ends)
    assert "repaired  moved to " in out and "/s.duckdb.corrupt-" in out
    assert str(tmp_path)[:20] in out
    [aside] = tmp_path.glob("s.duckdb.corrupt-*")
    assert aside.read_bytes() == bytes(data) and not db.exists()


def test_unbalanced_quote_in_a_magic_line(ipython) -> None:
    with pytest.raises(UsageError, match="No closing quotation"):
        ipython.run_line_magic("workflow", "show 'r-1")
    with pytest.raises(UsageError, match="No closing quotation"):
        ipython.run_cell_magic("workflow", "demo --param 'x=1", "steps: []")
