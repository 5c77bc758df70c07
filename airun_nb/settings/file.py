"""Runtime settings from a file: roles, approval policy decisions and (later) the policy file.

Looked up in order: the file named by ``AIRUN_CONFIG``; ``airun.yaml`` in the working directory;
the ``[tool.airun_nb]`` table of the nearest ``pyproject.toml`` (working directory or a parent).
A workflow never supplies its own settings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.settings.environment import current, read_db_from

# yaml, yamlsafe and tomllib are imported when a settings file is read: a terminal command that
# finds none (most do) does not pay for them.


class SettingsError(AirunError):
    """The settings file cannot be read."""


def _load_file(path: Path) -> dict[str, Any]:
    import yaml

    from airun_nb.yamlreader import safe as yamlsafe

    try:
        if path.suffix == ".toml":
            try:  # Python 3.11+
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
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
    from airun_nb.settings.environment import current

    env = current().config
    if env:
        return Path(env).expanduser()
    cwd = Path.cwd()
    if (cwd / "airun.yaml").exists():
        return cwd / "airun.yaml"
    for folder in (cwd, *cwd.parents):
        candidate = folder / "pyproject.toml"
        if candidate.exists():
            has = _by_content("mentions", candidate, partial(_mentions_us, candidate))
            return candidate if has else None
    return None


def load() -> dict[str, Any]:
    """The settings in force now (a file is read again whenever it changes)."""
    path = settings_path()
    if path is None:
        return {}
    return copy.deepcopy(_by_content("settings", path, lambda: _load_file(path)))


def _mentions_us(candidate: Path) -> bool:
    try:
        return "[tool.airun_nb" in candidate.read_text()
    except OSError:
        return False


# (what, path) -> (bytes, value): a file is read every time, but parsed again only when it changed.
_READ: dict[tuple[str, Path], tuple[bytes, Any]] = {}


def _by_content(what: str, path: Path, compute: Callable[[], Any]) -> Any:
    try:
        data = path.read_bytes()
    except OSError:
        return compute()  # missing or unreadable: compute says what that means
    hit = _READ.get((what, path))
    if hit is not None and hit[0] == data:
        return hit[1]
    value = compute()
    _READ[(what, path)] = (data, value)
    return value


def roles() -> dict[str, list[str]]:
    """``roles: {lead: [alice, bob]}`` from the settings (and, later, the policy file)."""
    raw = load().get("roles") or {}
    if not isinstance(raw, dict):
        raise SettingsError("'roles' in the settings must map role names to lists of users")
    return {str(k): [str(u) for u in (v or [])] for k, v in raw.items()}


def store_location() -> str | None:
    """``db:`` in the settings: the store (a DuckDB file's path, or a team store's
    ``postgresql://`` URL) when neither ``AIRUN_DB`` nor ``%config Workflow.db`` names one."""
    raw = load().get("db")
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise SettingsError("'db' in the settings must be a store path or a postgresql:// URL")
    return raw.strip()


read_db_from(store_location)

AGENT_SERVER_KEYS = (
    "principal",
    "runs_per_minute",
    "max_result_chars",
    "query_seconds",
    "max_rows",
)


def agent_server() -> dict[str, Any]:
    """The ``mcp:`` section (``airun mcp``): the principal the server acts as and its limits."""
    raw = load().get("mcp") or {}
    if not isinstance(raw, dict):
        raise SettingsError("'mcp' in the settings must be a mapping (principal, limits)")
    unknown = sorted(set(map(str, raw)) - set(AGENT_SERVER_KEYS))
    if unknown:
        raise SettingsError(
            f"mcp.{unknown[0]} in the settings is not known (keys: {', '.join(AGENT_SERVER_KEYS)})"
        )
    for key in AGENT_SERVER_KEYS[1:]:
        value = raw.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise SettingsError(f"mcp.{key} in the settings must be a positive number")
    if raw.get("principal") is not None and not str(raw["principal"]).strip():
        raise SettingsError("mcp.principal in the settings is empty")
    return dict(raw)


def declared_secrets() -> list[str]:
    """The only names ``{{ secrets.NAME }}`` may read: ``secrets: [API_TOKEN, ...]`` in the
    settings, and ``AIRUN_SECRETS`` (names separated by commas)."""
    raw = load().get("secrets") or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise SettingsError("'secrets' in the settings must be a list of names")
    env = [n.strip() for n in (current().secrets or "").split(",") if n.strip()]
    return [str(name) for name in raw] + env


def key_file() -> Path:
    """The signing key's file: ``key_file:`` in the settings, else ``AIRUN_KEY_FILE``, else
    ``key`` in the user's config folder (:func:`airun_nb.settings.environment.config_dir`)."""
    from airun_nb.settings import environment

    conf = load().get("key_file")
    if isinstance(conf, str) and conf:
        return Path(conf).expanduser()
    return environment.key_file()


def trust_stored_code() -> bool:
    """``trust_stored_code: true`` in the settings, or ``AIRUN_TRUST_STORED_CODE=1``."""
    from airun_nb.settings import environment

    return load().get("trust_stored_code") is True or environment.trust_stored_code()


def policy_files() -> list[Path]:
    """The policy files in force or configured (trusted files: no workflow may reach them):
    ``%config Workflow.policy`` or ``AIRUN_POLICY``, and ``policy:`` in the settings."""
    override = current().policy
    out = [Path(override).expanduser()] if override else []
    try:
        conf = load().get("policy")
    except SettingsError:
        conf = None
    if isinstance(conf, str):
        base = settings_path()
        p = Path(conf).expanduser()
        out.append(base.parent / p if base is not None and not p.is_absolute() else p)
    return out


def dotenv_path() -> Path:
    """The secrets file: ``AIRUN_DOTENV``, else ``.env`` in the working directory."""
    return Path(current().dotenv or ".env").expanduser()


def candidate_paths() -> list[Path]:
    """Every file that is, or would become, the settings file when written: ``AIRUN_CONFIG``,
    ``airun.yaml`` in the working directory and ``pyproject.toml`` there and in each parent."""
    cwd = Path.cwd()
    out = [cwd / "airun.yaml", *(folder / "pyproject.toml" for folder in (cwd, *cwd.parents))]
    env = current().config
    if env:
        out.insert(0, Path(env).expanduser())
    return out


def service_hosts() -> list[str]:
    """``service_hosts: [approvals.example.com]``: further names the service answers to (its
    ``--public-url``'s host and the loopback names always)."""
    raw = load().get("service_hosts") or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise SettingsError("'service_hosts' in the settings must be a list of host names")
    return [str(h) for h in raw]


def jupyter_url() -> str | None:
    """``jupyter_url: http://127.0.0.1:8888``: the Jupyter server the service's pages link a
    run's notebook to (``/lab/tree/<path>``); unset: the notebook's path is shown, not linked."""
    raw = load().get("jupyter_url")
    if raw is None:
        return None
    if not (isinstance(raw, str) and raw.startswith(("http://", "https://"))):
        raise SettingsError("'jupyter_url' in the settings must be an http(s):// address")
    return raw.rstrip("/")
