"""Confinement: what user-supplied paths and SQL may reach.

A workflow's text is untrusted. Three things keep it inside its bounds:

* **Protected paths.** The store file and everything beside it that carries its name (the
  journal slots ``<store>.journal``, ``.journal.2``... made yet or not, the lock
  ``<store>.lock``, the waiters folder, the undo and trash folder ``<store>.undo``, DuckDB's
  ``<store>.wal``, ``<store>.service.json``), the owner's trusted files (settings, policy,
  ``.env``, the signing key: :func:`trusted_files`) and the workspace root itself are refused
  as the source or target of every file capability and as a ``sql.exec`` database, and so is any
  folder that contains one of them. Paths are compared as resolved real paths, so ``..`` and
  symlinks do not get around it, and files by device and inode, so hard links do not either;
  a folder holding a link that leads outside the workspace or to a protected path is refused
  as a whole.
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


STORE_SUFFIXES = (".journal", ".lock", ".waiters", ".undo", ".wal", ".tmp", ".service.json")


def protected_roots(store_path: str | os.PathLike[str] | None) -> list[Path]:
    """The store and its sibling files and folders (existing or not), as real paths."""
    if store_path is None:
        return []
    store = _real(store_path)
    out = [store]
    for suffix in STORE_SUFFIXES:
        out.append(store.with_name(store.name + suffix))
    if store.parent.exists():
        for entry in store.parent.iterdir():  # damaged-journal copies and the like
            if entry.name.startswith(store.name + ".") and entry not in out:
                out.append(entry)
    return out


def trusted_files(workspace_root: Path | None = None) -> list[tuple[Path, str]]:
    """The owner's trusted files, made yet or not, as (real path, what it is): the settings
    file and every file that would become it when written (``airun.yaml``, ``pyproject.toml``
    in the working directory or a parent, ``AIRUN_CONFIG``), the policy files, the secrets file
    (``.env``, ``AIRUN_DOTENV``), the signing key and the user's airun_nb config folder."""
    from airun_nb.settings import environment
    from airun_nb.settings import file as settings

    out: list[tuple[Path, str]] = [(p, "a settings file") for p in settings.candidate_paths()]
    places = [Path.cwd()]
    if workspace_root is not None:
        places.append(Path(workspace_root))
        out += [
            (Path(workspace_root) / n, "a settings file") for n in ("airun.yaml", "pyproject.toml")
        ]
    try:
        out += [(p, "a policy file") for p in settings.policy_files()]
        out.append((settings.key_file(), "the signing key"))
    except AirunError:
        out.append((environment.key_file(), "the signing key"))
    out += [(place / ".env", "the secrets file .env") for place in places]
    out.append((settings.dotenv_path(), "the secrets file"))
    out.append((environment.config_dir(), "the airun_nb config folder"))
    return [(_real(p), what) for p, what in out]


def guarded(
    store_path: str | os.PathLike[str] | None, workspace_root: Path | None = None
) -> list[tuple[Path, str]]:
    """Every protected path, made yet or not, with what it is: the store's files first."""
    out: list[tuple[Path, str]] = []
    roots = protected_roots(store_path)
    for root in roots:
        out.append((root, "the store" if root == roots[0] else f"the store's file {root.name}"))
    return out + trusted_files(workspace_root)


