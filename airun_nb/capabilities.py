"""Capabilities: built-in governed actions, each with a declared risk and an automatic undo.

A capability runs in three parts. ``prepare`` checks its arguments (paths must stay inside the
workspace) and captures what the undo will need (the previous content of a file, a snapshot of
the tables a SQL statement touches) *before* anything changes; the engine stores that undo
record durably with the step. ``apply`` does the action. ``undo`` reverses it from the stored
record, so a rollback after a restart does what it would have done before. A step that was in
flight when its process died reuses the undo record of its first attempt.

Risk levels: ``low`` read-only, ``medium`` reversible, ``high`` irreversible or external,
``critical``. Step kinds are capabilities too for the policy: ``call`` is ``python.call``,
``python`` is ``python.exec``, ``sql`` is ``sql.query``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from .auditlog import redact
from .errors import AirunError
from .workspace import Workspace

RISKS = ("low", "medium", "high", "critical")
SNAPSHOT_MAX_ROWS = 100_000  # default; AIRUN_SNAPSHOT_MAX_ROWS or `snapshot_max_rows` change it


class CapabilityError(AirunError):
    """A capability was misused (unknown name, bad arguments, failed undo...)."""


@dataclass
class Context:
    """What a capability may use: the workspace, where to keep undo data, who runs it."""

    workspace: Workspace
    undo_dir: Path
    store: Any = None  # the Store, for snapshots kept as tables

    def undo_path(self, *parts: str) -> Path:
        p = self.undo_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


Prepare = Callable[[dict[str, Any], Context], dict[str, Any] | None]
Apply = Callable[[dict[str, Any], Context], Any]
Undo = Callable[[dict[str, Any], Context], None]


@dataclass
class Capability:
    name: str
    apply: Apply
    risk: str = "medium"
    prepare: Prepare | None = None
    undo: Undo | None = None
    description: str = ""

    @property
    def reversible(self) -> bool:
        return self.undo is not None


_REGISTRY: dict[str, Capability] = {}
# The seed dialect's capability names.
ALIASES = {
    "io.fs.write_file": "fs.write",
    "io.fs.read_file": "fs.read",
    "io.fs.copy": "fs.copy",
    "io.fs.copy_file": "fs.copy",
    "io.fs.move": "fs.move",
    "io.fs.move_file": "fs.move",
    "io.fs.delete": "fs.delete",
    "io.fs.delete_file": "fs.delete",
    "io.fs.mkdir": "fs.mkdir",
    "io.fs.make_dir": "fs.mkdir",
    "net.http.request": "http.request",
    "io.http.request": "http.request",
    "sys.shell.run": "shell.run",
    "io.shell.run": "shell.run",
    "data.sql.exec": "sql.exec",
}
# Step kinds as the policy sees them.
KIND_CAPABILITY = {"call": "python.call", "python": "python.exec", "sql": "sql.query"}
KIND_RISK = {"python.call": "medium", "python.exec": "high", "sql.query": "low"}


def register(
    name: str,
    fn: Apply | Callable[..., Any],
    *,
    risk: str = "medium",
    undo: Callable[..., Any] | None = None,
    prepare: Callable[..., Any] | None = None,
    description: str = "",
    plain: bool = True,
) -> Capability:
    """Register a capability. With ``plain`` (the default) ``fn(**with)`` is called, ``undo``
    is called as ``undo(**with, result=...)`` with the step's arguments and result."""
    if risk not in RISKS:
        raise CapabilityError(f"risk must be one of {', '.join(RISKS)}")
    if not re.match(r"^[A-Za-z_][\w.\-]*$", name):
        raise CapabilityError(f"bad capability name {name!r}")
    if plain:
        user_fn: Callable[..., Any] = fn
        user_undo, user_prepare = undo, prepare

        def apply_(args: dict[str, Any], ctx: Context) -> Any:
            return user_fn(**args)

        def prepare_(args: dict[str, Any], ctx: Context) -> dict[str, Any] | None:
            extra = user_prepare(**args) if user_prepare else None
            return {"args": args, "prepared": extra}

        def undo_(rec: dict[str, Any], ctx: Context) -> None:
            assert user_undo is not None
            kwargs = dict(rec.get("args") or {})
            if rec.get("prepared") is not None:
                kwargs["prepared"] = rec["prepared"]
            if "result" in rec:
                kwargs["result"] = rec["result"]
            user_undo(**kwargs)

        cap = Capability(name, apply_, risk, prepare_, undo_ if undo else None, description)
    else:
        cap = Capability(name, fn, risk, prepare, undo, description)
    _REGISTRY[name] = cap
    return cap


