"""Runtime settings: one typed object built from the environment and ``%config``.

Every ``AIRUN_*`` variable is read here and nowhere else; a module asks :func:`current` for the
:class:`Settings` in force. ``%config Workflow.db = ...`` (and the other per-kernel settings)
are overrides held in this process (:func:`configure`), never written into ``os.environ``: a
kernel's setting does not leak into the processes it starts. The settings file (``airun.yaml``,
:mod:`airun_nb.settings.file`) is trusted configuration read beside it.

:func:`current` is cheap: the object is rebuilt only when one of the variables or overrides it
was built from changed, so a test or a user changing ``AIRUN_USER`` sees the change at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DB_NAME = "airun.duckdb"

# Each setting: its variable. Values are strings as the environment has them; the properties
# of Settings give them their types and defaults.
VARIABLES = {
    "db": "AIRUN_DB",
    "user": "AIRUN_USER",
    "identity": "AIRUN_IDENTITY",
    "lock_timeout": "AIRUN_LOCK_TIMEOUT",
    "sync": "AIRUN_SYNC",
    "policy": "AIRUN_POLICY",
    "config": "AIRUN_CONFIG",
    "dotenv": "AIRUN_DOTENV",
    "workspace": "AIRUN_WORKSPACE",
    "approval": "AIRUN_APPROVAL",
    "approval_mode": "AIRUN_APPROVAL_MODE",
    "service_secret": "AIRUN_SERVICE_SECRET",
    "service_url": "AIRUN_SERVICE_URL",
    "dask_scheduler": "AIRUN_DASK_SCHEDULER",
    "snapshot_max_rows": "AIRUN_SNAPSHOT_MAX_ROWS",
    "secrets": "AIRUN_SECRETS",
}
_OVERRIDES: dict[str, str | None] = {}  # %config: name -> value (None: not overridden)
# The settings file's ``db:`` (set by :mod:`airun_nb.settings.file` as it is imported, so that
# this module, which the file's reader uses, does not import it back).
_db_from_file: Callable[[], str | None] | None = None


def read_db_from(reader: Callable[[], str | None]) -> None:
    """Where :attr:`Settings.db` finds the settings file's ``db:``."""
    global _db_from_file
    _db_from_file = reader


@dataclass(frozen=True)
class Settings:
    """The settings in force, as strings from the environment or ``%config`` (``None``: unset),
    with typed views."""

    db_value: str | None = None
    user: str | None = None
    identity: str | None = None
    lock_timeout_value: str | None = None
    sync: str | None = None
    policy: str | None = None
    config: str | None = None
    dotenv: str | None = None
    workspace: str | None = None
    approval: str | None = None
    approval_mode: str | None = None
    service_secret: str | None = None
    service_url: str | None = None
    dask_scheduler: str | None = None
    snapshot_max_rows: str | None = None
    secrets: str | None = None

    @property
    def db(self) -> Path | StoreURL:
        """The store: ``AIRUN_DB`` (or ``%config Workflow.db``) if set, else
        ``db:`` in the settings file, else ``airun.duckdb`` in the working directory (a
        kernel's is the notebook's folder). A ``postgresql://`` URL names a team store on a
        PostgreSQL server."""
        if self.db_value:
            return resolve_db(self.db_value)
        found = _db_from_file() if _db_from_file is not None else None
        return resolve_db(found) if found else Path.cwd() / DEFAULT_DB_NAME

    @property
    def lock_timeout(self) -> float:
        """Seconds to wait for a busy store before giving up with a clear message."""
        try:
            return float(self.lock_timeout_value or "30")
        except ValueError:
            return 30.0

    @property
    def sync_mode(self) -> str:
        """How the journal reaches the disk: ``group`` (the default, ``AIRUN_SYNC=group``: an
        fsync at most every 50 ms while records arrive and when the writer pauses), ``off``
        (``AIRUN_SYNC=0``: survives a killed process; on power loss it keeps what the OS wrote)
        or ``always`` (``AIRUN_SYNC=1``: an fsync per write). In every mode a run's end is
        fsynced. See docs/durability.md for what each may lose, measured."""
        value = (self.sync or "").strip().lower()
        if value in ("", "group"):
            return "group"
        if value in ("0", "false", "no", "off"):
            return "off"
        return "always"


_cache: tuple[tuple[Any, ...], Settings] | None = None


