"""The seed runtime's file ids: io.fs.hash_file, list_dir, exists and write_bytes.

Inputs and output keys are the old ones (``checksum_sha256``, ``entries``, ``exists``,
``bytes_written``...), plus ``success: true``, so a seed workflow's ``{{step.key}}`` and flat
``{{key}}`` lookups work. Paths stay inside the workspace; ``write_bytes`` restores the previous
bytes (or removes the new file and the folders it created) when undone. A failure fails the step
(the old runtime returned ``success: false`` and carried on).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any

from airun_nb.capabilities import confine
from airun_nb.capabilities.files import _backup, _missing_parents, _remove_dirs, _restore
from airun_nb.capabilities.registry import CapabilityError, Context, register


def _path(args: dict[str, Any], ctx: Context, cap: str) -> Path:
    value = args.get("path", args.get("file_path"))
    return ctx.path(value, capability=cap)


def _hash_file(args: dict[str, Any], ctx: Context) -> Any:
    path = _path(args, ctx, "io.fs.hash_file")
    if not path.is_file():
        raise CapabilityError(f"io.fs.hash_file: no file {ctx.workspace.relative(path)}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"checksum_sha256": digest.hexdigest(), "success": True}


def _entry(path: Path, ctx: Context) -> dict[str, Any]:
    is_file = path.is_file()
    return {
        "name": path.name,
        "path": ctx.workspace.relative(path),
        "is_dir": path.is_dir(),
        "size": path.stat().st_size if is_file else 0,
    }


def _listable(path: Path, ctx: Context) -> bool:
    """Not one of the runtime's own files (the store and its journal, locks, undo records)."""
    real = path.resolve()
    why = confine.protection(real, store_path=ctx.store_path, workspace_root=None)
    return why is None and not any(
        confine.protection(p, store_path=ctx.store_path, workspace_root=None)
        for p in real.parents
        if p != ctx.workspace.root and ctx.workspace.root in p.parents
    )


def _list_dir(args: dict[str, Any], ctx: Context) -> Any:
    value = args.get("path", args.get("file_path"))
    root = ctx.workspace.path(value, field="path")
    if root != ctx.workspace.root:  # listing the workspace itself ("."), read-only, is fine
        root = _path(args, ctx, "io.fs.list_dir")
    if not root.is_dir():
        raise CapabilityError(f"io.fs.list_dir: no folder {ctx.workspace.relative(root)}")
    hidden = bool(args.get("include_hidden", False))
    found = root.rglob("*") if args.get("recursive") else root.iterdir()
    entries = [
        _entry(p, ctx)
        for p in sorted(found)
        if (hidden or not any(part.startswith(".") for part in p.relative_to(root).parts))
        and _listable(p, ctx)
    ]
    return {"entries": entries, "count": len(entries), "success": True}


def _exists(args: dict[str, Any], ctx: Context) -> Any:
    path = _path(args, ctx, "io.fs.exists")
    return {
        "exists": path.exists(),
        "is_file": path.is_file(),
        "is_dir": path.is_dir(),
        "success": True,
    }


def _decode(args: dict[str, Any]) -> bytes:
    if "content_base64" not in args:
        raise CapabilityError("io.fs.write_bytes needs 'content_base64'")
    try:
        return base64.b64decode(str(args["content_base64"]), validate=True)
    except (binascii.Error, ValueError):
        raise CapabilityError("io.fs.write_bytes: 'content_base64' is not base64") from None


def _write_bytes_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    path = _path(args, ctx, "io.fs.write_bytes")
    _decode(args)
    if path.exists() and not args.get("overwrite", False):
        raise CapabilityError(
            f"io.fs.write_bytes: {ctx.workspace.relative(path)} exists (give overwrite: true)"
        )
    missing = _missing_parents(path)
    if missing and not args.get("create_dirs", False):
        raise CapabilityError(
            f"io.fs.write_bytes: no folder {ctx.workspace.relative(path.parent)} "
            "(give create_dirs: true)"
        )
    return {"path": str(path), "backup": _backup(path, ctx, "before"), "created_dirs": missing}


def _write_bytes_apply(args: dict[str, Any], ctx: Context) -> Any:
    path = _path(args, ctx, "io.fs.write_bytes")
    data = _decode(args)
    if args.get("create_dirs", False):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {
        "file_path": ctx.workspace.relative(path),
        "bytes_written": len(data),
        "checksum": hashlib.sha256(data).hexdigest(),
        "success": True,
    }


def _write_bytes_undo(rec: dict[str, Any], ctx: Context) -> None:
    _restore(Path(rec["path"]), rec.get("backup"))
    _remove_dirs(rec.get("created_dirs") or [])


register("io.fs.hash_file", _hash_file, risk="low", description="SHA-256 of a file", plain=False)
register("io.fs.list_dir", _list_dir, risk="low", description="a folder's entries", plain=False)
register("io.fs.exists", _exists, risk="low", description="whether a path exists", plain=False)
register(
    "io.fs.write_bytes",
    _write_bytes_apply,
    risk="medium",
    prepare=_write_bytes_prepare,
    undo=_write_bytes_undo,
    description="write base64 content as bytes; undo restores the previous bytes",
    plain=False,
)
