"""What only a server store has: migrations under concurrent start, a database of another
application refused, credentials never shown, and one line for each way the server can fail.

A real PostgreSQL server (see tests/support/postgres.py); real processes where several start
at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from airun_nb.errors import StoreError, StoreIncompatible
from airun_nb.settings.environment import StoreURL, redact_url
from airun_nb.store import transitions
from airun_nb.store.opening import open_store
from airun_nb.store.postgres.schema import PG_SCHEMA_VERSION
from airun_nb.store.schema import TABLES
from support import AIRUN
from support.postgres import PW_SECRET, PW_USER, REPO, database_url

OPENER = textwrap.dedent(
    """\
    import os, pathlib, sys, time
    folder = pathlib.Path(sys.argv[2])
    (folder / f"ready-{os.getpid()}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    from airun_nb.store.opening import open_store
    store = open_store(sys.argv[1])
    print(store.run_row("nothing"))
    """
)


@pytest.mark.slow
def test_four_processes_creating_the_store_at_once(pg_url: str, tmp_path: Path) -> None:
    """Four processes open a new, empty database at the same moment: each one succeeds, and the
    tables and the schema version are made exactly once (the migration runs under an advisory
    lock)."""
    script = tmp_path / "opener.py"
    script.write_text(OPENER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), pg_url, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    assert all(out.strip() == "None" for out, _ in outs)
    with psycopg.connect(pg_url) as con:
        meta = dict(con.execute("SELECT key, value FROM airun_meta").fetchall())
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        }
    assert meta["app"] == "airun_nb"
    assert meta["pg_schema_version"] == str(PG_SCHEMA_VERSION)
    assert set(TABLES) <= tables


def test_a_database_of_another_application_is_refused(pg_url: str) -> None:
    """A database that holds another application's tables is refused in one line naming them,
    and nothing is created in it."""
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(StoreIncompatible) as info:
        open_store(pg_url)
    message = info.value.message
    assert "another application" in message and "invoices" in message
    assert "\n" not in message
    with psycopg.connect(pg_url) as con:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert found == (1,)


def test_a_newer_column_is_added_when_an_older_store_opens(pg_url: str) -> None:
    """A store made before a column existed gets it when opened (migrations only add)."""
    open_store(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("ALTER TABLE runs DROP COLUMN forked_step")
    from airun_nb.store.postgres.backend import forget

    forget(pg_url)
    store = open_store(pg_url)
    transitions.commit(
        store,
        [{"t": "run", "run_id": "r", "workflow": "w", "status": "running", "forked_step": "s"}],
    )
    assert store.run_row("r")["forked_step"] == "s"


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    """A server that is not there: one line that names the store and says it cannot be
    reached."""
    url = f"postgresql://nobody@/airun?host={tmp_path}"
    with pytest.raises(StoreError) as info:
        open_store(url)
    message = info.value.message
    assert message.startswith(f"cannot open the store {url}: the server cannot be reached")
    assert "\n" not in message


def _password_role(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as con:
        con.execute(f"DROP ROLE IF EXISTS {PW_USER}")
        con.execute(f"CREATE ROLE {PW_USER} LOGIN PASSWORD '{PW_SECRET}' CREATEDB")
    return server


def test_a_wrong_password_is_one_line_and_never_shown(
    pg_server: str, pg_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A wrong password: one line that says the server refused it, with the URL's password
    shown as ***; the same URL with the right password opens the store, and no message or
    stored value holds the password."""
    _password_role(pg_server)
    name = pg_url.rsplit("?", 1)[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"ALTER DATABASE {name} OWNER TO {PW_USER}")
    base = database_url(pg_server, name)
    wrong = base.replace("postgres@", f"{PW_USER}:not-the-password@", 1)
    with pytest.raises(StoreError) as info:
        open_store(wrong)
    message = info.value.message
    assert "refused the password" in message
    assert "not-the-password" not in message and f"{PW_USER}:***@" in message
    right = base.replace("postgres@", f"{PW_USER}:{PW_SECRET}@", 1)
    store = open_store(right)
    assert str(store.path) == redact_url(right)
    assert PW_SECRET not in str(store.path) and PW_SECRET not in repr(store.path)
    transitions.commit(store, [{"t": "run", "run_id": "r", "workflow": "w", "status": "running"}])
    assert store.run_row("r")["status"] == "running"
    # The redacted URL names the same open store in this process (commands it prints work).
    assert open_store(str(store.path)) is store
    assert PW_SECRET not in capfd.readouterr().err


def test_a_redacted_url_is_never_taken_for_a_password() -> None:
    """A URL showing ``***`` for its password (as every message does) is refused in one line
    when no open store has it, rather than sent to the server as a password."""
    with pytest.raises(StoreError, match=r"never kept; give it in PGPASSWORD or ~/\.pgpass"):
        open_store("postgresql://bob:***@127.0.0.1:1/db")


def test_without_the_driver_a_url_says_what_to_install(tmp_path: Path) -> None:
    """Without psycopg (the postgres extra), a postgresql:// URL gives one line naming
    `pip install 'airun_nb[postgres]'`, from the CLI too."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\nfor m in ('psycopg', 'psycopg_pool'):\n    sys.modules[m] = None\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO!s}"}
    out = subprocess.run(
        [*AIRUN, "runs", "--db", "postgresql://bob:s3cret@127.0.0.1:1/team"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "pip install 'airun_nb[postgres]'" in lines[0]
    assert "postgresql://bob:***@127.0.0.1:1/team" in lines[0] and "s3cret" not in out.stderr


def test_the_server_gone_mid_run_is_one_line_and_loses_nothing(pg_url: str) -> None:
    """The server drops every connection of the store between two commits: the next write
    is one line (or goes through on a fresh connection), and every earlier commit is there."""
    store: Any = open_store(pg_url)
    transitions.commit(store, [{"t": "run", "run_id": "r", "workflow": "w", "status": "running"}])
    name = pg_url.rsplit("?", 1)[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
    try:
        transitions.commit(
            store, [{"t": "run", "run_id": "r", "workflow": "w", "status": "waiting"}]
        )
    except StoreError as exc:
        assert "\n" not in exc.message and str(StoreURL(pg_url)) in exc.message
    assert store.run_row("r")["status"] in ("running", "waiting")
