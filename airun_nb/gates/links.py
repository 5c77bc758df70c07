"""Signed links to a gate's page, for notifications.

The service keeps a settings file per store in the user's config folder
(``~/.config/airun_nb/service/<hash of the store's real path>.json``, readable by its owner
only), never beside the store: a workflow can write files in its workspace, so a file there
could be planted (an attacker's address for the links, a secret the attacker knows). It holds
a random secret and the address the service serves on. A gate's notification carries a
link to the gate's page signed with that secret; the link expires at the gate's deadline (or a
week after it was made, for a gate without one). The link only finds the gate: the person who
opens it still logs in with a token.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.settings import environment as config
from airun_nb.settings.environment import current as settings_now

NO_DEADLINE_TTL = 7 * 24 * 3600.0
_SALT = "airun-gate-link"


class LinkError(AirunError):
    """A gate link is tampered with, or expired."""


def settings_file(db: str | os.PathLike[str] | None = None) -> Path:
    """Where the service's secret and address for the store ``db`` are kept."""
    where = config.resolve_db(db)
    real = str(where) if isinstance(where, config.StoreURL) else os.path.realpath(where)
    digest = hashlib.sha256(real.encode()).hexdigest()[:24]
    return config.config_dir() / "service" / f"{digest}.json"


def load_settings(db: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    path = settings_file(db)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def ensure_settings(db: str | os.PathLike[str] | None, url: str) -> dict[str, Any]:
    """The service's settings, with a secret made on first use and the serving address."""
    data = load_settings(db)
    data.setdefault("secret", secrets.token_urlsafe(32))
    data["url"] = url.rstrip("/")
    path = settings_file(db)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
    return data


def _secret(data: dict[str, Any]) -> str | None:
    return settings_now().service_secret or data.get("secret")


def sign(secret: str, run_id: str, gate_id: str, deadline: float | None) -> str:
    from itsdangerous import URLSafeSerializer

    expires = deadline if deadline is not None else time.time() + NO_DEADLINE_TTL
    return str(URLSafeSerializer(secret, salt=_SALT).dumps([run_id, gate_id, round(expires, 3)]))


def verify(secret: str, signed: str, *, now: float | None = None) -> tuple[str, str]:
    """(run id, gate id) of a signed link; :class:`LinkError` if tampered with or expired."""
    from itsdangerous import BadSignature, URLSafeSerializer

    try:
        run_id, gate_id, expires = URLSafeSerializer(secret, salt=_SALT).loads(signed)
    except (BadSignature, ValueError, TypeError):
        raise LinkError(
            "this approval link is not valid (altered or from another server)"
        ) from None
    if (now if now is not None else time.time()) >= float(expires):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(expires)))
        raise LinkError(f"this approval link expired at {stamp}")
    return str(run_id), str(gate_id)


def approval_link(
    run_id: str,
    gate_id: str,
    deadline: float | datetime | None,
    *,
    db: str | os.PathLike[str] | None = None,
) -> str | None:
    """A signed link to the gate's page, or None when no service was set up for this store.

    The address is ``AIRUN_SERVICE_URL`` if set, else the one ``airun serve`` recorded.
    """
    data = load_settings(db)
    secret = _secret(data)
    base = settings_now().service_url or data.get("url")
    if not secret or not base:
        return None
    if isinstance(deadline, datetime):  # the store's naive UTC timestamps
        deadline = deadline.replace(tzinfo=timezone.utc).timestamp()
    return f"{str(base).rstrip('/')}/link/{sign(secret, run_id, gate_id, deadline)}"
