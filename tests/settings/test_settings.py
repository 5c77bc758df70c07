"""Settings in one place: one typed object from the environment and ``%config``; a kernel's
``%config`` stays in the kernel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airun_nb.settings import environment


def test_the_settings_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A changed variable is seen at once; values get their types and defaults."""
    monkeypatch.setenv("AIRUN_DB", str(tmp_path / "a.duckdb"))
    monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "7.5")
    monkeypatch.setenv("AIRUN_SYNC", "group")
    now = environment.current()
    assert (now.db, now.lock_timeout, now.sync_mode) == (tmp_path / "a.duckdb", 7.5, "group")
    monkeypatch.setenv("AIRUN_DB", str(tmp_path / "b.duckdb"))
    monkeypatch.setenv("AIRUN_LOCK_TIMEOUT", "soon")
    monkeypatch.delenv("AIRUN_SYNC")
    now = environment.current()
    assert (now.db, now.lock_timeout, now.sync_mode) == (tmp_path / "b.duckdb", 30.0, "group")


def test_config_db_stays_in_the_kernel(
    ipython: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`%config Workflow.db` picks this kernel's store without writing AIRUN_DB into the
    environment that the kernel's child processes inherit."""
    monkeypatch.chdir(tmp_path)
    before = os.environ.get("AIRUN_DB")
    target = tmp_path / "mine.duckdb"
    try:
        ipython.run_line_magic("config", f'Workflow.db = "{target}"')
        assert os.environ.get("AIRUN_DB") == before
        assert environment.current().db == target
        ipython.run_cell_magic("workflow", "cfg", "steps:\n  - id: a\n    python: 'result = 1'\n")
        import airun_nb

        assert airun_nb.runs(db=target)["workflow"].tolist() == ["cfg"]
    finally:
        ipython.run_line_magic("config", "Workflow.db = None")
    assert environment.current().db != target
