"""A real PostgreSQL server for the tests, and the ``backend`` parameter.

``AIRUN_TEST_PG`` (a server URL CI provides, e.g. ``postgresql://postgres@/postgres?host=DIR``)
is used when set; else a temporary cluster is made with Debian's ``initdb`` and started on a Unix
socket in a temporary folder (as the ``postgres`` user when the tests run as root, since the
server refuses root), and stopped at the end of the session. Each test gets a database of its
own (``CREATE DATABASE``). No mock of the database anywhere.

Run as a script it starts and stops a server for ``.ci/run`` (standard library only):
``python3 tests/support/postgres.py start DIR`` prints the server's URL;
``python3 tests/support/postgres.py stop DIR`` stops it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]  # the checkout: what subprocesses import
PW_USER = "airun_pw"  # a role that must give a password (scram), for the bad-password test
PW_SECRET = "right-horse-battery"


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def start(folder: Path) -> str:
    """Make and start a cluster in ``folder``; return the URL of its ``postgres`` database."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)  # the server user writes its socket here; the tests connect
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(
        _as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    hba = data / "pg_hba.conf"
    hba.write_text(
        f"local all {PW_USER} scram-sha-256\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n"
    )
    options = f"-k {folder} -c listen_addresses='' -c max_connections=300 -c fsync=off"
    subprocess.run(
        _as_server_user(
            [pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    return f"postgresql://postgres@/postgres?host={folder}"


def stop(folder: Path) -> None:
    pg_ctl = _bin("pg_ctl")
    if pg_ctl and (folder / "data").is_dir():
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(folder / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
        )


def database_url(server: str, name: str) -> str:
    """``server``'s URL with the database ``name`` in place of its own."""
    head, _, tail = server.partition("://")
    netloc, _, rest = tail.partition("/")
    query = rest.partition("?")[2]
    return f"{head}://{netloc}/{name}" + (f"?{query}" if query else "")


def create_database(server: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return database_url(server, name)


def drop_database(server: str, url: str) -> None:
    import psycopg

    from airun_nb.store.postgres.backend import forget

    forget(url)
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- fixtures ---------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # run as a script by .ci/run, before the test environment exists
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def pg_server() -> Iterator[str]:
        """The URL of a PostgreSQL server's ``postgres`` database (CI's, or one started here)."""
        given = os.environ.get("AIRUN_TEST_PG")
        if given:
            yield given
            return
        if _bin("initdb") is None:
            pytest.skip("no PostgreSQL server: set AIRUN_TEST_PG or apt-get install postgresql")
        folder = Path(tempfile.mkdtemp(prefix="airun-pg-"))
        try:
            yield start(folder)
        finally:
            stop(folder)
            shutil.rmtree(folder, ignore_errors=True)

    @pytest.fixture
    def pg_url(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
        """A fresh, empty database on the test server; ``AIRUN_DB`` names it."""
        url = create_database(pg_server)
        monkeypatch.setenv("AIRUN_DB", url)
        monkeypatch.delenv("AIRUN_LOCK_TIMEOUT", raising=False)
        monkeypatch.delenv("AIRUN_CRASH_AT", raising=False)
        yield url
        drop_database(pg_server, url)

    @pytest.fixture(params=["duckdb", "postgres"])
    def backend(request: pytest.FixtureRequest) -> str:
        """Which backend holds the store: the DuckDB file, or a PostgreSQL database."""
        return str(request.param)

    @pytest.fixture
    def store_db(
        backend: str,
        request: pytest.FixtureRequest,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Any:
        """A fresh store of the ``backend`` in force (a DuckDB file in tmp_path, or a database
        URL); ``AIRUN_DB`` names it. A test module runs wholly on both backends by overriding
        ``db`` with it: ``@pytest.fixture def db(store_db): return store_db``."""
        if backend == "postgres":
            return request.getfixturevalue("pg_url")
        path = tmp_path / "s.duckdb"  # as the `db` fixture of tests/conftest.py
        monkeypatch.setenv("AIRUN_DB", str(path))
        monkeypatch.delenv("AIRUN_LOCK_TIMEOUT", raising=False)
        monkeypatch.delenv("AIRUN_CRASH_AT", raising=False)
        return path


if __name__ == "__main__":
    verb, where = sys.argv[1], Path(sys.argv[2])
    if verb == "start":
        print(start(where))
    else:
        stop(where)
