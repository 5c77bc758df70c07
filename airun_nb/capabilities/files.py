"""File capabilities: fs.read, fs.write, fs.copy, fs.move, fs.mkdir, fs.delete, inside the workspace."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from airun_nb.capabilities.registry import CapabilityError, Context, register


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
    path = ctx.path(args.get("path"), capability="fs.read")
    if args.get("binary"):
        return path.read_bytes()
    return path.read_text(encoding=args.get("encoding", "utf-8"))


def _fs_write_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = ctx.path(args.get("path"), capability="fs.write")
    if "content" not in args:
        raise CapabilityError("fs.write needs 'content'")
    return {
        "path": str(path),
        "backup": _backup(path, ctx, "before"),
        "created_dirs": _missing_parents(path),
    }


def _fs_write_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.path(args.get("path"), capability="fs.write")
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
    src = ctx.path(args.get("source"), field="source", capability="fs.copy")
    dst = ctx.path(args.get("destination"), field="destination", capability="fs.copy")
    if not src.exists():
        raise CapabilityError(f"fs.copy: {args.get('source')} does not exist")
    return {
        "path": str(dst),
        "backup": _backup(dst, ctx, "before"),
        "created_dirs": _missing_parents(dst),
    }


def _fs_copy_apply(args: dict[str, Any], ctx: Context) -> Any:
    src = ctx.path(args.get("source"), field="source", capability="fs.copy")
    dst = ctx.path(args.get("destination"), field="destination", capability="fs.copy")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return {"source": ctx.workspace.relative(src), "destination": ctx.workspace.relative(dst)}


def _fs_move_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    src = ctx.path(args.get("source"), field="source", capability="fs.move")
    dst = ctx.path(args.get("destination"), field="destination", capability="fs.move")
    if not src.exists() and not dst.exists():
        raise CapabilityError(f"fs.move: {args.get('source')} does not exist")
    return {
        "source": str(src),
        "destination": str(dst),
        "backup": _backup(dst, ctx, "before"),
        "created_dirs": _missing_parents(dst),
    }


def _fs_move_apply(args: dict[str, Any], ctx: Context) -> Any:
    src = ctx.path(args.get("source"), field="source", capability="fs.move")
    dst = ctx.path(args.get("destination"), field="destination", capability="fs.move")
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
    path = ctx.path(args.get("path"), capability="fs.mkdir")
    created = [str(path), *_missing_parents(path)] if not path.exists() else []
    return {"created_dirs": created}


def _fs_mkdir_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.path(args.get("path"), capability="fs.mkdir")
    path.mkdir(parents=True, exist_ok=True)
    return {"path": ctx.workspace.relative(path)}


def _fs_mkdir_undo(rec: dict[str, Any], ctx: Context) -> None:
    dirs = rec.get("created_dirs") or []
    if dirs and Path(dirs[0]).exists():
        shutil.rmtree(dirs[0])
    _remove_dirs(dirs[1:])


def _fs_delete_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = ctx.path(args.get("path"), capability="fs.delete")
    return {"path": str(path), "trash": str(ctx.undo_path("trash", path.name))}


def _fs_delete_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = ctx.path(args.get("path"), capability="fs.delete")
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


register(
    "fs.read",
    _fs_read_apply,
    risk="low",
    description="read a file inside the workspace",
    plain=False,
)
register(
    "fs.write",
    _fs_write_apply,
    risk="medium",
    prepare=_fs_write_prepare,
    undo=_fs_write_undo,
    description="write a file; undo restores the previous content or removes the new file",
    plain=False,
)
register(
    "fs.copy",
    _fs_copy_apply,
    risk="medium",
    prepare=_fs_copy_prepare,
    undo=_fs_write_undo,
    description="copy a file or folder; undo restores or removes the destination",
    plain=False,
)
register(
    "fs.move",
    _fs_move_apply,
    risk="medium",
    prepare=_fs_move_prepare,
    undo=_fs_move_undo,
    description="move a file or folder; undo moves it back",
    plain=False,
)
register(
    "fs.mkdir",
    _fs_mkdir_apply,
    risk="medium",
    prepare=_fs_mkdir_prepare,
    undo=_fs_mkdir_undo,
    description="make a folder; undo removes what it made",
    plain=False,
)
register(
    "fs.delete",
    _fs_delete_apply,
    risk="medium",
    prepare=_fs_delete_prepare,
    undo=_fs_delete_undo,
    description="move a file or folder to the trash next to the store; undo restores it",
    plain=False,
)
