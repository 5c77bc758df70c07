"""Runtime settings from a file: roles, approval policy decisions and (later) the policy file.

Looked up in order: the file named by ``AIRUN_CONFIG``; ``airun.yaml`` in the working directory;
the ``[tool.airun_nb]`` table of the nearest ``pyproject.toml`` (working directory or a parent).
A workflow never supplies its own settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from . import yamlsafe
from .errors import AirunError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = None


class SettingsError(AirunError):
    """The settings file cannot be read."""


def _load_file(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".toml":
            if tomllib is None:  # pragma: no cover
                return {}
            data = tomllib.loads(path.read_text())
            if path.name == "pyproject.toml":
                data = data.get("tool", {}).get("airun_nb", {})
        else:
            data = yamlsafe.load(path.read_text(), where=f"settings file {path}") or {}
    except yamlsafe.YamlLimitError as exc:
        raise SettingsError(exc.message) from None
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except (yaml.YAMLError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise SettingsError(f"cannot read settings file {path}: {first}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping")
    return data


def settings_path() -> Path | None:
    env = os.environ.get("AIRUN_CONFIG")
    if env:
        return Path(env).expanduser()
    cwd = Path.cwd()
    if (cwd / "airun.yaml").exists():
        return cwd / "airun.yaml"
    for folder in (cwd, *cwd.parents):
        candidate = folder / "pyproject.toml"
        if candidate.exists():
            try:
                has = "[tool.airun_nb" in candidate.read_text()
            except OSError:
                has = False
            return candidate if has else None
    return None


def load() -> dict[str, Any]:
    """The settings in force now (read afresh each time: files may change between runs)."""
    path = settings_path()
    return _load_file(path) if path is not None else {}


def roles() -> dict[str, list[str]]:
    """``roles: {lead: [alice, bob]}`` from the settings (and, later, the policy file)."""
    raw = load().get("roles") or {}
    if not isinstance(raw, dict):
        raise SettingsError("'roles' in the settings must map role names to lists of users")
    return {str(k): [str(u) for u in (v or [])] for k, v in raw.items()}