def _ident(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def identities(paths: list[tuple[Path, str]]) -> dict[tuple[int, int], str]:
    """(device, inode) -> what, for the protected files that exist (hard links share them)."""
    out: dict[tuple[int, int], str] = {}
    for path, what in paths:
        if path.is_file():
            ident = _ident(path)
            if ident is not None:
                out.setdefault(ident, what)
    return out


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def protection(
    real: Path, *, store_path: str | os.PathLike[str] | None, workspace_root: Path | None
) -> str | None:
    """Why ``real`` (a resolved path) is protected, or None when it is not: it is, is inside,
    or holds a protected path, or it is a hard link to a protected file (same device and
    inode)."""
    real = _real(real)
    if workspace_root is not None and real == _real(workspace_root):
        return "is the workspace root"
    if store_path is not None:
        store = _real(store_path)
        if real.parent == store.parent and real.name.startswith(store.name + ".journal"):
            return f"is the store's file {real.name}"  # every journal slot, made yet or not
    paths = guarded(store_path, workspace_root)
    for root, what in paths:
        if real == root:
            return f"is {what}"
        if root in real.parents:
            return f"is inside {what}"
        if real in root.parents and root.exists():
            return f"holds {what}"
    ident = _ident(real) if real.is_file() else None
    if ident is not None:
        linked = identities(paths).get(ident)
        if linked is not None:
            return f"is a hard link to {linked}"
    return None


def tree_problem(
    real: Path, *, store_path: str | os.PathLike[str] | None, workspace_root: Path
) -> str | None:
    """Why a folder may not be copied, moved, archived or deleted as a whole: it holds a
    symlink that leads outside the workspace or to a protected path, or a hard link to a
    protected file. None for a file or a clean folder."""
    if not real.is_dir():
        return None
    root = _real(workspace_root)
    paths = guarded(store_path, workspace_root)
    ids = identities(paths)
    for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
        for name in dirnames + filenames:
            entry = Path(dirpath) / name
            rel = entry.relative_to(real)
            if entry.is_symlink():
                target = _real(entry)
                if not _within(target, root):
                    return f"holds {rel}, a link that leads outside the workspace"
                why = protection(target, store_path=store_path, workspace_root=workspace_root)
                if why is not None:
                    return f"holds {rel}, a link to a path that {why}"
            elif name in filenames:
                what = ids.get(_ident(entry) or (-1, -1))
                if what is not None:
                    return f"holds {rel}, a hard link to {what}"
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
    if why is None and workspace_root is not None:
        why = tree_problem(real, store_path=store_path, workspace_root=workspace_root)
    if why is not None:
        raise ProtectedPathError(f"{capability}: '{field}' {value} {why}; refused")
    return real


# -- DuckDB -------------------------------------------------------------------------------------
def allowed(
    workspace_root: Path, store_path: str | os.PathLike[str] | None
) -> tuple[list[str], list[str]]:
    """(allowed_directories, allowed_paths) for DuckDB: the workspace minus protected paths.

    DuckDB compares path names, and follows links. So a folder is allowed as a whole only when
    nothing under it is protected (made yet or not), a symlink, or a hard link to a protected
    file; the other folders are allowed entry by entry (SQL can read and write the files
    already there and anything in their clean subfolders, but cannot create a new file beside
    the store or the settings), and links are left out."""
    root = _real(workspace_root)
    paths = guarded(store_path, root)
    blocked = {str(p) for p, _ in paths if _within(p, root)}
    on_the_way = {str(parent) for b in blocked for parent in Path(b).parents}
    ids = identities(paths)
    inodes = {ino for _, ino in ids}

    # Plain strings and scandir's own entry data: one pass over the workspace, no stat() but
    # for a file whose inode is a protected file's.
    def visit(folder: str) -> tuple[bool, list[str], list[str]]:
        clean = folder not in on_the_way
        dirs: list[str] = []
        files: list[str] = []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return False, dirs, files
        for entry in entries:
            path = entry.path
            if path in blocked or entry.is_symlink():
                clean = False
                continue
            if entry.is_dir(follow_symlinks=False):
                sub_clean, sub_dirs, sub_files = visit(path)
                if sub_clean:
                    dirs.append(path + os.sep)
                else:
                    clean = False
                    dirs += sub_dirs
                    files += sub_files
                continue
            if entry.inode() in inodes:
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) in ids:
                    clean = False
                    continue
            files.append(path)
        return clean, dirs, files

    whole, dirs, files = visit(str(root))
    if whole:
        return [str(root) + os.sep], []
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
