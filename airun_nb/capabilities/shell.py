"""The shell.run capability."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from airun_nb.capabilities.registry import CapabilityError, Context, register
from airun_nb.store.redaction import redact_text


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
        raise CapabilityError(f"shell.run exited with {proc.returncode}: {redact_text(tail[0])}")
    return result


register(
    "shell.run",
    _shell_apply,
    risk="high",
    description="a shell command; no undo (give 'compensate')",
    plain=False,
)
