"""The attacker's bench: a workspace with a store and some history, and ways to prove that an
attack changed nothing.

Every attack test takes a :class:`World`: a workspace folder (the working directory) holding
``data.txt``, ``keep/notes.md`` and the store ``airun.duckdb`` (where a notebook keeps it by
default) with one finished run. ``world.snapshot()`` records the workspace files (the store
files apart), the rows of that run in every table, and a file outside the workspace;
``world.assert_unchanged(snap)`` proves the attack left all of it as it was.
``world.assert_absent(secret)`` looks for a value in every table, the journal and the raw
bytes of the store file. Everything is real: DuckDB files, processes, the `airun` command.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb import Workflow
from airun_nb.errors import AirunError
from airun_nb.governance import audit as auditlog
from airun_nb.governance import policy as policy_mod
from airun_nb.store.database import Store
from support import AIRUN, ENV_VARS

TABLES = ("runs", "steps", "attempts", "events", "audit", "approvals", "specs")


@dataclass
class Snapshot:
    files: dict[str, Any]
    rows: dict[str, list[str]]
    outside: dict[str, Any]


@dataclass
class World:
    root: Path
    store: Path
    outside: Path
    history_run: str

    # -- what an attack must not change ---------------------------------------------------
    def files(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                rel = str(p.relative_to(self.root))
                if rel.split(os.sep)[0].startswith(self.store.name):
                    continue  # the store's own files change when a refused run is recorded
                if p.is_symlink():
                    out[rel] = ("<link>", os.readlink(p))
                elif p.is_dir():
                    out[rel] = "<dir>"
                else:
                    out[rel] = p.read_bytes()
        return out

    def outside_files(self) -> dict[str, Any]:
        return {p.name: p.read_bytes() for p in sorted(self.outside.iterdir()) if p.is_file()}

    def rows(self) -> dict[str, list[str]]:
        """Every row of the history run, per table (as text, sorted)."""
        store = Store.open(self.store)
        out = {}
        for table in TABLES:
            col = "spec_hash" if table == "specs" else "run_id"
            if table == "specs":
                q = "SELECT * FROM specs WHERE spec_hash IN (SELECT spec_hash FROM runs WHERE run_id = ?)"
            else:
                q = f"SELECT * FROM {table} WHERE {col} = ?"
            out[table] = sorted(map(repr, store.query(q, [self.history_run])))
        store.release()
        return out

    def snapshot(self) -> Snapshot:
        return Snapshot(self.files(), self.rows(), self.outside_files())

    def assert_unchanged(self, snap: Snapshot) -> None:
        assert self.store.exists(), "the store file is gone"
        assert self.files() == snap.files, "the workspace changed"
        assert self.outside_files() == snap.outside, "a file outside the workspace changed"
        assert self.rows() == snap.rows, "the stored history changed"
        assert self.history_run in airun_nb.runs()["run_id"].tolist()

    def assert_store_untouched(self, before: dict[str, bytes]) -> None:
        assert self.store_bytes() == before, "the store files changed"

    def store_bytes(self) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes()
            for p in sorted(self.store.parent.iterdir())
            if p.name.startswith(self.store.name) and p.is_file() and not p.name.endswith(".lock")
        }

    # -- what must never be written -------------------------------------------------------------
    def assert_absent(self, secret: str) -> None:
        store = Store.open(self.store)
        try:
            store.flush()
            for table in TABLES:
                text = repr(store.query(f"SELECT * FROM {table}"))
                assert secret not in text, f"the secret is in table {table}"
        finally:
            store.release()
        for frame in (airun_nb.steps(), airun_nb.events(), airun_nb.attempts(), airun_nb.audit()):
            assert secret not in frame.to_string()
        for p in self.store.parent.iterdir():
            if p.name.startswith(self.store.name) and p.is_file():
                assert secret.encode() not in p.read_bytes(), f"the secret is in {p.name}"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    root = tmp_path / "ws"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("outside the workspace\n")
    (root / "data.txt").write_text("precious data\n")
    (root / "keep").mkdir()
    (root / "keep" / "notes.md").write_text("# notes\n")
    for var in (*ENV_VARS, "AIRUN_DB", "AIRUN_DOTENV", "JUPYTERHUB_USER", "AIRUN_CALL_MODULES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    store = root / "airun.duckdb"
    monkeypatch.setenv("AIRUN_DB", str(store))
    monkeypatch.chdir(root)
    policy_mod.configure(None)
    auditlog.forget_secrets()
    history = Workflow.from_yaml(
        "name: history\nsteps:\n  - id: one\n    python: result = 41 + 1\n"
    ).run()
    yield World(root, store, outside, history.run_id)
    policy_mod.configure(None)
    auditlog.forget_secrets()


def airun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `airun` command in a real process."""
    return subprocess.run(
        [*AIRUN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def one_line(text: str) -> str:
    """The refusal text: one line, no traceback."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def run_refused(world: World, text: str, **kwargs: Any) -> tuple[Any, str]:
    """Run a workflow that must be refused, when it is parsed, planned or run: (result or
    None, the one error line)."""
    try:
        wf = Workflow.from_yaml(text)
        result = wf.run(raise_on_failure=False, **kwargs)
    except AirunError as exc:
        assert "\n" not in exc.message and "Traceback" not in exc.message, exc.message
        return None, exc.message
    assert result.status in ("failed", "rolled_back"), result.status
    assert result.error, "no error line"
    assert "Traceback" not in result.error
    return result, str(result.error)
