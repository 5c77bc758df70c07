"""The team-store examples of docs/team.md and README.md run as a reader would run them, against
a real PostgreSQL server.

The shell blocks run in bash with the test server reached through the ``PG*`` variables (as
the docs tell readers to do), the database name ``airun_team`` swapped for a fresh one, and
``pip install`` checking that the extra's drivers are importable rather than installing; the
Python block runs in a fresh interpreter and prints what its comments say; the settings block
names the store that `default_db()` then opens.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from support.postgres import REPO, _bin

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```(sh|python|yaml)[^\n]*\n(.*?)^```", re.M | re.S)
_SAYS = re.compile(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$", re.M)
PIP = "pip() { python -c 'import psycopg, psycopg_pool, adbc_driver_postgresql'; }\n"


def _blocks(kind: str) -> list[tuple[str, str]]:
    out = []
    for name in ("docs/team.md", "README.md"):
        text = (ROOT / name).read_text()
        if name == "docs/team.md":  # its section "The team store" (others have their tests)
            start = text.index("## The team store")
            end = text.find("\n## ", start + 1)
            text = text[: end if end > 0 else len(text)]
            text = "\n" * text[:start].count("\n") + text[start:]  # lines keep their numbers
        for m in _FENCE.finditer(text):
            mine = name == "docs/team.md" or "postgresql://" in m.group(2)
            if m.group(1) == kind and mine:
                line = text[: m.start()].count("\n") + 1
                out.append((f"{name}:{line}", textwrap.dedent(m.group(2))))
    return out


@pytest.fixture
def team(pg_server: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A database name no test used yet, and an environment reaching the server by PG*."""
    parts = urlsplit(pg_server)
    env = {k: v for k, v in os.environ.items() if k != "AIRUN_DB"}
    host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    env.update(PGHOST=host, PGUSER=parts.username or "postgres")
    if parts.port:
        env["PGPORT"] = str(parts.port)
    env["PYTHONPATH"] = str(REPO)
    folders = [str(Path(sys.executable).parent), str(Path(_bin("createdb") or "x").parent)]
    env["PATH"] = os.pathsep.join([*folders, env.get("PATH", "")])
    name = "team_" + uuid.uuid4().hex[:10]
    yield name, env
    with psycopg.connect(pg_server, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_the_docs_have_team_store_examples() -> None:
    assert len(_blocks("sh")) >= 3 and _blocks("python") and _blocks("yaml")


@pytest.mark.parametrize("where", [w for w, _ in _blocks("sh")])
def test_shell_examples_run(where: str, team: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """Each shell block runs to the end with exit 0 (`set -e`), on a fresh database."""
    name, env = team
    blocks = dict(_blocks("sh"))
    script = blocks[where].replace("airun_team", name)
    if "createdb" not in script:  # a block that uses the store the set-up block made
        script = f"createdb {name}\n{script}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", PIP + script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, f"{where}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr


def test_python_example_runs(team: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """The Python block runs against the team store and prints what its comments say."""
    name, env = team
    subprocess.run(["createdb", name], env=env, check=True, timeout=120)
    ((where, code),) = _blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", code.replace("airun_team", name)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, f"{where}:\n{done.stderr}"
    for said in _SAYS.findall(code):
        assert said in done.stdout, f"{where}: expected {said!r} in:\n{done.stdout}"


def test_settings_example_names_the_team_store(
    team: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """With the settings block as airun.yaml (and no AIRUN_DB), `airun runs` reads the team
    store it names."""
    name, env = team
    subprocess.run(["createdb", name], env=env, check=True, timeout=120)
    ((where, text),) = _blocks("yaml")
    (tmp_path / "airun.yaml").write_text(text.replace("airun_team", name))
    probe = (
        "from airun_nb.settings.environment import default_db, StoreURL\n"
        "from airun_nb.store.opening import open_store\n"
        "where = default_db(); assert isinstance(where, StoreURL), where\n"
        "print(where, open_store(where).latest_unfinished_run())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, f"{where}:\n{done.stderr}"
    assert done.stdout.strip() == f"postgresql:///{name} None"
