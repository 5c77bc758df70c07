"""Trusted files out of reach: the settings file (``airun.yaml``, ``pyproject.toml``), policy
files, ``.env``, the service's secret and the store are refused to every file capability and to
SQL, by real path and by device and inode (symlinks and hard links included); a folder holding
a link that leads outside the workspace or to a protected file is refused as a whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sec_support import World, run_refused

import airun_nb
from airun_nb import Workflow
from airun_nb.gates import links
from airun_nb.governance import policy as policy_mod


def _cap(capability: str, args: dict[str, object]) -> str:
    return (
        f"name: trusted\nsteps:\n  - id: act\n    capability: {capability}\n"
        f"    with: {json.dumps(args)}\n"
    )


def _sql(sql: str) -> str:
    return f"name: trusted_sql\nsteps:\n  - id: q\n    sql: {json.dumps(sql)}\n"


@pytest.fixture
def policy_file(world: World) -> Path:
    """A policy file kept beside the notebook, as the docs' ``%config`` example does."""
    path = world.root / "policy.yaml"
    path.write_text(
        "rules:\n  - {name: no-shell, principals: ['*'], capabilities: [shell.run], decision: deny}\n"
    )
    policy_mod.configure(path)
    return path


FILE_ATTACKS = [
    ("fs.write", {"path": "airun.yaml", "content": "approvals: {default: approve}"}),
    ("fs.write", {"path": "pyproject.toml", "content": "[tool.airun_nb]\nworkspace = '/'"}),
    ("fs.write", {"path": "keep/../airun.yaml", "content": "workspace: /"}),
    ("fs.copy", {"source": "data.txt", "destination": "airun.yaml"}),
    ("fs.move", {"source": "data.txt", "destination": "pyproject.toml"}),
    ("fs.mkdir", {"path": "airun.yaml"}),
    ("fs.write", {"path": "policy.yaml", "content": "rules: []"}),
    ("fs.delete", {"path": "policy.yaml"}),
    ("fs.read", {"path": ".env"}),
    ("fs.copy", {"source": ".env", "destination": "leak.txt"}),
    ("fs.write", {"path": ".env", "content": "API_TOKEN=attacker"}),
    ("fs.write", {"path": "airun.duckdb.service.json", "content": '{"url": "https://evil"}'}),
    ("fs.read", {"path": "env-link"}),
    ("fs.read", {"path": "airun.duckdb-hardlink"}),
    ("fs.write", {"path": "airun.duckdb-hardlink", "content": "gone"}),
    ("fs.read", {"path": "dotenv-hardlink"}),
    ("fs.copy", {"source": "keep", "destination": "copied"}),
    ("fs.copy", {"source": "linked", "destination": "copied"}),
    ("sys.archive.zip", {"source_paths": ["linked"], "output_path": "out.zip"}),
    ("sys.archive.zip", {"source_paths": ["keep"], "output_path": "out.zip"}),
]


@pytest.mark.parametrize(("capability", "args"), FILE_ATTACKS)
def test_a_file_capability_cannot_reach_a_trusted_file(
    world: World, policy_file: Path, capability: str, args: dict[str, object]
) -> None:
    """Settings, policy, .env, the service file and the store, through names, symlinks and hard
    links, are refused with one line, and nothing in or outside the workspace changes."""
    (world.root / ".env").write_text("API_TOKEN=tok-owner-1234567890\n")
    (world.root / "env-link").symlink_to(world.root / ".env")
    os.link(world.store, world.root / "airun.duckdb-hardlink")
    os.link(world.root / ".env", world.root / "keep" / "dotenv-hardlink")
    os.link(world.root / ".env", world.root / "dotenv-hardlink")
    (world.root / "linked").mkdir()
    (world.outside / "far.txt").write_text("far-away-content-7731\n")
    (world.root / "linked" / "out").symlink_to(world.outside / "far.txt")
    snap = world.snapshot()
    _result, error = run_refused(world, _cap(capability, args))
    assert "refused" in error, error
    world.assert_unchanged(snap)
    world.assert_absent("tok-owner-1234567890")
    world.assert_absent("far-away-content-7731")
    assert not (world.root / "copied").exists() and not (world.root / "out.zip").exists()


