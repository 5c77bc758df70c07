"""Confinement: what user-supplied paths and SQL may reach.

A workflow's text is untrusted. Three things keep it inside its bounds:

* **Protected paths.** The store file and everything beside it that carries its name (the
  journal slots ``<store>.journal``, ``.journal.2``... made yet or not, the lock
  ``<store>.lock``, the waiters folder, the undo and trash folder ``<store>.undo``, DuckDB's
  ``<store>.wal``) and the workspace root itself are refused
  as the source or target of every file capability and as a ``sql.exec`` database, and so is any
  folder that contains one of them (deleting it would delete the store). Paths are compared as
  resolved real paths, so ``..`` and symlinks do not get around it.
* **DuckDB connections that run user SQL** (``sql:`` steps, ``sql.exec``, its undo) run with
  ``enable_external_access`` off, ``allowed_directories`` / ``allowed_paths`` set to the
  workspace minus the protected paths, extension autoload and autoinstall off, and the
  configuration locked. Registered DataFrames and step outputs stay readable.
* **SQLite connections** of ``sql.exec`` get an authorizer that lets ``ATTACH`` (and
  ``VACUUM INTO``) reach only unprotected files inside the workspace.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import duckdb

from airun_nb.errors import AirunError
from airun_nb.store.schema import NO_EXTENSIONS


class ProtectedPathError(AirunError):
    """A path the runtime keeps for itself (the store and its files, the workspace root)."""

    exit_kind = "security"


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def protected_roots(store_path: str | os.PathLike[str] | None) -> list[Path]:
    """The store and its sibling files and folders (existing or not), as real paths."""
    if store_path is None:
        return []
    store = _real(store_path)
    out = [store]
    for suffix in (".journal", ".lock", ".waiters", ".undo", ".wal", ".tmp"):
        out.append(store.with_name(store.name + suffix))
    if store.parent.exists():
        for entry in store.parent.iterdir():  # damaged-journal copies and the like
            if entry.name.startswith(store.name + ".") and entry not in out:
                out.append(entry)
    return out


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def protection(
    real: Path, *, store_path: str | os.PathLike[str] | None, workspace_root: Path | None
) -> str | None:
    """Why ``real`` (a resolved path) is protected, or None when it is not."""
    real = _real(real)
    if workspace_root is not None and real == _real(workspace_root):
        return "is the workspace root"
    if store_path is None:
        return None
    store = _real(store_path)
    if real.parent == store.parent and real.name.startswith(store.name + ".journal"):
        return f"is the store's file {real.name}"  # every journal slot, made yet or not
    for root in protected_roots(store_path):
        what = "the store" if root == store else f"the store's file {root.name}"
        if real == root:
            return f"is {what}"
        if root in real.parents:
            return f"is inside {what}"
        if real in root.parents and root.exists():
            return f"holds {what}"
    return None


def check(
    real: Path,
    *,
    value: object,
    field: str,
    capability: str,
    store_path: str | os.PathLike[str] | None,
    workspace_root: Path | None,
) -> Path:
    """``real`` if it is not protected, else :class:`ProtectedPathError` (one line)."""
    why = protection(real, store_path=store_path, workspace_root=workspace_root)
    if why is not None:
        raise ProtectedPathError(f"{capability}: '{field}' {value} {why}; refused")
    return real


# -- DuckDB -------------------------------------------------------------------------------------
def allowed(
    workspace_root: Path, store_path: str | os.PathLike[str] | None
) -> tuple[list[str], list[str]]:
    """(allowed_directories, allowed_paths) for DuckDB: the workspace minus protected paths.

    Where the workspace holds the store, the folders on the way to it are not allowed as a
    whole: each of their other entries is allowed by name (so SQL can still read and write
    files there that already exist, and anything in their subfolders)."""
    root = _real(workspace_root)
    blocked = [p for p in protected_roots(store_path) if _within(p, root)]
    if not blocked:
        return [str(root) + os.sep], []
    dirs: list[str] = []
    files: list[str] = []

    def visit(folder: Path) -> None:
        try:
            entries = list(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            real = _real(entry)
            if any(_within(real, b) for b in blocked):
                continue
            if any(b != real and real in b.parents for b in blocked):
                visit(real)  # a folder on the way to a protected path
            elif real.is_dir():
                dirs.append(str(real) + os.sep)
            else:
                files.append(str(real))

    visit(root)
    return dirs, files


def confine_duckdb(
    con: duckdb.DuckDBPyConnection,
    workspace_root: Path,
    store_path: str | os.PathLike[str] | None,
) -> duckdb.DuckDBPyConnection:
    """Restrict a fresh connection to the workspace and lock its configuration."""
    dirs, files = allowed(workspace_root, store_path)
    if dirs:
        con.execute("SET allowed_directories = ?", [dirs])
    if files:
        con.execute("SET allowed_paths = ?", [files])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def duckdb_connect(
    database: str, workspace_root: Path, store_path: str | os.PathLike[str] | None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for user SQL: no extensions, only the workspace reachable."""
    con = duckdb.connect(database, config=dict(NO_EXTENSIONS))
    try:
        return confine_duckdb(con, workspace_root, store_path)
    except BaseException:
        con.close()
        raise


# -- SQLite -------------------------------------------------------------------------------------
def sqlite_connect(
    path: Path, workspace_root: Path, store_path: str | os.PathLike[str] | None
) -> sqlite3.Connection:
    """A SQLite connection whose ATTACH / VACUUM INTO only reach unprotected workspace files."""
    con = sqlite3.connect(path)
    root = _real(workspace_root)

    def authorize(action: int, arg1: Any, arg2: Any, db: Any, trigger: Any) -> int:
        if action != sqlite3.SQLITE_ATTACH:
            return sqlite3.SQLITE_OK
        target = str(arg1 or "")
        if target in ("", ":memory:"):
            return sqlite3.SQLITE_OK
        if target.startswith("file:"):
            return sqlite3.SQLITE_DENY
        real = _real(target if os.path.isabs(target) else Path.cwd() / target)
        if not _within(real, root) or protection(real, store_path=store_path, workspace_root=root):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    con.set_authorizer(authorize)
    return con
