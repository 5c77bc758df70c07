"""Runtime configuration: where the store lives, who the user is, how long to wait for a lock.

Values come from keyword arguments first, then environment variables (``AIRUN_DB``,
``AIRUN_USER``, ``AIRUN_LOCK_TIMEOUT``, ``AIRUN_SYNC``), then defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from airun_nb.governance import identity

DEFAULT_DB_NAME = "airun.duckdb"


def default_db() -> Path:
    """The store path: ``AIRUN_DB`` if set, else ``airun.duckdb`` in the working directory.

    A kernel's working directory is the notebook's folder, so by default the store sits next to
    the notebook.
    """
    env = os.environ.get("AIRUN_DB")
    return Path(env).expanduser() if env else Path.cwd() / DEFAULT_DB_NAME


def resolve_db(db: str | os.PathLike[str] | None) -> Path:
    return Path(db).expanduser() if db is not None else default_db()


def current_user() -> str:
    """The acting user, as the identity mode resolves it (:mod:`airun_nb.governance.identity`): the OS
    login by default, ``AIRUN_USER`` in ``env`` mode, ``JUPYTERHUB_USER`` in ``jupyterhub``."""
    return identity.current()


def lock_timeout() -> float:
    """Seconds to wait for a busy store before giving up with a clear message."""
    try:
        return float(os.environ.get("AIRUN_LOCK_TIMEOUT", "30"))
    except ValueError:
        return 30.0


def sync_journal() -> bool:
    """``AIRUN_SYNC=1`` fsyncs every journal record (survives power loss, not just a crash)."""
    return sync_mode() == "always"


def sync_mode() -> str:
    """How the journal reaches the disk: ``off`` (default: survives a killed process),
    ``group`` (``AIRUN_SYNC=group``: an fsync at most every 50 ms and when the holder pauses)
    or ``always`` (``AIRUN_SYNC=1``: an fsync per write)."""
    value = os.environ.get("AIRUN_SYNC", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return "off"
    return "group" if value == "group" else "always"


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