def get(name: str) -> Capability:
    real = ALIASES.get(name, name)
    cap = _REGISTRY.get(real)
    if cap is None:
        known = ", ".join(sorted(_REGISTRY))
        raise CapabilityError(f"unknown capability '{name}' (available: {known})")
    return cap


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


# -- files -------------------------------------------------------------------------------------
def _backup(path: Path, ctx: Context, tag: str) -> str | None:
    if not path.exists() and not path.is_symlink():
        return None
    dest = ctx.undo_path(tag, path.name)
    if dest.exists():
        return str(dest)  # an earlier attempt already kept the original
    if path.is_dir():
        shutil.copytree(path, dest, symlinks=True)
    else:
        shutil.copy2(path, dest, follow_symlinks=False)
    return str(dest)


def _restore(path: Path, backup: str | None) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if backup:
        src = Path(backup)
        if src.is_dir():
            shutil.copytree(src, path, symlinks=True)
        else:
            shutil.copy2(src, path, follow_symlinks=False)


def _missing_parents(path: Path) -> list[str]:
    out = []
    p = path.parent
    while not p.exists():
        out.append(str(p))
        p = p.parent
    return out


def _remove_dirs(dirs: list[str]) -> None:
    for d in dirs:  # deepest first
        with contextlib.suppress(OSError):
            os.rmdir(d)


def _fs_read_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.workspace.path(args.get("path"))
    if args.get("binary"):
        return path.read_bytes()
    return path.read_text(encoding=args.get("encoding", "utf-8"))


def _fs_write_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = ctx.workspace.path(args.get("path"))
    if "content" not in args:
        raise CapabilityError("fs.write needs 'content'")
    return {
        "path": str(path),
        "backup": _backup(path, ctx, "before"),
        "created_dirs": _missing_parents(path),
    }


def _fs_write_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.workspace.path(args.get("path"))
    path.parent.mkdir(parents=True, exist_ok=True)
    content = args["content"]
    if isinstance(content, (bytes, bytearray)):
        path.write_bytes(content)
        size = len(content)
    else:
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        with open(path, "a" if args.get("append") else "w", encoding="utf-8") as f:
            f.write(text)
        size = len(text.encode())
    return {"path": ctx.workspace.relative(path), "bytes": size}


def _fs_write_undo(rec: dict[str, Any], ctx: Context) -> None:
    _restore(Path(rec["path"]), rec.get("backup"))
    _remove_dirs(rec.get("created_dirs") or [])


def _fs_copy_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    src = ctx.workspace.path(args.get("source"), field="source")
    dst = ctx.workspace.path(args.get("destination"), field="destination")
    if not src.exists():
        raise CapabilityError(f"fs.copy: {args.get('source')} does not exist")
    return {
        "path": str(dst),
        "backup": _backup(dst, ctx, "before"),
        "created_dirs": _missing_parents(dst),
    }


def _fs_copy_apply(args: dict[str, Any], ctx: Context) -> Any:
    src = ctx.workspace.path(args.get("source"), field="source")
    dst = ctx.workspace.path(args.get("destination"), field="destination")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return {"source": ctx.workspace.relative(src), "destination": ctx.workspace.relative(dst)}


def _fs_move_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    src = ctx.workspace.path(args.get("source"), field="source")
    dst = ctx.workspace.path(args.get("destination"), field="destination")
    if not src.exists() and not dst.exists():
        raise CapabilityError(f"fs.move: {args.get('source')} does not exist")
    return {
        "source": str(src),
        "destination": str(dst),
        "backup": _backup(dst, ctx, "before"),
        "created_dirs": _missing_parents(dst),
    }


