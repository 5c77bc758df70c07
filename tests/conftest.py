"""Shared fixtures: a store path in tmp_path and a real IPython shell with airun_nb loaded."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Tests play several users by setting AIRUN_USER, which only the `env` identity mode reads (the
# default, `os`, is the login). Subprocesses and kernels inherit it. tests/security sets the mode
# explicitly where it tests the modes themselves.
os.environ["AIRUN_IDENTITY"] = "env"
# The user's config folder (signing key, the service's secret) is the suite's own, not the
# home folder of whoever runs it. Subprocesses, kernels and servers inherit it.
os.environ.setdefault("AIRUN_CONFIG_DIR", tempfile.mkdtemp(prefix="airun-config-"))


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh store path; ``AIRUN_DB`` points at it so the default store is this one too."""
    path = tmp_path / "s.duckdb"
    monkeypatch.setenv("AIRUN_DB", str(path))
    monkeypatch.delenv("AIRUN_LOCK_TIMEOUT", raising=False)
    monkeypatch.delenv("AIRUN_CRASH_AT", raising=False)
    return path


@pytest.fixture
def ipython(db: Path):
    """The (process-wide) real IPython shell, with an empty user namespace and the extension."""
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()  # starts the shell on first use, then returns the same one
    shell.reset(new_session=False)
    shell.run_line_magic("load_ext", "airun_nb")
    _default_config(shell)
    yield shell
    _default_config(shell)
    shell.reset(new_session=False)


def _default_config(shell) -> None:  # type: ignore[no-untyped-def]
    """Every test starts with the kernel's %config defaults (the shell is shared)."""
    for line in ("Workflow.store_code = False", "Workflow.db = None", "Workflow.policy = None"):
        shell.run_line_magic("config", line)


@pytest.fixture
def python_exe() -> str:
    return sys.executable


# The suite's workflows call functions of the standard library and of its own helper modules
# (`call: os:getpid`, `call: support.faults:step`): the owner allows every module here. The
# default (no module: only the notebook's functions) is what tests/security checks.
os.environ.setdefault("AIRUN_CALL_MODULES", "*")


# A PostgreSQL server (CI's AIRUN_TEST_PG, or one started for the session), a fresh database
# per test, and the `backend` parameter ("duckdb", "postgres") of store-facing tests.
from support.postgres import backend, pg_server, pg_url, store_db  # noqa: E402, F401
