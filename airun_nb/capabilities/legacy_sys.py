"""The seed runtime's system ids: sys.info.get_time / get_os / get_env_var, sys.exec.run and
sys.archive.zip, with the old inputs and output keys.

``get_env_var`` reads only the names in :data:`ENV_ALLOWLIST` and ``exec.run`` runs only the
programs in :data:`EXEC_ALLOWLIST` (no shell, in the workspace); add to either set from Python to
widen it. ``archive.zip`` removes an archive it created, and restores one it overwrote, when
undone. ``workflow.marker`` does nothing: the translated seed dialect hangs its
``global_compensation_steps`` on it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airun_nb.capabilities.files import _backup, _restore
from airun_nb.capabilities.registry import (
    CapabilityError,
    CapabilityRefused,
    Context,
    register,
)

ENV_ALLOWLIST = {
    *("PATH", "HOME", "USER", "LANG", "LC_ALL", "SHELL", "TERM", "PWD", "EDITOR"),
    *("PYTHON_VERSION", "NODE_VERSION"),
}
EXEC_ALLOWLIST = {
    *("ls", "cat", "echo", "pwd", "whoami", "git", "python", "python3", "node", "npm"),
    *("grep", "find", "wc", "head", "tail"),
}


def _get_time(args: dict[str, Any], ctx: Context) -> Any:
    zone = str(args.get("timezone", "utc"))
    fmt = str(args.get("format", "iso8601"))
    now = datetime.now(timezone.utc) if zone.lower() == "utc" else datetime.now().astimezone()
    if fmt.lower() in ("iso8601", "iso"):
        stamp: Any = now.isoformat()
    elif fmt.lower() in ("unix", "epoch", "timestamp"):
        stamp = str(int(now.timestamp()))
    else:
        try:
            stamp = now.strftime(fmt)
        except ValueError:
            raise CapabilityError(f"sys.info.get_time: bad format {fmt!r}") from None
    return {"timestamp": stamp, "timezone": zone, "success": True}


def _get_os(args: dict[str, Any], ctx: Context) -> Any:
    names = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}
    out: dict[str, Any] = {
        "os_name": names.get(platform.system(), "other"),
        "version": platform.release(),
        "architecture": platform.machine(),
        "success": True,
    }
    if args.get("verbose"):
        out["python_version"] = platform.python_version()
        out["hostname"] = platform.node()
    return out


def _get_env_var(args: dict[str, Any], ctx: Context) -> Any:
    name = str(args.get("var_name", ""))
    if name not in ENV_ALLOWLIST:
        raise CapabilityRefused(
            f"sys.info.get_env_var: '{name}' is not in the allowlist "
            "(airun_nb.capabilities.legacy_sys.ENV_ALLOWLIST)"
        )
    value = os.environ.get(name)
    default = args.get("default_value")
    return {
        "value": value if value is not None else ("" if default is None else str(default)),
        "found": value is not None,
        "success": True,
    }


def _exec_run(args: dict[str, Any], ctx: Context) -> Any:
    command = str(args.get("command", ""))
    if Path(command).name != command or command not in EXEC_ALLOWLIST:
        raise CapabilityRefused(
            f"sys.exec.run: '{command}' is not in the allowlist "
            "(airun_nb.capabilities.legacy_sys.EXEC_ALLOWLIST)"
        )
    extra = args.get("args") or []
    if not isinstance(extra, list):
        raise CapabilityError("sys.exec.run: 'args' must be a list")
    timeout = float(args.get("timeout", 30))
    try:
        proc = subprocess.run(
            [command, *map(str, extra)],
            cwd=ctx.workspace.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        err = CapabilityError(f"sys.exec.run: {command} timed out after {timeout:g} s")
        err.exit_kind = "timeout"
        raise err from None
    except OSError as exc:
        raise CapabilityError(f"sys.exec.run: cannot run {command}: {exc.strerror}") from None
    out = {
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "exit_code": proc.returncode,
        "success": proc.returncode == 0,
    }
    if proc.returncode != 0 and not args.get("allow_errors"):
        raise CapabilityError(f"sys.exec.run: {command} exited with {proc.returncode}")
    return out


def _zip_sources(args: dict[str, Any], ctx: Context) -> list[Path]:
    sources = args.get("source_paths")
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not sources:
        raise CapabilityError("sys.archive.zip needs 'source_paths' (a list)")
    return [ctx.path(s, field="source_paths", capability="sys.archive.zip") for s in sources]


def _zip_prepare(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    out = ctx.path(args.get("output_path"), field="output_path", capability="sys.archive.zip")
    for src in _zip_sources(args, ctx):
        if not src.exists():
            raise CapabilityError(f"sys.archive.zip: no {ctx.workspace.relative(src)}")
    return {"path": str(out), "backup": _backup(out, ctx, "before")}


def _zip_apply(args: dict[str, Any], ctx: Context) -> Any:
    out = ctx.path(args.get("output_path"), field="output_path", capability="sys.archive.zip")
    level = int(args.get("compression_level", 6))
    recursive = bool(args.get("recursive", True))
    count = 0
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for src in _zip_sources(args, ctx):
            if src.is_file():
                zf.write(src, src.name)
                count += 1
            elif src.is_dir() and recursive:
                for f in sorted(src.rglob("*")):
                    if f.is_file() and f.resolve() != out.resolve():
                        zf.write(f, f.relative_to(src.parent))
                        count += 1
    os.replace(tmp, out)
    return {
        "archive_path": ctx.workspace.relative(out),
        "file_count": count,
        "compressed_size": out.stat().st_size,
        "success": True,
    }


def _zip_undo(rec: dict[str, Any], ctx: Context) -> None:
    _restore(Path(rec["path"]), rec.get("backup"))


register("sys.info.get_time", _get_time, risk="low", description="the time now", plain=False)
register("sys.info.get_os", _get_os, risk="low", description="the operating system", plain=False)
register(
    "sys.info.get_env_var",
    _get_env_var,
    risk="low",
    description="an allowlisted environment variable",
    plain=False,
)
register(
    "sys.exec.run",
    _exec_run,
    risk="high",
    description="an allowlisted program, no shell; no undo (give 'compensate')",
    plain=False,
    acts_as="shell.run",  # it runs programs (python3, find -delete...): what shell.run does
)
register(
    "sys.archive.zip",
    _zip_apply,
    risk="medium",
    prepare=_zip_prepare,
    undo=_zip_undo,
    description="a zip archive; undo removes it or restores the one it replaced",
    plain=False,
)
register(
    "workflow.marker",
    lambda args, ctx: {"success": True},
    risk="low",
    description="does nothing (carries global compensation steps)",
    plain=False,
)