def _fs_move_apply(args: dict[str, Any], ctx: Context) -> Any:
    src = ctx.workspace.path(args.get("source"), field="source")
    dst = ctx.workspace.path(args.get("destination"), field="destination")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir() and not dst.is_symlink() and src.exists():
        shutil.rmtree(dst)
    shutil.move(str(src), str(dst))
    return {"source": ctx.workspace.relative(src), "destination": ctx.workspace.relative(dst)}


def _fs_move_undo(rec: dict[str, Any], ctx: Context) -> None:
    src, dst = Path(rec["source"]), Path(rec["destination"])
    if dst.exists() and not src.exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dst), str(src))
    if rec.get("backup"):
        _restore(dst, rec["backup"])
    _remove_dirs(rec.get("created_dirs") or [])


def _fs_mkdir_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = ctx.workspace.path(args.get("path"))
    created = [str(path), *_missing_parents(path)] if not path.exists() else []
    return {"created_dirs": created}


def _fs_mkdir_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.workspace.path(args.get("path"))
    path.mkdir(parents=True, exist_ok=True)
    return {"path": ctx.workspace.relative(path)}


def _fs_mkdir_undo(rec: dict[str, Any], ctx: Context) -> None:
    dirs = rec.get("created_dirs") or []
    if dirs and Path(dirs[0]).exists():
        shutil.rmtree(dirs[0])
    _remove_dirs(dirs[1:])


def _fs_delete_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = ctx.workspace.path(args.get("path"))
    return {"path": str(path), "trash": str(ctx.undo_path("trash", path.name))}


def _fs_delete_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.workspace.path(args.get("path"))
    if not path.exists():
        if args.get("missing_ok"):
            return {"path": ctx.workspace.relative(path), "deleted": False}
        raise CapabilityError(f"fs.delete: {args.get('path')} does not exist")
    trash = ctx.undo_path("trash", path.name)
    if trash.exists():
        shutil.rmtree(trash) if trash.is_dir() else trash.unlink()
    shutil.move(str(path), str(trash))
    return {"path": ctx.workspace.relative(path), "deleted": True}


def _fs_delete_undo(rec: dict[str, Any], ctx: Context) -> None:
    path, trash = Path(rec["path"]), Path(rec["trash"])
    if trash.exists() and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(trash), str(path))


# -- outside world -------------------------------------------------------------------------------
def _http_apply(args: dict[str, Any], ctx: Context) -> Any:
    url = args.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CapabilityError(f"http.request needs an http(s) 'url', got {url!r}")
    method = str(args.get("method", "GET")).upper()
    headers = dict(args.get("headers") or {})
    data = None
    if args.get("json") is not None:
        data = json.dumps(args["json"]).encode()
        headers.setdefault("Content-Type", "application/json")
    elif args.get("body") is not None:
        body = args["body"]
        data = body.encode() if isinstance(body, str) else bytes(body)
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=float(args.get("timeout", 30))) as resp:
            status, text, rheaders = (
                resp.status,
                resp.read().decode("utf-8", "replace"),
                dict(resp.headers),
            )
    except urllib.error.HTTPError as exc:
        status, text, rheaders = exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers)
    except urllib.error.URLError as exc:
        raise CapabilityError(f"http.request {method} {redact(url)}: {exc.reason}") from None
    result: dict[str, Any] = {"status": status, "headers": rheaders, "body": text}
    with contextlib.suppress(ValueError):
        result["json"] = json.loads(text)
    if status >= 400 and not args.get("allow_errors"):
        raise CapabilityError(f"http.request {method} {redact(url)} answered {status}")
    return result


