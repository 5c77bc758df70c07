"""Protected paths: the store, its journal, lock, undo and trash folders, and the workspace root
are refused to every file capability, through ``..`` and symlinks too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sec_support import World, run_refused

import airun_nb
from airun_nb import Workflow


def _wf(capability: str, args: dict[str, object]) -> str:
    return (
        f"name: paths\nsteps:\n  - id: act\n    capability: {capability}\n"
        f"    with: {json.dumps(args)}\n"
    )


ATTACKS = [
    ("fs.write", {"path": "airun.duckdb", "content": "gone"}),
    ("fs.write", {"path": "airun.duckdb.journal", "content": "garbage"}),
    ("fs.write", {"path": "airun.duckdb.lock", "content": "x"}),
    # a journal slot no process has made yet: its records would be folded into the store
    ("fs.write", {"path": "airun.duckdb.journal.3", "content": "forged records"}),
    ("fs.copy", {"source": "data.txt", "destination": "airun.duckdb.journal.2"}),
    ("fs.write", {"path": "airun.duckdb.undo/r/s/before/x", "content": "x"}),
    ("fs.write", {"path": "keep/../airun.duckdb", "content": "gone"}),
    ("fs.write", {"path": "store-link", "content": "gone"}),
    ("fs.write", {"path": "journal-link", "content": "gone"}),
    ("fs.delete", {"path": "airun.duckdb"}),
    ("fs.delete", {"path": "airun.duckdb.journal"}),
    ("fs.delete", {"path": "airun.duckdb.undo"}),
    ("fs.delete", {"path": "."}),
    ("fs.delete", {"path": "keep/.."}),
    ("fs.delete", {"path": "store-link"}),
    ("fs.move", {"source": "data.txt", "destination": "airun.duckdb"}),
    ("fs.move", {"source": "airun.duckdb", "destination": "stolen.duckdb"}),
    ("fs.move", {"source": ".", "destination": "keep/root"}),
    ("fs.move", {"source": "data.txt", "destination": "airun.duckdb.journal"}),
    ("fs.copy", {"source": "data.txt", "destination": "airun.duckdb"}),
    ("fs.copy", {"source": "airun.duckdb", "destination": "copy.duckdb"}),
    ("fs.copy", {"source": ".", "destination": "keep/all"}),
    ("fs.copy", {"source": "data.txt", "destination": "airun.duckdb.lock"}),
    ("fs.mkdir", {"path": "airun.duckdb.undo/new"}),
    ("fs.mkdir", {"path": "."}),
    ("fs.read", {"path": "airun.duckdb.journal"}),
    ("fs.read", {"path": "store-link"}),
]


@pytest.mark.parametrize(("capability", "args"), ATTACKS)
def test_a_file_capability_cannot_touch_the_store_or_the_root(
    world: World, capability: str, args: dict[str, object]
) -> None:
    airun_nb.steps()
    (world.root / "store-link").symlink_to(world.store)
    (world.root / "journal-link").symlink_to(world.store.with_name("airun.duckdb.journal"))
    snap = world.snapshot()
    _result, error = run_refused(world, _wf(capability, args))
    assert "refused" in error
    assert "store" in error or "workspace root" in error
    world.assert_unchanged(snap)
    assert airun_nb.runs()["workflow"].tolist().count("history") == 1


def test_a_folder_holding_the_store_cannot_be_deleted_or_moved(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (world.root / "state").mkdir()
    store = world.root / "state" / "s.duckdb"
    monkeypatch.setenv("AIRUN_DB", str(store))
    Workflow.from_yaml("name: h\nsteps:\n  - id: a\n    python: result = 1\n").run()
    for cap, args in [
        ("fs.delete", {"path": "state"}),
        ("fs.move", {"source": "state", "destination": "elsewhere"}),
    ]:
        r = Workflow.from_yaml(_wf(cap, args)).run(raise_on_failure=False)
        assert r.status in ("failed", "rolled_back")
        assert "holds the store" in str(r.error)
        assert store.exists()
    assert airun_nb.runs()["workflow"].tolist().count("h") == 1


def test_the_workspace_root_is_protected_when_the_store_lives_elsewhere(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_DB", str(tmp_path / "elsewhere.duckdb"))

    def contents() -> list[str]:
        # The first store's own side files (its DuckDB write-ahead log, journal, lock) come
        # and go as that store checkpoints: they are the store's, not the workspace's.
        side = world.store.name + "."
        return sorted(p.name for p in world.root.iterdir() if not p.name.startswith(side))

    before = contents()
    r = Workflow.from_yaml(_wf("fs.delete", {"path": "."})).run(raise_on_failure=False)
    assert r.status in ("failed", "rolled_back")
    assert "is the workspace root; refused" in str(r.error)
    assert contents() == before
    assert world.store.exists() and (world.root / "data.txt").read_text() == "precious data\n"


def test_ordinary_files_next_to_the_store_still_work(world: World) -> None:
    for name in ("report.txt", "airun.duckdb-notes.txt", "keep/airun.duckdb"):
        Workflow.from_yaml(_wf("fs.write", {"path": name, "content": "ok"})).run()
        assert (world.root / name).read_text() == "ok"