SQL_ATTACKS = [
    "COPY (SELECT 'approvals: {{default: approve}}' AS x) TO 'airun.yaml' (HEADER false)",
    "COPY (SELECT 1 AS x) TO 'pyproject.toml'",
    "COPY (SELECT 'rules: []' AS x) TO 'policy.yaml' (HEADER false)",
    "COPY (SELECT 1 AS x) TO 'airun.duckdb.service.json'",
    "SELECT * FROM read_text('.env')",
    "SELECT * FROM read_text('{root}/.env')",
    "SELECT * FROM read_text('policy.yaml')",
    "SELECT * FROM read_text('keep/out')",
    "COPY (SELECT 'planted' AS x) TO 'keep/out' (HEADER false)",
    "SELECT * FROM read_blob('airun.duckdb-hardlink')",
    "SELECT * FROM read_text('keep/dotenv-hardlink')",
    "SELECT * FROM read_text('keep/*')",
]


@pytest.mark.parametrize("sql", SQL_ATTACKS)
def test_sql_cannot_reach_a_trusted_file(world: World, policy_file: Path, sql: str) -> None:
    """A low-risk ``sql:`` step can neither write the settings or policy file nor read
    ``.env``, nor follow a symlink out of the workspace or a hard link to the store."""
    (world.root / ".env").write_text("API_TOKEN=tok-owner-1234567890\n")
    (world.outside / "far.txt").write_text("far-away-content-7731\n")
    (world.root / "keep" / "out").symlink_to(world.outside / "far.txt")
    os.link(world.store, world.root / "airun.duckdb-hardlink")
    os.link(world.root / ".env", world.root / "keep" / "dotenv-hardlink")
    snap = world.snapshot()
    _result, error = run_refused(world, _sql(sql.format(root=world.root)))
    assert "Permission" in error or "not allowed" in error or "disabled" in error, error
    world.assert_unchanged(snap)
    world.assert_absent("tok-owner-1234567890")
    world.assert_absent("far-away-content-7731")
    assert not (world.root / "airun.yaml").exists()
    assert policy_mod.current().rules  # the policy still has its rule


def test_sql_exec_cannot_write_the_settings_file(world: World) -> None:
    """``sql.exec`` on a workspace database cannot ``COPY ... TO 'airun.yaml'`` either."""
    snap = world.snapshot()
    text = _cap(
        "sql.exec",
        {"database": "local.duckdb", "sql": "COPY (SELECT 1 AS x) TO 'airun.yaml'"},
    )
    _result, error = run_refused(world, text)
    assert "sql.exec" in error
    assert not (world.root / "airun.yaml").exists()
    assert world.rows() == snap.rows


def test_sql_still_reads_and_writes_ordinary_workspace_files(world: World) -> None:
    """The confinement leaves the ordinary workspace usable: read a CSV, write a new file in a
    subfolder that holds nothing protected."""
    (world.root / ".env").write_text("API_TOKEN=x\n")
    (world.root / "prices.csv").write_text("item,price\na,2\n")
    (world.root / "out").mkdir()
    r = Workflow.from_yaml(
        _sql("COPY (SELECT * FROM read_csv('prices.csv')) TO 'out/copy.csv' (HEADER true)")
    ).run()
    assert r.status == "completed"
    assert (world.root / "out" / "copy.csv").read_text().startswith("item,price")


def test_a_planted_service_file_beside_the_store_is_not_trusted(world: World) -> None:
    """A ``<store>.service.json`` written into the workspace (by hand here: every capability
    refuses it) gives neither notification links to its address nor its secret to the
    service: the service keeps its secret in the user's config folder, readable by its owner
    only."""
    planted = world.store.with_name(world.store.name + ".service.json")
    planted.write_text(json.dumps({"secret": "planted-secret", "url": "https://evil.example"}))
    assert links.approval_link("r-1", "g", None, db=world.store) is None
    data = links.ensure_settings(world.store, "http://127.0.0.1:9")
    assert data["secret"] != "planted-secret"
    where = links.settings_file(world.store)
    assert world.root not in where.parents
    assert (where.stat().st_mode & 0o777) == 0o600
    link = links.approval_link("r-1", "g", None, db=world.store)
    assert link is not None and link.startswith("http://127.0.0.1:9/link/")
    assert json.loads(planted.read_text())["url"] == "https://evil.example"  # left unread


def test_a_runs_history_is_unchanged_after_the_refusals(world: World) -> None:
    """The refusals above are failed runs of their own; the earlier run stays as it was."""
    snap = world.snapshot()
    run_refused(world, _cap("fs.write", {"path": "airun.yaml", "content": "workspace: /"}))
    assert world.rows() == snap.rows
    assert "history" in airun_nb.runs()["workflow"].tolist()