def _shell_apply(args: dict[str, Any], ctx: Context) -> Any:
    command = args.get("command")
    if not command:
        raise CapabilityError("shell.run needs a 'command'")
    cwd = ctx.workspace.path(args.get("cwd", "."), field="cwd")
    proc = subprocess.run(
        command,
        shell=isinstance(command, str),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=float(args["timeout"]) if args.get("timeout") else None,
        env={**os.environ, **{str(k): str(v) for k, v in (args.get("env") or {}).items()}},
    )
    result = {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    if proc.returncode != 0 and not args.get("allow_errors"):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise CapabilityError(f"shell.run exited with {proc.returncode}: {tail[0]}")
    return result


# -- databases -------------------------------------------------------------------------------
_TOUCH = re.compile(
    r"\b(?:insert\s+(?:or\s+\w+\s+)?into|update|delete\s+from|create\s+(?:or\s+replace\s+)?table"
    r"(?:\s+if\s+not\s+exists)?|drop\s+table(?:\s+if\s+exists)?|alter\s+table|truncate(?:\s+table)?"
    r"|replace\s+into)\s+([\"`\[]?[\w.]+[\"`\]]?)",
    re.IGNORECASE,
)


def touched_tables(sql: str) -> list[str]:
    """Tables a statement writes (best effort, from the SQL text)."""
    out: list[str] = []
    for m in _TOUCH.finditer(sql):
        name = m.group(1).strip('"`[]')
        if name.lower() not in out:
            out.append(name.lower())
    return out


def _db_kind(path: Path) -> str:
    if path.suffix in (".sqlite", ".sqlite3", ".db") and path.suffix != ".duckdb":
        return "sqlite"
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(16)
        if head.startswith(b"SQLite format 3"):
            return "sqlite"
    return "duckdb"


def _sql_connect(path: Path) -> Any:
    if _db_kind(path) == "sqlite":
        return sqlite3.connect(path)
    return duckdb.connect(str(path))


def _table_exists(con: Any, kind: str, table: str) -> bool:
    if kind == "sqlite":
        row = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND lower(name)=?", [table]
        ).fetchone()
    else:
        row = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE lower(table_name)=?", [table]
        ).fetchone()
    return bool(row and row[0])


def _sql_exec_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = ctx.workspace.path(args.get("database"), field="database")
    sql = args.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise CapabilityError("sql.exec needs 'sql'")
    kind = _db_kind(path)
    tables = touched_tables(sql)
    limit = int(
        args.get("snapshot_max_rows", os.environ.get("AIRUN_SNAPSHOT_MAX_ROWS", SNAPSHOT_MAX_ROWS))
    )
    snapshots: dict[str, str | None] = {}
    con = _sql_connect(path)
    try:
        for table in tables:
            if not _table_exists(con, kind, table):
                snapshots[table] = None  # created by the statement: undo drops it
                continue
            count = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if count > limit:
                raise CapabilityError(
                    f"sql.exec touches table {table} ({count} rows, more than the {limit}-row "
                    "snapshot limit): declare 'compensate' on the step to undo it yourself"
                )
            dest = ctx.undo_path("tables", f"{table}.json")
            cur = con.execute(f'SELECT * FROM "{table}"')
            cols = [d[0] for d in cur.description]
            rows = [list(r) for r in cur.fetchall()]
            ddl = None
            if kind == "sqlite":
                found = con.execute(
                    "SELECT sql FROM sqlite_master WHERE type='table' AND lower(name)=?", [table]
                ).fetchone()
                ddl = found[0] if found else None
            else:
                found = con.execute(
                    "SELECT sql FROM duckdb_tables() WHERE lower(table_name)=?", [table]
                ).fetchone()
                ddl = found[0] if found else None
            if kind == "sqlite":
                indexes = [
                    r[0]
                    for r in con.execute(
                        "SELECT sql FROM sqlite_master WHERE type='index' AND lower(tbl_name)=? "
                        "AND sql IS NOT NULL",
                        [table],
                    ).fetchall()
                ]
            else:
                indexes = [
                    r[0]
                    for r in con.execute(
                        "SELECT sql FROM duckdb_indexes() WHERE lower(table_name)=? "
                        "AND sql IS NOT NULL",
                        [table],
                    ).fetchall()
                ]
            dest.write_text(
                json.dumps(
                    {"columns": cols, "rows": rows, "ddl": ddl, "indexes": indexes}, default=str
                )
            )
            snapshots[table] = str(dest)
    finally:
        con.close()
    return {"database": str(path), "kind": kind, "snapshots": snapshots}


