"""Folding other processes' records: DuckDB parses the journal's text.

A reader folds what writer processes journaled. The fold hands the records' JSON text to DuckDB,
which parses, groups and inserts it; this holds that to the one definition of turning records
into rows (``fold.group``, which the team store uses too). A real process, a real DuckDB file;
nothing here is timed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

import airun_nb
from airun_nb.service import tokens
from airun_nb.store import idle
from airun_nb.store.database import Store
from airun_nb.store.fold import batch, group
from airun_nb.store.journal import Journal, slot_paths
from airun_nb.store.schema import TABLES

# A process that runs workflows (a failure, a gate, retries, outputs), then dies (no fold at
# exit): what it journaled since its last read of the store stays in its slot (its last runs,
# with their retried steps) for another process to fold.
LEAVER = r"""
import os, sys
from pathlib import Path
import airun_nb
import airun_nb.store.database as database
import airun_nb.store.idle as idle
database.FOLD_EVERY = database.FOLD_AT_LATEST = 10**9  # nothing folded while it runs
idle.IDLE_RELEASE = 10**9
db = Path(sys.argv[1])
flaky = Path(sys.argv[2])

def sometimes() -> int:
    if not flaky.exists():
        flaky.touch()
        raise RuntimeError("first attempt fails")
    return 7

ns = {"sometimes": sometimes, "boom": lambda: 1 / 0}
try:
    airun_nb.Workflow.from_dict({"name": "failing", "steps": [{"id": "x", "call": "boom"}]}).run(
        db=db, namespace=ns, new=True)
except airun_nb.errors.WorkflowFailed:
    pass
else:
    raise AssertionError("the failing run did not fail")
r = airun_nb.Workflow.from_dict({"name": "gated", "steps": [
    {"id": "a", "python": "result = [1, 2, 3]"},
    {"id": "ok", "approval": {"message": "go?"}, "needs": ["a"]},
]}).run(db=db)
assert r.status == "waiting", r.status
for i in range(3):
    r = airun_nb.Workflow.from_dict({"name": f"retried{i}", "steps": [
        {"id": "a", "call": "sometimes", "retry": {"attempts": 3, "initial": "0s"}},
        {"id": "b", "python": "result = {'n': steps['a'].output, 'text': 'é\\n\"x\"'}",
         "needs": ["a"]},
    ]}).run(db=db, namespace=ns, new=True)
    assert r.status == "completed", r.status
    flaky.unlink()
os._exit(0)
"""


_APPENDED = ("events", "audit")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_USER"] = "tester"
    return env


def _rows(store: Store, table: str) -> list[dict[str, Any]]:
    with store.session("checking", fold=False, peers=False) as con:
        cur = con.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _key(table: str, row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in TABLES[table][1])


def test_the_fold_turns_journal_text_into_the_rows_group_defines(tmp_path: Path) -> None:
    """A process that ran workflows (a step retried, outputs with quotes, newlines and
    non-ASCII text, after a gate and a failure) died with its last records in its journal. The next
    reader folds them from their text inside DuckDB: every table holds exactly the rows
    ``fold.group`` makes of the same records (the latest record of a key winning, attempts
    from the step records, events and audit rows appended in order, events numbered in
    order)."""
    db = tmp_path / "airun.duckdb"
    airun_nb.Workflow.from_dict(
        {"name": "seed", "steps": [{"id": "s", "python": "result = 1"}]}
    ).run(db=db)
    Store.open(db).release()
    done = subprocess.run(
        [sys.executable, "-c", LEAVER, str(db), str(tmp_path / "flaky")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    records: list[dict[str, Any]] = []  # what the dead process left, decoded in Python
    for slot, _ in slot_paths(db):
        got = Journal.peer(db, slot)
        if got is not None:
            journal, _dead = got
            records += [r for r in journal.scan(0).records if isinstance(r, dict)]
            journal.close()
    assert {"run", "step", "ev", "audit"} <= {r.get("t") for r in records}
    keyed, appended = group(records)
    assert len(keyed["attempts"]) > len(keyed["steps"])  # the retried steps' attempts

    with duckdb.connect(str(db), read_only=True) as con:  # as the dead process left it
        before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in _APPENDED}
    store = Store.open(db)
    airun_nb.events(db=db)  # a read of events folds the dead process's slot (numbers them)
    for table, rows in keyed.items():
        want = {_key(table, r): r for r in batch(table, rows).to_pylist()}
        got = {_key(table, r): r for r in _rows(store, table) if _key(table, r) in want}
        assert got == want, table
    for table in _APPENDED:
        stored = _rows(store, table)[before[table] :]
        if table == "events":
            assert [r["seq"] for r in stored] == sorted(r["seq"] for r in stored)
            for r in stored:
                r.pop("seq")
        want_rows = batch(table, appended[table]).to_pylist()
        if table == "events":
            for r in want_rows:
                r.pop("seq")
        assert stored == want_rows, table
    store.release()


# A process that does one thing to the store, then dies before folding what it journaled.
DIES_UNFOLDED = r"""
import os, sys
from pathlib import Path
import airun_nb
import airun_nb.store.idle as idle
from airun_nb.service import tokens
from airun_nb.store.database import Store
idle.IDLE_RELEASE = 10**9
db, what = Path(sys.argv[1]), sys.argv[2]
if what == "run":
    r = airun_nb.Workflow.from_dict({"name": "beside", "steps": [{"id": "a", "python": "result = 1"}]}).run(
        db=db, new=True)
    assert r.status == "completed", r.status
else:
    tokens.revoke(Store.open(db), what)
os._exit(0)
"""


def _dies_unfolded(db: Path, what: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DIES_UNFOLDED, str(db), what],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _count(store: Store, workflow: str) -> int:
    with store.session("checking", fold=False, peers=False) as con:  # folds nothing
        return int(
            con.execute("SELECT count(*) FROM runs WHERE workflow = ?", [workflow]).fetchall()[0][0]
        )


def test_an_api_token_check_folds_only_when_a_token_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking an API token reads only the tokens. Beside another process's runs, still
    unfolded in its journal, the check folds nothing (those runs are still only in the
    journal after it); a token revoked by another process, the revocation still unfolded in
    that process's journal, is refused by the very next check."""
    monkeypatch.setattr(idle, "IDLE_RELEASE", 3600.0)  # this process keeps what it holds
    db = tmp_path / "airun.duckdb"
    store = Store.open(db)
    token = tokens.create(store, "alice", role="approver", created_by="test")
    store.release()
    _dies_unfolded(db, "run")

    found = tokens.authenticate(store, token)
    assert found is not None and found.user == "alice"
    assert _count(store, "beside") == 0  # the other process's run was not folded by the check

    _dies_unfolded(db, found.token_id)  # revoked in another process, not folded there
    assert tokens.authenticate(store, token) is None
    assert _count(store, "beside") == 1  # folded with the revocation, as every read folds
    store.release()
