"""Running ``airun`` on seed-dialect files in a fresh workspace, as a migrating team would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from support import AIRUN, ENV_VARS


def env(**extra: str) -> dict[str, str]:
    """The process environment without the host's airun settings, acting as ``tester``."""
    out = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "AIRUN_DB"}
    out.pop("AI_FIRST_APPROVAL_WEBHOOK", None)
    out.update({"AIRUN_IDENTITY": "env", "AIRUN_USER": "tester", **extra})
    return out


def airun(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``airun ARGS`` in ``cwd`` (its store is ``cwd/airun.duckdb``)."""
    return subprocess.run(
        [*AIRUN, *args], cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=180
    )


def last_json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON record ``airun exec --json`` printed last."""
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value