def _sql_exec_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.workspace.path(args.get("database"), field="database")
    con = _sql_connect(path)
    try:
        cur = con.execute(args["sql"], list(args.get("params") or []))
        rows = None
        if cur.description is not None:
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        if isinstance(con, sqlite3.Connection):
            con.commit()
        return {"rows": rows, "tables": touched_tables(args["sql"])}
    except (duckdb.Error, sqlite3.Error) as exc:
        raise CapabilityError(f"sql.exec: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def _columns(con: Any, table: str) -> list[str] | None:
    try:
        cur = con.execute(f'SELECT * FROM "{table}" LIMIT 0')
    except (duckdb.Error, sqlite3.Error):
        return None
    return [d[0] for d in cur.description]


def _sql_exec_undo(rec: dict[str, Any], ctx: Context) -> None:
    path = Path(rec["database"])

    con = _sql_connect(path)
    try:
        for table, snap in (rec.get("snapshots") or {}).items():
            if snap is None:
                con.execute(f'DROP TABLE IF EXISTS "{table}"')  # the statement created it
                continue
            data = json.loads(Path(snap).read_text())
            if _columns(con, table) == data["columns"]:
                con.execute(f'DELETE FROM "{table}"')  # same shape: keep the table and indexes
            else:
                con.execute(f'DROP TABLE IF EXISTS "{table}"')
                if data.get("ddl"):
                    con.execute(data["ddl"])
                else:
                    cols = ", ".join(f'"{c}" VARCHAR' for c in data["columns"])
                    con.execute(f'CREATE TABLE "{table}" ({cols})')
                for index_sql in data.get("indexes") or []:
                    con.execute(index_sql)
            if data["rows"]:
                marks = ", ".join("?" for _ in data["columns"])
                con.executemany(f'INSERT INTO "{table}" VALUES ({marks})', data["rows"])
        if isinstance(con, sqlite3.Connection):
            con.commit()
    finally:
        con.close()


def _builtin() -> None:
    add = lambda name, apply, risk, prepare=None, undo=None, d="": _REGISTRY.__setitem__(  # noqa: E731
        name, Capability(name, apply, risk, prepare, undo, d)
    )
    add("fs.read", _fs_read_apply, "low", d="read a file inside the workspace")
    add(
        "fs.write",
        _fs_write_apply,
        "medium",
        _fs_write_prepare,
        _fs_write_undo,
        "write a file; undo restores the previous content or removes the new file",
    )
    add(
        "fs.copy",
        _fs_copy_apply,
        "medium",
        _fs_copy_prepare,
        _fs_write_undo,
        "copy a file or folder; undo restores or removes the destination",
    )
    add(
        "fs.move",
        _fs_move_apply,
        "medium",
        _fs_move_prepare,
        _fs_move_undo,
        "move a file or folder; undo moves it back",
    )
    add(
        "fs.mkdir",
        _fs_mkdir_apply,
        "medium",
        _fs_mkdir_prepare,
        _fs_mkdir_undo,
        "make a folder; undo removes what it made",
    )
    add(
        "fs.delete",
        _fs_delete_apply,
        "medium",
        _fs_delete_prepare,
        _fs_delete_undo,
        "move a file or folder to the trash next to the store; undo restores it",
    )
    add("http.request", _http_apply, "high", d="an HTTP request; no undo (give 'compensate')")
    add("shell.run", _shell_apply, "high", d="a shell command; no undo (give 'compensate')")
    add(
        "sql.exec",
        _sql_exec_apply,
        "medium",
        _sql_exec_prepare,
        _sql_exec_undo,
        "a statement against a DuckDB or SQLite file; undo restores the touched tables",
    )


_builtin()


def policy_name(kind: str, body: Any) -> str:
    """The capability name the policy sees for a step."""
    if kind == "capability":
        return canonical(str(body))
    return KIND_CAPABILITY.get(kind, kind)


def risk_of(kind: str, body: Any, declared: str | None) -> str:
    if declared:
        return declared
    if kind == "capability":
        try:
            return get(str(body)).risk
        except CapabilityError:
            return "high"
    return KIND_RISK.get(policy_name(kind, body), "medium")


def summarize(value: Any, limit: int = 200) -> str:
    """A short, JSON-ish description of a result for the audit trail."""
    if isinstance(value, Mapping):
        short = {
            k: (v if not isinstance(v, str) or len(v) < 60 else v[:57] + "...")
            for k, v in value.items()
            if k not in ("headers",)
        }
        text = json.dumps(short, default=str)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