def current() -> Settings:
    """The settings in force now."""
    global _cache
    key = tuple(_value(name, var) for name, var in VARIABLES.items())
    if _cache is not None and _cache[0] == key:
        return _cache[1]
    made = Settings(
        db_value=key[0],
        user=key[1],
        identity=key[2],
        lock_timeout_value=key[3],
        sync=key[4],
        policy=key[5],
        config=key[6],
        dotenv=key[7],
        workspace=key[8],
        approval=key[9],
        approval_mode=key[10],
        service_secret=key[11],
        service_url=key[12],
        dask_scheduler=key[13],
        snapshot_max_rows=key[14],
        secrets=key[15],
    )
    _cache = (key, made)
    return made


def _value(name: str, var: str) -> str | None:
    if name in _OVERRIDES and _OVERRIDES[name] is not None:
        return _OVERRIDES[name]
    return os.environ.get(var) or None


def configure(**overrides: str | None) -> None:
    """Per-process overrides (``%config Workflow.db = ...``); ``None`` removes one."""
    for name, value in overrides.items():
        if name not in VARIABLES:
            raise KeyError(name)
        if value is None:
            _OVERRIDES.pop(name, None)
        else:
            _OVERRIDES[name] = value


def seed_approval_webhook() -> str | None:
    """``AI_FIRST_APPROVAL_WEBHOOK``: where the seed runtime POSTed every approval request; a
    seed-dialect gate without a ``notify:`` of its own is announced there too."""
    value = os.environ.get("AI_FIRST_APPROVAL_WEBHOOK", "").strip()
    return value or None


def default_db() -> Path | StoreURL:
    """The store in force (see :attr:`Settings.db`)."""
    return current().db


URL_SCHEMES = ("postgresql://", "postgres://")


class StoreURL(str):
    """A team store's address: a ``postgresql://`` URL with its password left out.

    The password of a URL is never kept in this value (it is shown as ``***``): it is handed to
    the server once, when the store is opened, and a URL seen again names the same open store.
    The full URL given by the user is kept in :attr:`given` for that one connection only."""

    given: str

    def __new__(cls, url: str) -> StoreURL:
        made = super().__new__(cls, redact_url(url))
        made.given = url
        return made

    @property
    def name(self) -> str:
        """The database's name (what a file's name is for a path)."""
        from urllib.parse import urlsplit

        return urlsplit(str(self)).path.lstrip("/") or "postgres"


def is_url(db: object) -> bool:
    """Does ``db`` name a team store on a server (a ``postgresql://`` URL)?"""
    return isinstance(db, str) and db.strip().lower().startswith(URL_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` with the password replaced by ``***`` (``postgresql://bob:***@host/db``)."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" not in netloc:
        return url
    userinfo, _, hostport = netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{head}://{user}:***@{hostport}{slash}{tail}"


def resolve_db(db: str | os.PathLike[str] | None) -> Path | StoreURL:
    """The store ``db`` names: a :class:`StoreURL` for a ``postgresql://`` URL, else the path
    of a DuckDB file (``None``: the store in force)."""
    if db is None:
        return default_db()
    if isinstance(db, StoreURL):
        return db
    if is_url(db):
        return StoreURL(str(db).strip())
    return Path(db).expanduser()


def resolve_db_path(db: str | os.PathLike[str] | None) -> Path:
    """The DuckDB file ``db`` names (for what only a file has: its folder, its side files)."""
    found = resolve_db(db)
    if isinstance(found, StoreURL):
        raise ValueError(f"{found} is a server store, not a file")
    return found


def lock_timeout() -> float:
    return current().lock_timeout


def sync_journal() -> bool:
    """``AIRUN_SYNC=1`` fsyncs every journal record (survives power loss, not just a crash)."""
    return sync_mode() == "always"


def sync_mode() -> str:
    return current().sync_mode


def config_dir() -> Path:
    """The user's own folder for what must live outside every workspace and store (the signing
    key, the service's secret): ``AIRUN_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/airun_nb``, else
    ``~/.config/airun_nb``. Made on first use, readable by its owner only."""
    env = os.environ.get("AIRUN_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "airun_nb"


def key_file() -> Path:
    """The file holding the key that signs stored code and pickled outputs: ``AIRUN_KEY_FILE``,
    else ``key`` in :func:`config_dir`."""
    env = os.environ.get("AIRUN_KEY_FILE")
    return Path(env).expanduser() if env else config_dir() / "key"


def trust_stored_code() -> bool:
    """``AIRUN_TRUST_STORED_CODE=1``: a resume in this process may load code a notebook stored
    (``airun resume --trust-stored-code`` sets it for one command)."""
    return os.environ.get("AIRUN_TRUST_STORED_CODE", "").strip().lower() in ("1", "true", "yes")
